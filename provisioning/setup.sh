#!/usr/bin/env bash
# Sets up a fresh machine for the appliance: system packages, a dedicated virtual environment
# (.venv in the checkout), the appliance with its Cython extension, and with --test everything
# the test suite needs (time-series servers, Modbus tools, the node-opcua client).
# Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

apt_pkgs=(socat)
# the Cython extensions: a C compiler, and g++ with libstdc++ 11+ (std::to_chars of doubles in the line-protocol encoder)
command -v g++ >/dev/null 2>&1 || apt_pkgs+=(g++)
[ $want_test = 1 ] && apt_pkgs+=(mbpoll victoria-metrics influxdb chromium chromium-driver)  # chromium: status page test
[ $want_test = 1 ] && apt_pkgs+=(mosquitto)  # the MQTT tests start their own broker (a child process)
[ $want_test = 1 ] && apt_pkgs+=(tmux)  # the live status table is tested in a real terminal
command -v node >/dev/null 2>&1 || apt_pkgs+=(nodejs npm)
# systemd-analyze checks the service unit in the tests (the package only installs tools here)
[ $want_test = 1 ] && { command -v systemd-analyze >/dev/null 2>&1 || apt_pkgs+=(systemd); }

missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip setuptools wheel
# An environment made before the Grafana client was dropped holds urllib3-future, which overwrote
# urllib3's files (docs/decisions.md, "Dependencies"): remove it and put the real urllib3 back.
if .venv/bin/python -m pip show -q urllib3-future >/dev/null 2>&1; then
  echo "setup: removing grafana-client, niquests and urllib3-future (a fork that replaced urllib3); restoring urllib3"
  .venv/bin/python -m pip uninstall -q -y grafana-client niquests urllib3-future
  .venv/bin/python -m pip install -q --force-reinstall --no-deps "urllib3>=1.26"
fi
extra="[grafana]"  # the dashboards' SDK: only `edge grafana` needs it (a plain `pip install .` has no extras)
[ $want_test = 1 ] && extra="[test,grafana]"
echo "setup: installing the appliance$extra (builds the Cython aggregator)"
.venv/bin/python -m pip install -q -e ".$extra"

if [ $want_test = 1 ] && [ -f tests/outputs/opcua/node/package.json ]; then
  echo "setup: installing node-opcua-client for the OPC UA interoperability tests"
  if [ -f tests/outputs/opcua/node/package-lock.json ]; then
    npm ci --prefix tests/outputs/opcua/node --no-audit --no-fund --loglevel=error >/dev/null
  else
    npm install --prefix tests/outputs/opcua/node --no-audit --no-fund --loglevel=error >/dev/null
  fi
fi
.venv/bin/edge doctor --quiet 2>/dev/null || .venv/bin/edge doctor
echo "setup: done"

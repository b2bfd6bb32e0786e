#!/usr/bin/env bash
# Installs the edge appliance as a system service:
#   1. a dedicated virtual environment PREFIX/venv (never the system Python, never a bare `pip install edge`);
#   2. the appliance into it, from a wheel (--from FILE.whl) or from a checkout (--from DIR, default: this one),
#      and the shipped device plugins into PREFIX/plugins (plugins load by path, they are not in the wheel);
#   3. a service user and group (skip with --no-user, e.g. in CI or a scratch root);
#   4. the systemd unit into ROOT/etc/systemd/system (ROOT defaults to /; like DESTDIR), the configuration
#      directory ROOT/etc/edge and the data directory ROOT/DATA_DIR owned by the service user.
# Idempotent: a second run upgrades the appliance and rewrites the unit, nothing else.
# It never enables or starts the service: see docs/provisioning.md for the steps after it.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: install.sh [options]
  --prefix DIR        where the virtual environment is created: DIR/venv (default /opt/edge-appliance)
  --root DIR          install system files (unit, /etc/edge, data dir) below DIR instead of / (default /)
  --from PATH         a wheel (*.whl) or a source checkout (default: the checkout holding this script)
  --config FILE       copy FILE to ROOT/etc/edge/edge.yaml if that file does not exist yet
  --config-path PATH  the configuration the service runs (default /etc/edge/edge.yaml)
  --data-dir DIR      the appliance's runtime.data_dir, writable by the service (default /var/lib/edge)
  --user NAME         service user and group (default edge)
  --no-user           do not create the service user (CI, scratch roots, non-root runs)
  --unit-name NAME    unit file name (default edge-appliance.service)
  --plugins DIR       device plugins to install into PREFIX/plugins (default: the plugins/ of this checkout)
  --python EXE        Python used to create the virtual environment (default python3)
  --wheelhouse DIR    install offline from the wheels in DIR (pip --no-index --find-links DIR)
  -h, --help          this help
EOF
}

die() { echo "install.sh: error: $*" >&2; exit 1; }

here="$(cd "$(dirname "$0")" && pwd)"
checkout="$(cd "$here/.." && pwd)"
prefix=/opt/edge-appliance
root=/
from="$checkout"
config=""
config_path=/etc/edge/edge.yaml
data_dir=/var/lib/edge
user=edge
make_user=1
unit_name=edge-appliance.service
python=python3
wheelhouse=""
plugins="$checkout/plugins"

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="${2:?--prefix needs a directory}"; shift 2 ;;
    --root) root="${2:?--root needs a directory}"; shift 2 ;;
    --from) from="${2:?--from needs a wheel or a checkout}"; shift 2 ;;
    --config) config="${2:?--config needs a file}"; shift 2 ;;
    --config-path) config_path="${2:?--config-path needs a path}"; shift 2 ;;
    --data-dir) data_dir="${2:?--data-dir needs a directory}"; shift 2 ;;
    --user) user="${2:?--user needs a name}"; shift 2 ;;
    --no-user) make_user=0; shift ;;
    --unit-name) unit_name="${2:?--unit-name needs a name}"; shift 2 ;;
    --plugins) plugins="${2:?--plugins needs a directory}"; shift 2 ;;
    --python) python="${2:?--python needs an executable}"; shift 2 ;;
    --wheelhouse) wheelhouse="${2:?--wheelhouse needs a directory}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option $1" ;;
  esac
done

case "$prefix" in /*) ;; *) die "--prefix must be an absolute path, got $prefix" ;; esac
case "$data_dir" in /*) ;; *) die "--data-dir must be an absolute path, got $data_dir" ;; esac
case "$config_path" in /*) ;; *) die "--config-path must be an absolute path, got $config_path" ;; esac
[[ "$user" =~ ^[a-z_][a-z0-9_-]{0,31}$ ]] || die "--user must be a lower-case system user name, got $user"
[[ "$unit_name" =~ ^[A-Za-z0-9_.@-]+\.service$ ]] || die "--unit-name must end in .service, got $unit_name"
[ -n "$config" ] && [ ! -f "$config" ] && die "--config: no such file $config"
[ -d "$plugins" ] || die "--plugins: no such directory $plugins"
root="${root%/}"
command -v "$python" >/dev/null || die "no Python interpreter $python (pass --python)"
# before anything is created: a wrong --from must not cost a virtual environment
{ [ -f "$from" ] && [[ "$from" == *.whl ]]; } || [ -f "$from/setup.py" ] \
  || die "--from must be a .whl file or a checkout with setup.py, got $from"

venv="$prefix/venv"
pip_args=(-q --disable-pip-version-check)
[ -n "$wheelhouse" ] && pip_args+=(--no-index --find-links "$wheelhouse")

# 1. the virtual environment
if [ ! -x "$venv/bin/python" ]; then
  echo "install: creating the virtual environment $venv"
  mkdir -p "$prefix"
  "$python" -m venv "$venv"
fi

# 2. the appliance
if [ -f "$from" ] && [[ "$from" == *.whl ]]; then
  echo "install: installing the wheel $(basename "$from")"
  "$venv/bin/pip" install "${pip_args[@]}" --upgrade "$from"
elif [ -f "$from/setup.py" ]; then
  # Build from a copy: a build inside the checkout would write build/ and egg-info into someone's tree.
  stage="$(mktemp -d)"
  trap 'rm -rf "$stage"' EXIT
  tar -C "$from" --exclude=./.git --exclude=./.venv --exclude=./build --exclude='./*.egg-info' \
      --exclude=node_modules --exclude=.hypothesis --exclude=.pytest_cache --exclude=.ruff_cache \
      --exclude='*.so' --exclude=./var -cf - . | tar -C "$stage" -xf -
  echo "install: installing the appliance from the checkout $from"
  "$venv/bin/pip" install "${pip_args[@]}" --upgrade "$stage"
else
  die "--from must be a .whl file or a checkout with setup.py, got $from"
fi
"$venv/bin/edge" --help >/dev/null || die "the installed edge command does not run"
"$venv/bin/python" - <<'EOF' || die "the installation is incomplete (see the line above)"
import importlib, pathlib, pkgutil, sys
import drivers, edge, edge.cli.commands
a, b = pathlib.Path(edge.__file__).parents[1], pathlib.Path(drivers.__file__).parents[1]
if a != b:
    sys.exit(f"edge ({a}) and drivers ({b}) come from different installations")
# every command module and the appliance import: a dependency missing from setup.py shows here, not on site
for mod in ["edge.runtime.app", *(f"edge.cli.commands.{m.name}" for m in pkgutil.iter_modules(edge.cli.commands.__path__))]:
    try:
        importlib.import_module(mod)
    except ImportError as exc:
        sys.exit(f"{mod} cannot be imported: {exc} (a dependency missing from setup.py?)")
EOF

# the shipped plugins, replaced as a whole so that a plugin removed upstream does not linger
rm -rf "$prefix/plugins.new"
cp -R "$plugins" "$prefix/plugins.new"
find "$prefix/plugins.new" -name __pycache__ -prune -exec rm -rf {} +
rm -rf "$prefix/plugins"
mv "$prefix/plugins.new" "$prefix/plugins"
chmod -R u=rwX,go=rX "$prefix/plugins"
echo "install: device plugins in $prefix/plugins (set plugins_dir: $prefix/plugins in the configuration)"

# 3. the service user
if [ $make_user = 1 ]; then
  [ "$(id -u)" = 0 ] || die "creating the service user needs root (or pass --no-user)"
  if [ "$root" = "" ]; then
    getent group "$user" >/dev/null || groupadd --system "$user"
    id -u "$user" >/dev/null 2>&1 || useradd --system --gid "$user" --groups dialout --no-create-home \
      --home-dir "$data_dir" --shell /usr/sbin/nologin --comment "edge appliance" "$user"
  else
    grep -q "^$user:" "$root/etc/group" 2>/dev/null || groupadd --prefix "$root" --system "$user"
    groups=()
    grep -q "^dialout:" "$root/etc/group" && groups=(--groups dialout)
    grep -q "^$user:" "$root/etc/passwd" 2>/dev/null || useradd --prefix "$root" --system --gid "$user" "${groups[@]}" \
      --no-create-home --home-dir "$data_dir" --shell /usr/sbin/nologin --comment "edge appliance" "$user"
  fi
fi

# 4. system files
unit_dir="$root/etc/systemd/system"
mkdir -p "$unit_dir" "$root$(dirname "$config_path")" "$root$data_dir"
chmod 0750 "$root$data_dir"
if [ $make_user = 1 ]; then
  if [ "$root" = "" ]; then
    chown "$user:$user" "$root$data_dir"
  else  # the user exists only in ROOT/etc/passwd: use its numeric ids
    uid="$(awk -F: -v u="$user" '$1 == u {print $3}' "$root/etc/passwd")"
    gid="$(awk -F: -v u="$user" '$1 == u {print $3}' "$root/etc/group")"
    chown "$uid:$gid" "$root$data_dir"
  fi
fi
if [ -n "$config" ] && [ ! -e "$root$config_path" ]; then
  install -m 0640 "$config" "$root$config_path"
  echo "install: configuration $root$config_path"
fi
[ $make_user = 1 ] || echo "install: --no-user: the unit names User=$user; create that user before starting it"
sed -e "s|@PREFIX@|$prefix|g" -e "s|@VENV@|$venv|g" -e "s|@CONFIG@|$config_path|g" \
    -e "s|@DATA_DIR@|$data_dir|g" -e "s|@USER@|$user|g" \
    "$here/systemd/edge-appliance.service.in" > "$unit_dir/$unit_name.tmp"
chmod 0644 "$unit_dir/$unit_name.tmp"
mv "$unit_dir/$unit_name.tmp" "$unit_dir/$unit_name"
echo "install: unit $unit_dir/$unit_name"
if [ "$root" = "" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
fi
if [ -f "$root$config_path" ]; then
  errors="$(mktemp)"
  if "$venv/bin/edge" check "$root$config_path" >/dev/null 2>"$errors"; then
    echo "install: $root$config_path passes edge check"
  else
    echo "install: warning: $root$config_path does not pass edge check yet (fix it before starting):"
    sed 's/^/  /' "$errors"
  fi
  rm -f "$errors"
fi
echo "install: done; next: edge provision $config_path, then systemctl enable --now $unit_name"

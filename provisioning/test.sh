#!/usr/bin/env bash
# Sets up everything (see setup.sh --test), then runs the linter and the whole test suite.
# Extra arguments go to pytest, e.g. `bash provisioning/test.sh -k config`.
# pytest runs in EDGE_TEST_WORKERS parallel workers (pytest-xdist, default 3 on the 2-core CI machine:
# most tests wait on sockets, child processes and timers, not on the CPU; with 4, three of five
# fresh-clone runs of stop 24 were green, the others lost timing races to CPU starvation: a
# VictoriaMetrics query over 10 s, a Modbus answer late, the fuzz test's poll rate at 0.76). --dist loadscope keeps the
# tests of one module in one worker, so that a module-scoped fixture (an installed venv, a demo process)
# is set up once; modules go to whichever worker is free, those with tests marked slow first
# (tests/conftest.py). EDGE_TEST_WORKERS=0 runs everything in one process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash provisioning/setup.sh --test
echo "test: ruff check"
.venv/bin/ruff check .
echo "test: mypy"
.venv/bin/mypy
echo "test: pytest"
# A test that hangs past pytest-timeout (its signal can be swallowed inside a library's cleanup: once,
# in asyncua's subscription stop) must fail the run with its output, not hold CI until CI's own limit:
# the suite takes ~11 min; after EDGE_TEST_TIMEOUT_S pytest and its workers get SIGINT (pytest then
# prints the summary of what ran), SIGKILL a minute later.
limit="${EDGE_TEST_TIMEOUT_S:-2400}"
rc=0
timeout --signal=INT --kill-after=60 "$limit" \
  .venv/bin/python -m pytest -q -p no:cacheprovider -n "${EDGE_TEST_WORKERS:-3}" --dist loadscope "$@" || rc=$?
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
  echo "test: pytest ran past ${limit} s and was stopped (a hung test: see the last tests started above)" >&2
fi
exit "$rc"

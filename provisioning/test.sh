#!/usr/bin/env bash
# Sets up everything (see setup.sh --test), then runs the linter and the whole test suite.
# Extra arguments go to pytest, e.g. `bash provisioning/test.sh -k config`.
# pytest runs in EDGE_TEST_WORKERS parallel workers (pytest-xdist, default 4 on the 2-core CI machine:
# most tests wait on sockets, child processes and timers, not on the CPU). --dist loadscope keeps the
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
.venv/bin/python -m pytest -q -p no:cacheprovider -n "${EDGE_TEST_WORKERS:-4}" --dist loadscope "$@"

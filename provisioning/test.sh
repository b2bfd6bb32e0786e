#!/usr/bin/env bash
# Sets up everything (see setup.sh --test), then runs the linter and the whole test suite.
# Extra arguments go to pytest, e.g. `bash provisioning/test.sh -k config`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash provisioning/setup.sh --test
echo "test: ruff check"
.venv/bin/ruff check .
echo "test: mypy"
.venv/bin/mypy
echo "test: pytest"
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"

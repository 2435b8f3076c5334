#!/usr/bin/env bash
# One command from a fresh clone: install autopeft (scripts/install.sh), then lint and run the test suite
# offline (the tests build tiny models and read ../shared/datasets; no model hub). What CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
ruff check .
export HF_HUB_OFFLINE=1
python -m pytest -q "$@"

#!/usr/bin/env bash
# One command from a fresh clone: install autopeft, run the demo search (`autopeft search` with no flags: MiniLM
# on 2,000 SST-2 examples — the local copies where there are (../shared/datasets, ./datasets,
# $AUTOPEFT_DATASETS), the Hub's otherwise — 12 configurations of the default space), then export the Pareto
# front as PEFT adapter folders and write the report. Everything lands in runs/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
autopeft search
autopeft export runs/demo
autopeft report runs/demo
echo "demo: the adapters are in runs/demo/export (each folder's README.md says how to load it); the report is runs/demo/report/summary.md"

#!/usr/bin/env bash
# Every benchmark table at one size, one after the other:
#   bash scripts/bench_all.sh quick   # 29 min alone on 2 CPU cores (MiniLM; SST-2, space autopeft, 1-2 seeds)
#   bash scripts/bench_all.sh full    # SST-2 + RTE + TREC, both spaces, 3 seeds: many hours (see each script)
# Writes benchmarks/{search,quality,fidelity,overhead}.{json,md}; search runs go to runs/bench-<size>/ (git-ignored),
# and bench_quality takes its autopeft configurations from those runs' exports.
set -euo pipefail
size="${1:-quick}"
case "$size" in
  quick|full) ;;
  *) echo "usage: bash scripts/bench_all.sh quick|full" >&2; exit 2 ;;
esac
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
start=$SECONDS
step() {
  echo "== python $* (at $((SECONDS - start)) s)"
  python "$@"
}
step scripts/bench_search.py --size "$size"
step scripts/bench_quality.py --size "$size" --from-run "runs/bench-$size/search"/*
step scripts/bench_fidelity.py --size "$size"
step scripts/bench_overhead.py --size "$size"
echo "== all done in $((SECONDS - start)) s: benchmarks/{search,quality,fidelity,overhead}.{json,md}"

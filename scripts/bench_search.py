"""Suggestion time of the search samplers at N trials, without training (synthetic objective).

Each trial's ``suggest_seconds`` (ask + define-by-run suggest, what the search stores per trial)
is compared with nothing else running: the evaluator is instant, so this isolates the sampler's
cost. Compare the medians with a real trial's wall time (``autopeft trial``) for the 5% target.

    python scripts/bench_search.py --trials 100 --samplers botorch,tpe --spaces lora,unified
    -> benchmarks/search_suggest.json and .md
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import optuna

from autopeft.search import SearchEngine, SearchPlan, open_storage, parse_objectives
from autopeft.search import records as R
from autopeft.space import SearchSpace, count_trainable_params
from autopeft.trial.fidelity import Fidelity
from autopeft.trial.result import TrialResult

ROOT = Path(__file__).resolve().parents[1]


def minilm_shape():
    from transformers import BertConfig

    return BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
                      vocab_size=30522)


def bench(sampler: str, space_name: str, trials: int) -> dict:
    config = minilm_shape()
    space = SearchSpace.from_file(ROOT / "search_spaces" / f"{space_name}.yaml", config)

    def synthetic(point, fidelity, seed, *, evaluate_test=False, save_dir=None):
        size = count_trainable_params(point, config)
        return TrialResult(metrics={"accuracy": 0.5 + 0.4 * (1 - math.exp(-size / 2e5)) + 0.01 * math.sin(size)},
                           wall_seconds=1.0)

    objectives = parse_objectives(["metric", "params"], "accuracy", True)
    with tempfile.TemporaryDirectory() as folder:
        storage = open_storage(f"sqlite:///{folder}/study.db")
        plan = SearchPlan(objectives=objectives, rungs=[Fidelity()], trials=trials, sampler=sampler, final_seeds=0)
        start = time.perf_counter()
        SearchEngine(space, synthetic, plan, storage, "bench", Path(folder)).run()
        total = time.perf_counter() - start
        records = R.load_records(storage, "bench", objectives)["rung-0"]
    seconds = [r.attrs[R.SUGGEST_SECONDS] for r in records if str(r.attrs.get(R.ORIGIN, "")).startswith("sampler:")]
    return {"sampler": sampler, "space": space_name, "trials": trials, "total_seconds": round(total, 1),
            "median_suggest_seconds": round(statistics.median(seconds), 3),
            "median_last_10_seconds": round(statistics.median(seconds[-10:]), 3),
            "max_suggest_seconds": round(max(seconds), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--samplers", default="botorch,tpe")
    parser.add_argument("--spaces", default="lora,unified")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "search_suggest")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = [bench(s, sp, args.trials) for sp in args.spaces.split(",") for s in args.samplers.split(",")]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [f"Suggestion time per trial (ask + suggest), synthetic objective, MiniLM shape, {args.trials} trials "
             "(`python scripts/bench_search.py`).", "",
             "| sampler | space | trials | median suggest s | median of last 10 s | max s |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['sampler']} | {r['space']} | {r['trials']} | {r['median_suggest_seconds']} | "
              f"{r['median_last_10_seconds']} | {r['max_suggest_seconds']} |" for r in rows]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

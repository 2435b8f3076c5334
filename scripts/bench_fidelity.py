"""Low-fidelity agreement: Spearman rho between the low- and full-fidelity metric of points sampled from a space.

The search ranks configurations by trials at low fidelity; this checks that the ranking carries
over. N distinct, non-empty points are drawn uniformly from the space (``SearchSpace.sample``,
seeded), each trained once (same seed) at the low fidelity of ``bench_search.py`` and at the full
fidelity of ``bench_quality.py``, with the search's evaluator (builders + TrialRunner); both metrics
are on the validation split (the one the search selects on). ``scipy.stats.spearmanr`` over the
points where both trials succeeded.

    python scripts/bench_fidelity.py --size quick|full|toy [--out DIR] [overrides]
    -> benchmarks/fidelity.json and benchmarks/fidelity.md
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_common as C  # noqa: E402

PRESETS = {
    "toy": dict(tasks="rte", space="autopeft", points=3, low="16,16,16,8", full_train_examples="32", full_epochs=1.0,
                full_max_length=16, full_eval_examples=16, full_batch_size=8),
    "quick": dict(tasks="sst2", space="autopeft", points=20, low="256,32,256,8", full_train_examples="1000",
                  full_epochs=1.0, full_max_length=0, full_eval_examples=500, full_batch_size=16),
    "full": dict(tasks="sst2,rte,trec", space="autopeft", points=20, low="500,64,500,16",
                 full_train_examples="sst2=10000,rte=all,trec=all", full_epochs=3.0, full_max_length=0,
                 full_eval_examples=0, full_batch_size=32),
}


def sample_points(space, count: int, seed: int) -> list:
    """``count`` distinct points with at least one PEFT module, uniformly from the space."""
    import numpy as np

    from autopeft.search import point_key

    rng = np.random.default_rng(seed)
    points, seen = [], set()
    for _ in range(1000 * count):
        point = space.decode(space.active_params(space.sample(rng)))
        if point.is_empty or point_key(point) in seen:
            continue
        seen.add(point_key(point))
        points.append(point)
        if len(points) == count:
            break
    return points


def run_task(args, task: str) -> dict:
    from scipy.stats import spearmanr

    from autopeft.space import SearchSpace, count_trainable_params
    from autopeft.trial import Fidelity

    data, base = C.load(task)
    space = SearchSpace.from_file(C.space_path(args.space), base.config)
    train, length, evaluate, batch = C.ints(args.low)
    low = Fidelity(train_examples=train, max_length=length, eval_examples=evaluate, batch_size=batch)
    full = Fidelity(train_examples=C.per_task(args.full_train_examples, [task])[task], epochs=args.full_epochs,
                    max_length=args.full_max_length or C.TASKS[task][1], eval_examples=args.full_eval_examples or None,
                    batch_size=args.full_batch_size)
    for fidelity in (low, full):  # tokenised once here, not inside the first trial's wall time
        C.load(task, tokenize_length=fidelity.max_length)
    heads = full.max_length if "lofit" in space.spec.modules else None
    evaluator = C.runner_evaluator(base, data, args.lr, heads)
    metric = data.spec.metric
    rows = []
    for index, point in enumerate(sample_points(space, args.points, args.seed)):
        low_result = evaluator(point, low, args.seed)
        full_result = evaluator(point, full, args.seed)
        rows.append({"point": index, "description": point.describe(),
                     "params": count_trainable_params(point, base.config),
                     "low": low_result.metrics.get(metric), "full": full_result.metrics.get(metric),
                     "low_status": low_result.status, "full_status": full_result.status,
                     "reason": low_result.reason or full_result.reason, "low_wall_s": round(low_result.wall_seconds, 2),
                     "full_wall_s": round(full_result.wall_seconds, 2), "spec": point.to_dict()})
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "spec"}), flush=True)
    both = [r for r in rows if r["low"] is not None and r["full"] is not None]
    rho = p_value = None
    if len(both) >= 3:
        result = spearmanr([r["low"] for r in both], [r["full"] for r in both])
        if math.isfinite(result.statistic):  # constant metrics (e.g. every point at the majority class) have none
            rho, p_value = float(result.statistic), float(result.pvalue)
    return {"task": task, "metric": metric, "low": low.to_dict(), "full": full.to_dict(), "points": rows,
            "n": len(both), "spearman_rho": rho, "p_value": p_value}


def markdown(args, data: dict) -> list[str]:
    lines = ["# Low-fidelity agreement (MiniLM)", "",
             f"{args.points} distinct points drawn uniformly from space `{args.space}` (seed {args.seed}), each "
             f"trained at the search's low fidelity and at full fidelity (lr {args.lr}, or the point's own); "
             "validation metric.", ""]
    lines += C.table(["task", "low fidelity", "full fidelity", "points (both ok)", "Spearman ρ", "p-value"],
                     [[t["task"], f"{t['low']['train_examples']:g} ex, len {t['low']['max_length']}, "
                                  f"batch {t['low']['batch_size']}, eval {t['low']['eval_examples']}",
                       f"{t['full']['train_examples'] or 'all'} ex × {t['full']['epochs']:g} ep, len "
                       f"{t['full']['max_length']}, batch {t['full']['batch_size']}, "
                       f"eval {t['full']['eval_examples'] or 'all'}",
                       t["n"], C.fmt(t["spearman_rho"]), C.fmt(t["p_value"], 4)] for t in data["tasks"]])
    for t in data["tasks"]:
        if t["spearman_rho"] is None:
            lines += ["", f"{t['task']}: no ρ — fewer than 3 points trained at both fidelities, or one fidelity "
                          "gave every point the same metric (e.g. all at the majority class)."]
        lines += ["", f"## {t['task']}: the points", ""]
        lines += C.table(["#", "point", "params", f"low {t['metric']}", f"full {t['metric']}", "low s", "full s"],
                         [[r["point"], r["description"], f"{r['params']:,}", C.fmt(r["low"]), C.fmt(r["full"]),
                           C.fmt(r["low_wall_s"], 1), C.fmt(r["full_wall_s"], 1)] for r in t["points"]])
        failed = [r for r in t["points"] if r["reason"]]
        if failed:
            lines += ["", "Failed: " + "; ".join(f"#{r['point']}: {r['reason']}" for r in failed)]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", help=f"comma-separated: {', '.join(C.TASKS)}")
    parser.add_argument("--space")
    parser.add_argument("--points", type=int)
    parser.add_argument("--low", help="low fidelity (bench_search's): train examples, max length, eval examples, "
                                      "batch size (e.g. 256,32,256,8)")
    parser.add_argument("--full-train-examples", help="'1000' for every task or 'sst2=10000,rte=all'")
    parser.add_argument("--full-epochs", type=float)
    parser.add_argument("--full-max-length", type=int, help="0: per task (sst2 64, rte 128, trec 64)")
    parser.add_argument("--full-eval-examples", type=int, help="0: the whole validation split")
    parser.add_argument("--full-batch-size", type=int)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = C.parse_args(parser, PRESETS, argv, "fidelity")
    started = time.perf_counter()
    C.quiet()
    data = {"tasks": [run_task(args, task) for task in C.csv(args.tasks)]}
    C.write(args, data, markdown(args, data), started)


if __name__ == "__main__":
    main()

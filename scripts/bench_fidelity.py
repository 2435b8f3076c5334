"""Low-fidelity agreement: Spearman rho between the low- and full-fidelity metric of points sampled from a space.

The search ranks configurations by trials at low fidelity; this checks that the ranking carries
over. N distinct, non-empty points are drawn uniformly from the space (``SearchSpace.sample``,
seeded) and trained with the search's evaluator (builders + TrialRunner); every metric is on the
validation split (the one the search selects on). ``scipy.stats.spearmanr`` over the points where
both trials succeeded.

Two designs:

- ``--rungs`` (size medium): the search's own rungs. ``autopeft search`` trains a rung as the first
  ``fraction`` of the full fidelity's optimiser steps (same data, batches and LR schedule; at least
  ``MIN_RUNG_STEPS``), and a promotion continues the lower rung's checkpoint. So each point trains
  ONCE to full fidelity here, continued rung by rung, and is evaluated at every rung: rho per rung
  vs full, and the rung ``--fidelity auto`` should settle on. The learning rate is each module
  type's own (as a search without ``--lr``), unless ``--lr`` is given. Also reported: the share of
  points at each rung that score no better than the trivial (majority / mean) predictor; rho of each
  rung's validation *loss* (negated) against the full metric, the ranking signal a rung could use
  instead of its accuracy; and with ``--repeat-seeds N`` each point trained again to full fidelity
  with N other seeds: rho between two seeds of the full fidelity is the ceiling any rung can reach
  against one seed (the full ranking's own noise), and every rung is also ranked against the
  seeds' mean.
- ``--low`` (sizes toy/quick/full, the design before step rungs): a separate low-fidelity training
  (fewer examples, shorter sequences) vs a full one.

    python scripts/bench_fidelity.py --size medium|quick|full|toy [--tasks sst2] [--out DIR] [overrides]
    -> benchmarks/fidelity.json and benchmarks/fidelity.md (medium: benchmarks/medium/)
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
    # the search's step rungs of --fidelity auto (eta 3) over bench_quality's medium full fidelity
    "medium": dict(tasks="sst2,rte,trec", space="default", points=20, rungs="0.037037,0.111111,0.333333",
                   full_train_examples="sst2=3000,rte=all,trec=3000", full_epochs=2.0, full_max_length=0,
                   full_eval_examples=500, full_batch_size=16, repeat_seeds=1),
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


def spearman(pairs: list[tuple[float, float]]) -> tuple[float | None, float | None]:
    from scipy.stats import spearmanr

    if len(pairs) < 3:
        return None, None
    result = spearmanr([a for a, _ in pairs], [b for _, b in pairs])
    if not math.isfinite(result.statistic):  # constant metrics (e.g. every point at the majority class) have none
        return None, None
    return float(result.statistic), float(result.pvalue)


def full_fidelity(args, task: str):
    from autopeft.trial import Fidelity

    return Fidelity(train_examples=C.per_task(args.full_train_examples, [task])[task], epochs=args.full_epochs,
                    max_length=args.full_max_length or C.TASKS[task][1],
                    eval_examples=args.full_eval_examples or None, batch_size=args.full_batch_size)


def run_task_rungs(args, task: str) -> dict:
    """Each point trained once to full fidelity, continued through the search's step rungs, evaluated at each."""
    import tempfile
    from dataclasses import replace

    from autopeft.space import SearchSpace, count_trainable_params

    data, base = C.load(task)
    space = SearchSpace.from_file(C.space_path(args.space), base.config)
    full = full_fidelity(args, task)
    C.load(task, tokenize_length=full.max_length)
    fractions = [float(f) for f in C.csv(args.rungs)]
    ladder = [replace(full, step_fraction=f) for f in fractions] + [full]
    evaluator = C.runner_evaluator(base, data, args.lr, full.max_length if "lofit" in space.spec.modules else None)
    metric = data.spec.metric
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for index, point in enumerate(sample_points(space, args.points, args.seed)):
            row = {"point": index, "description": point.describe(), "rungs": [], "spec": point.to_dict(),
                   "params": count_trainable_params(point, base.config)}
            previous = None
            for level, fidelity in enumerate(ladder):
                checkpoint = str(Path(scratch) / f"p{index}-r{level}")
                result = evaluator(point, fidelity, args.seed, resume_from=previous,
                                   checkpoint_to=checkpoint if level < len(ladder) - 1 else None)
                row["rungs"].append({"steps": result.steps, "metric": result.metrics.get(metric),
                                     "loss": result.metrics.get("eval_loss"),
                                     "status": result.status, "reason": result.reason, "trivial": result.trivial,
                                     "trivial_metric": result.trivial_metric, "stderr": result.metric_stderr,
                                     "resumed_steps": result.resumed_steps, "wall_s": round(result.wall_seconds, 2)})
                if not result.ok:
                    break
                previous = checkpoint
            row["repeats"] = []
            if len(row["rungs"]) == len(ladder):
                for seed in range(args.seed + 1, args.seed + 1 + (args.repeat_seeds or 0)):
                    again = evaluator(point, full, seed)
                    row["repeats"].append({"seed": seed, "metric": again.metrics.get(metric),
                                           "loss": again.metrics.get("eval_loss"), "status": again.status,
                                           "trivial": again.trivial, "wall_s": round(again.wall_seconds, 2)})
            print(json.dumps({k: v for k, v in row.items() if k != "spec"}), flush=True)
            rows.append(row)
    from autopeft.data.metrics import is_higher_better

    sign = 1.0 if is_higher_better(metric) else -1.0  # a rung's loss, oriented like the metric
    complete = [r for r in rows if len(r["rungs"]) == len(ladder) and r["rungs"][-1]["metric"] is not None]
    repeated = [r for r in complete if r["repeats"] and all(x["metric"] is not None for x in r["repeats"])]

    def full_mean(row) -> float:
        return sum([row["rungs"][-1]["metric"]] + [x["metric"] for x in row["repeats"]]) / (1 + len(row["repeats"]))

    agreement = []
    for level in range(len(ladder) - 1):
        rho, p_value = spearman([(r["rungs"][level]["metric"], r["rungs"][-1]["metric"]) for r in complete])
        rho_loss, _ = spearman([(-sign * r["rungs"][level]["loss"], r["rungs"][-1]["metric"]) for r in complete
                                if r["rungs"][level]["loss"] is not None])
        rho_mean, _ = spearman([(r["rungs"][level]["metric"], full_mean(r)) for r in repeated])
        rho_loss_mean, _ = spearman([(-sign * r["rungs"][level]["loss"], full_mean(r)) for r in repeated
                                     if r["rungs"][level]["loss"] is not None])
        at_level = [r["rungs"][level] for r in rows if len(r["rungs"]) > level]
        agreement.append({"fraction": fractions[level], "steps": at_level[0]["steps"] if at_level else None,
                          "n": len(complete), "spearman_rho": rho, "p_value": p_value,
                          "spearman_rho_loss": rho_loss, "spearman_rho_seed_mean": rho_mean,
                          "spearman_rho_loss_seed_mean": rho_loss_mean, "n_repeated": len(repeated),
                          "trivial_share": (sum(1 for x in at_level if x["trivial"]) / len(at_level)) if at_level
                          else None})
    # the full fidelity's own reproducibility: its seed-0 ranking against another seed's
    seed_rho, seed_p = spearman([(r["rungs"][-1]["metric"], r["repeats"][0]["metric"]) for r in repeated])
    finals = [r["rungs"][-1] for r in rows if len(r["rungs"]) == len(ladder)]
    return {"task": task, "commit": C.COMMIT, "metric": metric, "full": full.to_dict(), "points": rows,
            "agreement": agreement, "full_seed_rho": seed_rho, "full_seed_p_value": seed_p,
            "full_steps": finals[0]["steps"] if finals else None,
            "full_trivial_share": (sum(1 for x in finals if x["trivial"]) / len(finals)) if finals else None,
            "trivial_metric": finals[0]["trivial_metric"] if finals else None,
            "stderr": finals[0]["stderr"] if finals else None}


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


def markdown_rungs(args, data: dict) -> list[str]:
    lines = ["# Rung agreement (MiniLM)", "",
             f"{args.points} distinct points drawn uniformly from space `{args.space}` (seed {args.seed}), each "
             "trained once to full fidelity and continued through the search's step rungs (a rung = the first "
             "fraction of the full training's optimiser steps, same data, batches and LR schedule), evaluated at "
             f"each; validation metric; learning rate {args.lr or 'per module type (its default x the point lr_scale)'}"
             ". "
             "ρ: Spearman between the rung's and the full fidelity's metric over the points; trivial: the share of "
             "points no better than the majority/mean predictor (by one standard error).", ""]
    for t in data["tasks"]:
        full = t["full"]
        lines += [f"## {t['task']}", "",
                  f"Full fidelity: {full['train_examples'] or 'all'} examples × {full['epochs']:g} epochs, batch "
                  f"{full['batch_size']}, length {full['max_length']} = {t['full_steps']} steps; "
                  f"{full['eval_examples'] or 'all'} validation examples (trivial score {C.fmt(t['trivial_metric'])}, "
                  f"standard error {C.fmt(t['stderr'])}); trivial at full fidelity: "
                  f"{C.fmt(t['full_trivial_share'], 2)}.", ""]
        if t.get("full_seed_rho") is not None:
            lines += [f"The full fidelity's own reproducibility: ρ between its seed-{args.seed} and "
                      f"seed-{args.seed + 1} rankings = **{C.fmt(t['full_seed_rho'])}** "
                      f"(p {C.fmt(t['full_seed_p_value'], 4)}) over "
                      f"{t['agreement'][0]['n_repeated']} points: no rung can rank one seed's full fidelity much "
                      "better than another seed does. The seed-mean columns rank against the mean over the seeds.",
                      ""]
        has_loss = any(a.get("spearman_rho_loss") is not None for a in t["agreement"])
        has_mean = any(a.get("spearman_rho_seed_mean") is not None for a in t["agreement"])
        lines += C.table(["rung (fraction of steps)", "steps", "points", "Spearman ρ vs full", "p-value"]
                         + (["ρ by the rung's loss"] if has_loss else [])
                         + (["ρ vs seed mean", "ρ by loss vs seed mean"] if has_mean else []) + ["trivial share"],
                         [[f"{a['fraction']:.3f}", a["steps"], a["n"], C.fmt(a["spearman_rho"]),
                           C.fmt(a["p_value"], 4)]
                          + ([C.fmt(a.get("spearman_rho_loss"))] if has_loss else [])
                          + ([C.fmt(a.get("spearman_rho_seed_mean")), C.fmt(a.get("spearman_rho_loss_seed_mean"))]
                             if has_mean else [])
                          + [C.fmt(a["trivial_share"], 2)] for a in t["agreement"]])
        lines += [""]
        repeats = max((len(r.get("repeats", [])) for r in t["points"]), default=0)
        headers = (["#", "point", "params"] + [f"{a['fraction']:.3f}" for a in t["agreement"]] + ["full"]
                   + [f"full, seed {args.seed + 1 + k}" for k in range(repeats)] + ["total s"])
        lines += C.table(headers, [[r["point"], r["description"], f"{r['params']:,}"]
                                   + [C.fmt(x["metric"]) + (" (t)" if x["trivial"] else "") for x in r["rungs"]]
                                   + ["–"] * (len(t["agreement"]) + 1 - len(r["rungs"]))
                                   + [C.fmt(x["metric"]) + (" (t)" if x["trivial"] else "")
                                      for x in r.get("repeats", [])]
                                   + ["–"] * (repeats - len(r.get("repeats", [])))
                                   + [C.fmt(sum(x["wall_s"] for x in r["rungs"] + r.get("repeats", [])), 1)]
                                   for r in t["points"]])
        failed = [(r["point"], x["reason"]) for r in t["points"] for x in r["rungs"] if x["reason"]]
        if failed:
            lines += ["", "Failed: " + "; ".join(f"#{p}: {why}" for p, why in failed)]
        lines += ["", "(t): no better than the trivial predictor.", ""]
    return lines


def markdown(args, data: dict) -> list[str]:
    if args.rungs:
        return markdown_rungs(args, data)
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
    parser.add_argument("--rungs", help="the search's step rungs as fractions of the full steps "
                                         "(e.g. 0.037,0.111,0.333); replaces --low")
    parser.add_argument("--low", help="low fidelity (bench_search's): train examples, max length, eval examples, "
                                      "batch size (e.g. 256,32,256,8)")
    parser.add_argument("--full-train-examples", help="'1000' for every task or 'sst2=10000,rte=all'")
    parser.add_argument("--full-epochs", type=float)
    parser.add_argument("--full-max-length", type=int, help="0: per task (sst2 64, rte 128, trec 64)")
    parser.add_argument("--full-eval-examples", type=int, help="0: the whole validation split")
    parser.add_argument("--full-batch-size", type=int)
    parser.add_argument("--lr", type=float, help="one rate for every point (default: 3e-3 with --low; each module "
                                                 "type's own with --rungs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat-seeds", type=int, help="with --rungs: train each point again to full fidelity with "
                                                         "this many other seeds (the full ranking's own noise)")
    args = C.parse_args(parser, PRESETS, argv, "fidelity")
    if not getattr(args, "rungs", None):
        args.rungs = None
        args.lr = 3e-3 if args.lr is None else args.lr
    started = time.perf_counter()
    C.quiet()
    run = run_task_rungs if args.rungs else run_task
    data = {"tasks": [run(args, task) for task in C.csv(args.tasks)]}
    if args.size == "medium":
        data = C.merge_tasks(args, data, ("tasks",))
    C.write(args, data, markdown(args, data), started)


if __name__ == "__main__":
    main()

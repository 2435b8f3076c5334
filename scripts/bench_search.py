"""Search efficiency: hypervolume of (task metric, log10 trainable params) per sampler, vs trials and wall time.

MiniLM on SST-2 / RTE / TREC, spaces ``autopeft.yaml`` and ``unified.yaml``, low fidelity. Every
search is a real ``autopeft search`` (``run_search``: local backend, Optuna storage, run folder that
``autopeft export`` / ``report`` read), without the final stage. The base model and the tokenised
data are loaded once per process (autopeft's caches), not per search. All samplers of a seed share
the same initial design (the baselines the space can express + the Sobol points of a 40-trial
search), so they differ only in what the sampler proposes; random search runs to 120 trials.

Hypervolume: :func:`autopeft.search.pareto.hypervolume` over the trained trials so far, in the
search's loss space (``-metric``, ``log10(params + 1)``), against a fixed reference point per task:
the accuracy of always answering the majority class on the validation examples a trial scores (a
model that learned nothing adds no volume) and the full model's parameter count. Search time of a
trial = its suggestion + the trial runner's wall seconds (from the study, so a resumed search keeps
its clock); each search's whole wall time (with loading the task and priors) is in the JSON.
Goal: HV of the default sampler after 40 trials >= HV of random search after 120.

    python scripts/bench_search.py --size quick|full|toy [--out DIR] [--runs DIR] [--resume] [overrides]
    -> benchmarks/search.json and benchmarks/search.md
       runs: runs/bench-<size>/search/<task>-<space>-<sampler>-s<seed> (git-ignored)
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_common as C  # noqa: E402

PRESETS = {
    "toy": dict(tasks="rte", spaces="autopeft", samplers="botorch,random", seeds=1, checkpoints="1,2", random_trials=3,
                train_examples=16, max_length=16, eval_examples=16, batch_size=8, lr=3e-3),
    # batch 8: 32 steps on 256 examples; with batch 16 (16 steps) most points stay at the majority class on SST-2
    "quick": dict(tasks="sst2", spaces="autopeft", samplers="botorch,gp,tpe,nsga2,random", seeds=1,
                  checkpoints="10,20,40", random_trials=120, train_examples=256, max_length=32, eval_examples=256,
                  batch_size=8, lr=3e-3),
    "full": dict(tasks="sst2,rte,trec", spaces="autopeft,unified", samplers="botorch,gp,tpe,nsga2,random", seeds=3,
                 checkpoints="10,20,40", random_trials=120, train_examples=500, max_length=64, eval_examples=500,
                 batch_size=16, lr=3e-3),
}


def reference_point(task: str, max_length: int, eval_examples: int | None) -> dict:
    """The fixed reference: the accuracy of always answering the majority class on the validation examples a trial
    scores, and the whole model's parameters. (Loads model and task, and tokenises the data once, before any search
    of the task, so no trial's wall time includes it.)"""
    from autopeft.space import count_model_params
    from autopeft.trial import Fidelity, TrialRunner

    data, base = C.load(task, tokenize_length=max_length)
    labels = data.validation[data.spec.label_column]
    scored = [labels[i] for i in TrialRunner.eval_subset(len(labels), Fidelity(eval_examples=eval_examples))]
    majority = Counter(scored).most_common(1)[0][1] / len(scored) if data.spec.metric == "accuracy" else 0.0
    return {"metric": data.spec.metric, "metric_value": majority, "params": count_model_params(base.config),
            "scored_examples": len(scored)}


def hypervolume_curve(records, objectives, reference: list[float]) -> list[dict]:
    """One entry per trained rung-0 trial, in order: cumulative seconds and the hypervolume so far."""
    import numpy as np

    from autopeft.search import records as R
    from autopeft.search.pareto import hypervolume

    curve, losses, seconds = [], [], 0.0
    for record in sorted(records, key=lambda r: r.number):
        seconds += record.attrs.get(R.SUGGEST_SECONDS, 0.0)
        if not record.trained:  # a duplicate (stored result reused) or a pruned point: suggestion time only
            continue
        seconds += record.attrs[R.RESULT]["wall_seconds"]
        if record.complete:
            losses.append(record.losses(objectives))
        curve.append({
            "trials": len(curve) + 1, "seconds": round(seconds, 2),
            "hv": hypervolume(np.array(losses), np.array(reference)) if losses else 0.0,
            "metric": record.values[objectives[0].name] if record.complete else None,
            "params": record.attrs.get(R.ADAPTER_PARAMS), "status": record.attrs.get(R.STATUS),
            "origin": record.attrs.get(R.ORIGIN),
        })
    return curve


def fresh_run_dir(path: Path, resume: bool) -> None:
    if resume or not path.exists():
        return
    if not (path / "run.json").is_file():
        raise SystemExit(f"{path} exists and is not a search run folder; remove it or choose another --runs")
    shutil.rmtree(path)


def run_one(args, task: str, space: str, sampler: str, seed: int, reference: dict, design: int) -> dict:
    from autopeft.search import records as R
    from autopeft.search.run import run_search
    from autopeft.search.settings import SearchSettings

    checkpoints = C.ints(args.checkpoints)
    trials = args.random_trials if sampler == "random" else max(checkpoints)
    run_dir = C.runs_dir(args, "search") / f"{task}-{space}-{sampler}-s{seed}"
    fresh_run_dir(run_dir, args.resume)
    settings = SearchSettings(
        model="minilm", dataset=C.dataset_path(task), space=C.space_path(space), sampler=sampler, trials=trials,
        final_seeds=0, quasi_random=design, train_examples=args.train_examples, max_length=args.max_length,
        eval_examples=args.eval_examples, batch_size=args.batch_size, lr=args.lr, seed=seed, out=str(run_dir),
        prior=["heads"] if C.space_has(space, "lofit") else [])
    start = time.perf_counter()
    outcome, info = run_search(settings)
    wall = time.perf_counter() - start
    records = R.load_records(info.open_storage(), info.study_name, info.objectives)["rung-0"]
    losses = [o.to_loss(v) for o, v in zip(info.objectives, (reference["metric_value"], reference["params"]))]
    curve = hypervolume_curve(records, info.objectives, losses)
    marks = sorted({*checkpoints, trials})
    return {
        "task": task, "space": space, "sampler": sampler, "seed": seed, "run_dir": str(run_dir),
        "trials": len(curve), "failed": sum(1 for c in curve if c["status"] != "ok"), "search_wall_s": round(wall, 1),
        "stopped_because": outcome.stopped_because, "median_suggest_s": outcome.median_suggest_seconds,
        "median_trial_s": outcome.median_trial_seconds,
        "hv_at": {str(n): curve[n - 1]["hv"] for n in marks if len(curve) >= n},
        "seconds_at": {str(n): curve[n - 1]["seconds"] for n in marks if len(curve) >= n},
        "curve": curve,
    }


def hv_at_time(curve: list[dict], seconds: float) -> float:
    """Hypervolume reached by ``seconds`` of search time (a search that ended earlier keeps its last value)."""
    reached = [c["hv"] for c in curve if c["seconds"] <= seconds]
    return reached[-1] if reached else 0.0


def summarise(args, runs: list[dict], default: str) -> dict:
    checkpoints = C.ints(args.checkpoints)
    last = str(max(checkpoints))
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault((run["task"], run["space"], run["sampler"]), []).append(run)
    table = []
    for (task, space, sampler), members in groups.items():
        marks = [*checkpoints, *([args.random_trials] if sampler == "random" else [])]
        row = {"task": task, "space": space, "sampler": sampler, "seeds": len(members)}
        for n in marks:
            values = [m["hv_at"][str(n)] for m in members if str(n) in m["hv_at"]]
            row[f"hv@{n}"] = C.mean_std(values) if len(values) == len(members) else (None, None)
            seconds = [m["seconds_at"][str(n)] for m in members if str(n) in m["seconds_at"]]
            row[f"seconds@{n}"] = C.mean_std(seconds)[0] if len(seconds) == len(members) else None
        suggest = [m["median_suggest_s"] for m in members if m["median_suggest_s"] is not None]
        row["median_suggest_s"] = C.mean_std(suggest)[0]
        table.append(row)
    goals, versus_time = [], []
    for task, space in dict.fromkeys((r["task"], r["space"]) for r in runs):
        mine = next((r for r in table if (r["task"], r["space"], r["sampler"]) == (task, space, default)), None)
        rand = next((r for r in table if (r["task"], r["space"], r["sampler"]) == (task, space, "random")), None)
        ours = mine[f"hv@{last}"][0] if mine else None
        theirs = rand[f"hv@{args.random_trials}"][0] if rand else None
        goals.append({"task": task, "space": space, "default_sampler": default, "default_trials": int(last),
                      "default_hv": ours, "random_trials": args.random_trials, "random_hv": theirs,
                      "holds": None if ours is None or theirs is None else bool(ours >= theirs)})
        times = [mine[f"seconds@{n}"] for n in checkpoints] if mine else []
        if times and all(t is not None for t in times):
            rows = {sampler: [C.mean_std([hv_at_time(m["curve"], t) for m in groups[(task, space, sampler)]])[0]
                              for t in times]
                    for (t_, s_, sampler) in groups if (t_, s_) == (task, space)}
            versus_time.append({"task": task, "space": space, "seconds": times, "hv": rows})
    measured = [g for g in goals if g["holds"] is not None]
    return {"table": table, "goal": goals, "goal_holds": sum(g["holds"] for g in measured),
            "goal_measured": len(measured), "hv_vs_time": versus_time}


def markdown(args, data: dict) -> list[str]:
    summary, default = data["summary"], data["default_sampler"]
    checkpoints = C.ints(args.checkpoints)
    refs = "; ".join(f"{task}: {r['metric']} {r['metric_value']:.3f}, {r['params']:,} params"
                     for task, r in data["reference"].items())
    lines = [
        "# Search efficiency (MiniLM): hypervolume of (metric, log10 params)", "",
        f"Low fidelity: {args.train_examples} training examples × 1 epoch, length {args.max_length}, "
        f"batch {args.batch_size}, "
        f"lr {args.lr} (a space that searches the learning rate uses its own), {args.eval_examples} validation "
        "examples; "
        f"seeds 0..{args.seeds - 1}; no final stage. Every sampler starts from the same initial design (baselines + "
        f"Sobol points of a {max(checkpoints)}-trial search); random search runs to {args.random_trials} trials.",
        f"Hypervolume in the search's loss space (−metric, log10(params + 1)), fixed reference point per task "
        f"(always answering the majority class on the scored validation examples; the full model's parameters): "
        f"{refs}. Units: metric above "
        "the majority class × decades of parameters below the full model; larger is better.", "",
        f"## Goal: HV of {default} (default sampler) after {max(checkpoints)} trials ≥ random search's after "
        f"{args.random_trials}", ""]
    lines += C.table(["task", "space", f"{default} @{max(checkpoints)}", f"random @{args.random_trials}", "holds"],
                     [[g["task"], g["space"], C.fmt(g["default_hv"]), C.fmt(g["random_hv"]),
                       {True: "yes", False: "**no**", None: "not measured"}[g["holds"]]] for g in summary["goal"]])
    verdict = (f"The goal holds on {summary['goal_holds']} of {summary['goal_measured']} task × space pair(s)"
               if summary["goal_measured"] else "The goal was not measured (a run of the default sampler or random "
               "search is missing)")
    lines += ["", f"**{verdict}.**", "", "## Hypervolume after N trials (mean ± std over seeds)", ""]
    marks = [*checkpoints, args.random_trials]
    lines += C.table(
        ["task", "space", "sampler", *[f"HV @{n}" for n in marks], f"search s @{max(checkpoints)}", "median suggest s"],
        [[r["task"], r["space"], r["sampler"], *[C.cell(r.get(f"hv@{n}"), r["seeds"]) for n in marks],
          C.fmt(r[f"seconds@{max(checkpoints)}"], 0), C.fmt(r["median_suggest_s"], 2)] for r in summary["table"]])
    lines += ["", f"## Hypervolume vs search time (at the time {default} needed for {', '.join(map(str, checkpoints))} "
              "trials; a search that ended earlier keeps its last value)", ""]
    for block in summary["hv_vs_time"]:
        lines += [f"{block['task']}, space `{block['space']}`:", ""]
        lines += C.table(["sampler", *[f"HV @ {t:.0f} s" if t >= 10 else f"HV @ {t:.1f} s" for t in block["seconds"]]],
                         [[sampler, *[C.fmt(v) for v in values]] for sampler, values in block["hv"].items()])
        lines.append("")
    failed = sum(r["failed"] for r in data["runs"])
    total = sum(r["trials"] for r in data["runs"])
    lines.append(f"Trials that failed (counted as trials, no point): {failed} of {total}; "
                 "search time = suggestion + trial wall seconds, summed over the search's trials.")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", help=f"comma-separated: {', '.join(C.TASKS)}")
    parser.add_argument("--spaces", help="comma-separated space names (search_spaces/<name>.yaml) or YAML paths")
    parser.add_argument("--samplers", help="comma-separated: botorch, gp, tpe, nsga2, random")
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--checkpoints", help="trial counts to report (the largest is every sampler's budget)")
    parser.add_argument("--random-trials", type=int, help="random search's budget")
    parser.add_argument("--train-examples", type=int)
    parser.add_argument("--max-length", type=int)
    parser.add_argument("--eval-examples", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--runs", type=Path, help="folder of the search runs (default runs/bench-<size>/search)")
    parser.add_argument("--resume", action="store_true", help="continue existing runs instead of starting afresh")
    args = C.parse_args(parser, PRESETS, argv, "search")
    started = time.perf_counter()
    C.quiet()
    from autopeft.models import load_model_config
    from autopeft.search.initial_design import default_quasi_random_count
    from autopeft.search.samplers import default_sampler_name
    from autopeft.space import SearchSpace

    config = load_model_config("minilm")
    designs = {space: default_quasi_random_count(max(C.ints(args.checkpoints)),
                                                 len(SearchSpace.from_file(C.space_path(space), config).dimensions))
               for space in C.csv(args.spaces)}
    runs, references = [], {}
    for task in C.csv(args.tasks):
        references[task] = reference_point(task, args.max_length, args.eval_examples)
        for space in C.csv(args.spaces):
            for seed in range(args.seeds):
                for sampler in C.csv(args.samplers):
                    runs.append(run_one(args, task, space, sampler, seed, references[task], designs[space]))
                    run = runs[-1]
                    print(f"{task} {space} {sampler} seed {seed}: {run['trials']} trials, {run['search_wall_s']} s, "
                          f"HV {run['hv_at']}", flush=True)
    default = default_sampler_name()
    data = {"default_sampler": default, "reference": references, "initial_design_sobol_points": designs, "runs": runs}
    data["summary"] = summarise(args, runs, default)
    C.write(args, data, markdown(args, data), started)


if __name__ == "__main__":
    main()

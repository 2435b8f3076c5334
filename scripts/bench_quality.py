"""Quality vs hand-made PEFT: MiniLM at full fidelity (or a documented cap), several seeds.

Methods: full fine-tuning (every weight trains, as in ``bench_trial.py``), the named baselines of the
search's initial design (``autopeft.search.initial_design.BASELINES``: LoRA r8 on query/value, Pfeiffer
serial adapter, parallel adapter, prefix 30, MAM = prefix 30 + parallel FFN adapter; bottleneck sizes
given for a 768-wide model are scaled to MiniLM's 384, e.g. Pfeiffer 48 -> 24), IA3 and BitFit
(PEFT's default targets), all as search-space points built by ``autopeft.builders``; and the best
autopeft configurations within 0.1 % and 1 % of the model's parameters.

The autopeft configurations come from search runs: ``--from-run RUN_DIR ...`` (e.g. the runs
``bench_search.py`` wrote; each is exported with ``autopeft.export.export_run`` and the runs of the
same task are pooled: the Pareto point with the best search metric within the budget is picked).
Without ``--from-run`` for a task, a small search (``--search-trials``, default sampler, low
fidelity) is run first. They are then retrained here like every other method.

Reported: test metric (GLUE dev / TREC test) mean ± std over seeds; the validation metric (the
selection split) is in the JSON. PEFT methods use ``--lr`` (a point of a space that searches the
learning rate keeps its own), full fine-tuning ``--full-ft-lr``.

    python scripts/bench_quality.py --size quick|full|toy [--out DIR] [--from-run RUN_DIR ...] [overrides]
    -> benchmarks/quality.json and benchmarks/quality.md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_common as C  # noqa: E402

METHODS = ("full", "lora", "pfeiffer", "parallel_adapter", "prefix", "ia3", "bitfit", "mam", "autopeft")
ALL = ",".join(METHODS)
PRESETS = {  # search_fidelity (train examples, length, eval examples, batch): bench_search's low fidelity
    "toy": dict(tasks="rte", methods=ALL, train_examples="16", epochs=1.0, max_length=16, eval_examples=16,
                batch_size=8, seeds=1, budgets="0.1,1", search_trials=2, search_fidelity=(16, 16, 16, 8)),
    "quick": dict(tasks="sst2", methods=ALL, train_examples="1000", epochs=1.0, max_length=0, eval_examples=500,
                  batch_size=16, seeds=2, budgets="0.1,1", search_trials=20, search_fidelity=(256, 32, 256, 8)),
    "full": dict(tasks="sst2,rte,trec", methods=ALL, train_examples="sst2=10000,rte=all,trec=all", epochs=3.0,
                 max_length=0, eval_examples=0, batch_size=32, seeds=3, budgets="0.1,1", search_trials=40,
                 search_fidelity=(500, 64, 500, 16)),
}
LABELS = {"full": "full fine-tuning", "ia3": "IA3 (key, value, FFN out)", "bitfit": "BitFit (all biases)"}


def hand_made(config) -> dict:
    """method -> (label, PeftPoint) for the named baselines, IA3 and BitFit on every layer."""
    from autopeft.modules import get_module_type
    from autopeft.search.initial_design import BASELINES
    from autopeft.space import ModuleChoice, PeftPoint

    layers = range(config.num_hidden_layers)

    def module(kind: str, wish) -> ModuleChoice:
        size = wish.size * config.hidden_size / 768 if wish.scale_with_hidden else wish.size
        return ModuleChoice(kind, dict.fromkeys(layers, max(1, round(size))), tuple(wish.targets or ()),
                            dict(wish.options))

    points = {b.name: (b.description, PeftPoint({kind: module(kind, wish) for kind, wish in b.modules.items()}))
              for b in BASELINES}
    for kind in ("ia3", "bitfit"):
        points[kind] = (LABELS[kind], PeftPoint({kind: ModuleChoice(kind, dict.fromkeys(layers, 1),
                                                                    get_module_type(kind).targets)}))
    return points


def own_search(args, task: str) -> Path:
    from autopeft.search.run import run_search
    from autopeft.search.settings import SearchSettings

    train, length, evaluate, batch = args.search_fidelity  # bench_search's low fidelity
    run_dir = C.runs_dir(args, "quality") / f"{task}-autopeft"
    if (run_dir / "run.json").is_file():
        import shutil

        shutil.rmtree(run_dir)
    run_search(SearchSettings(model="minilm", dataset=C.dataset_path(task), space=C.space_path("autopeft"),
                              trials=args.search_trials, final_seeds=0, train_examples=train, max_length=length,
                              eval_examples=evaluate, batch_size=batch, lr=args.lr, out=str(run_dir)))
    return run_dir


def autopeft_points(run_dirs: list[Path], budgets: list[float], model_params: int) -> list[dict]:
    """The best exported Pareto point within each budget (fraction of the model), pooled over the runs."""
    from autopeft.export import export_run
    from autopeft.space import PeftPoint

    candidates = {}
    for run_dir in run_dirs:
        export, _ = export_run(run_dir)
        pareto = json.loads((export / "pareto.json").read_text())
        metric = pareto["objectives"][0]["name"]
        for entry in pareto["points"]:
            key = json.dumps(entry["point"], sort_keys=True)
            value = entry["values"][metric]
            if key not in candidates or value > candidates[key]["search_metric"]:
                candidates[key] = {"search_metric": value, "params": entry["adapter_params"], "point": entry["point"],
                                   "from": f"{run_dir} {entry['trial']}", "description": entry["description"]}
    chosen = []
    for budget in budgets:
        inside = [c for c in candidates.values() if c["params"] <= budget / 100 * model_params]
        if inside:
            best = max(inside, key=lambda c: c["search_metric"])
            chosen.append({**best, "budget_percent": budget, "peft_point": PeftPoint.from_dict(best["point"])})
        else:
            chosen.append({"budget_percent": budget, "peft_point": None, "from": None,
                           "description": f"no exported Pareto point within {budget} %"})
    return chosen


def run_task(args, task: str, from_runs: list[Path]) -> tuple[list[dict], list[dict]]:
    from bench_trial import full_finetuning

    from autopeft.search.run import read_run_info
    from autopeft.space import count_model_params
    from autopeft.trial import Fidelity, TrainingConfig

    data, base = C.load(task)
    model_params = count_model_params(base.config)
    caps = C.per_task(args.train_examples, [task])
    fidelity = Fidelity(train_examples=caps[task], epochs=args.epochs, max_length=args.max_length or C.TASKS[task][1],
                        eval_examples=args.eval_examples or None, batch_size=args.batch_size)
    methods = C.csv(args.methods)
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise SystemExit(f"unknown method(s) {sorted(unknown)} (choose from: {', '.join(METHODS)})")
    made = hand_made(base.config)
    entries = [(m, *made[m]) for m in methods if m not in ("full", "autopeft")]
    picked = []
    if "autopeft" in methods:
        runs = [r for r in from_runs if Path(read_run_info(r).settings["dataset"]).name == C.TASKS[task][0]]
        if not runs and args.search_trials:
            runs = [own_search(args, task)]
        picked = autopeft_points(runs, [float(b) for b in C.csv(args.budgets)], model_params)
        entries += [("autopeft", f"autopeft ≤{p['budget_percent']:g} %", p["peft_point"]) for p in picked
                    if p["peft_point"] is not None]
    needs_heads = any(m.type == "lofit" for _, _, point in entries for m in point.modules.values())
    evaluator = C.runner_evaluator(base, data, args.lr, fidelity.max_length if needs_heads else None)
    rows = []
    for seed in range(args.seeds):
        jobs = ([("full", LABELS["full"], None)] if "full" in methods else []) + entries
        for method, label, point in jobs:
            if point is None:
                result = evaluator.runner.run(full_finetuning, fidelity, seed,
                                              TrainingConfig(learning_rate=args.full_ft_lr), evaluate_test=True)
            else:
                result = evaluator(point, fidelity, seed, evaluate_test=True)
            metric = data.spec.metric
            rows.append({"task": task, "method": method, "label": label,
                         "configuration": point.describe() if point is not None else "every weight", "seed": seed,
                         "status": result.status, "reason": result.reason, "metric": metric,
                         "test": result.test_metrics.get(metric), "validation": result.metrics.get(metric),
                         "adapter_params": result.adapter_params, "trainable_params": result.trainable_params,
                         "percent_of_model": 100 * result.adapter_params / model_params,
                         "train_examples": result.train_examples, "train_s": round(result.train_seconds, 2),
                         "wall_s": round(result.wall_seconds, 2)})
            print(json.dumps(rows[-1]), flush=True)
    for entry in picked:
        entry.pop("peft_point")
    return rows, [{"task": task, **p} for p in picked]


def summarise(rows: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["task"], row["label"]), []).append(row)
    table = []
    for (task, _), members in groups.items():
        ok = [m for m in members if m["status"] == "ok"]
        first = ok[0] if ok else members[0]  # a failed trial has no parameter count
        table.append({"task": task, "method": first["method"], "label": first["label"],
                      "configuration": first["configuration"], "metric": first["metric"], "seeds": len(members),
                      "ok": len(ok), "test": C.mean_std([m["test"] for m in ok]),
                      "validation": C.mean_std([m["validation"] for m in ok]),
                      "adapter_params": first["adapter_params"], "trainable_params": first["trainable_params"],
                      "percent_of_model": first["percent_of_model"],
                      "train_s": C.mean_std([m["train_s"] for m in ok])[0]})
    return table


def markdown(args, data: dict) -> list[str]:
    caps = C.per_task(args.train_examples, C.csv(args.tasks))
    sizes = ", ".join(f"{t} {n if n else 'whole train split'}" for t, n in caps.items())
    lengths = args.max_length or "per task (" + ", ".join(f"{t} {C.TASKS[t][1]}" for t in caps) + ")"
    lines = ["# Quality vs hand-made PEFT (MiniLM)", "",
             f"Training: {sizes} examples × {args.epochs:g} epoch(s), length {lengths}, "
             f"batch {args.batch_size}, lr {args.lr} (PEFT) / {args.full_ft_lr} (full fine-tuning); "
             f"{args.eval_examples or 'all'} evaluation examples per split; seeds 0..{args.seeds - 1}. "
             "Metric: the reported split (GLUE dev, TREC test), mean ± std over seeds. Params: trainable parameters "
             "without the task head, and their share of the base model. autopeft rows: the best exported Pareto point "
             f"of the search runs within the budget ({data['autopeft_source']}), retrained here.", ""]
    for task in C.csv(args.tasks):
        rows = [r for r in data["summary"] if r["task"] == task]
        if not rows:
            continue
        lines += [f"## {task}", ""]
        lines += C.table(
            ["method", "configuration", f"{rows[0]['metric']} (mean ± std)", "trainable params", "% of model",
             "train s", "seeds ok"],
            [[r["label"], r["configuration"], C.cell(r["test"], r["ok"], 4), f"{r['adapter_params']:,}",
              f"{r['percent_of_model']:.3f}", C.fmt(r["train_s"], 1), f"{r['ok']}/{r['seeds']}"] for r in rows])
        lines.append("")
        for pick in data["autopeft"]:
            if pick["task"] == task:
                source = f" (search metric {pick['search_metric']:.4f}: `{pick['from']}`)" if pick["from"] else ""
                lines.append(f"- autopeft ≤{pick['budget_percent']:g} %: {pick['description']}{source}")
        lines.append("")
    failed = [r for r in data["rows"] if r["status"] != "ok"]
    if failed:
        lines.append("Failed runs: " + "; ".join(f"{r['task']} {r['label']} seed {r['seed']}: {r['reason']}"
                                                 for r in failed))
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", help=f"comma-separated: {', '.join(C.TASKS)}")
    parser.add_argument("--methods", help=f"comma-separated: {', '.join(METHODS)}")
    parser.add_argument("--train-examples", help="'2000' for every task or 'sst2=20000,rte=all'")
    parser.add_argument("--epochs", type=float)
    parser.add_argument("--max-length", type=int, help="0: per task (sst2 64, rte 128, trec 64)")
    parser.add_argument("--eval-examples", type=int, help="cap per evaluated split; 0: all")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--budgets", help="autopeft budgets in %% of the model's parameters")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--full-ft-lr", type=float, default=5e-5)
    parser.add_argument("--from-run", type=Path, nargs="+", default=[], help="search run folders to take autopeft from")
    parser.add_argument("--search-trials", type=int, help="trials of the search run when no --from-run fits a task "
                                                          "(0: no autopeft rows then)")
    parser.add_argument("--runs", type=Path, help="folder for that search (default runs/bench-<size>/quality)")
    args = C.parse_args(parser, PRESETS, argv, "quality")
    started = time.perf_counter()
    C.quiet()
    rows, picks = [], []
    for task in C.csv(args.tasks):
        task_rows, task_picks = run_task(args, task, args.from_run)
        rows += task_rows
        picks += task_picks
    source = ("runs " + ", ".join(f"`{r}`" for r in args.from_run)) if args.from_run else \
        f"a {args.search_trials}-trial search of space `autopeft` made by this script"
    data = {"autopeft_source": source, "autopeft": picks, "rows": rows, "summary": summarise(rows)}
    C.write(args, data, markdown(args, data), started)


if __name__ == "__main__":
    main()

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

Size medium (issue 17's evidence, per task: ``--tasks sst2``; tasks merge into
``benchmarks/medium/quality.json``): full fine-tuning's learning rate is picked first by a small
sweep (``--full-ft-lrs``, seed 0, best validation metric); PEFT methods train at each module type's
own rate (``--lr`` unset), as ``autopeft search`` does; the autopeft rows come from one search per
budget (``--budgets lora,1``: LoRA r8's parameter count, and 1 % of the model) run here with the
defaults a user gets (default space, ``--fidelity auto``, default trials and sampler), its full
fidelity being this benchmark's training, ``--max-params`` the budget and no final stage (the rows
below retrain the pick with every seed). Each search's cost is reported as a ratio to one
full-fidelity LoRA r8 training measured in the same run (wall seconds of the whole search / mean
wall seconds of the LoRA r8 rows), with its rung agreement and whether a trivial point reached
its front.

    python scripts/bench_quality.py --size quick|full|toy|medium [--out DIR] [--from-run RUN_DIR ...] [overrides]
    -> benchmarks/quality.json and benchmarks/quality.md (medium: benchmarks/medium/)
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
    "medium": dict(tasks="sst2,rte,trec", methods="full,lora,pfeiffer,autopeft",
                   train_examples="sst2=3000,rte=all,trec=3000", epochs=2.0, max_length=0, eval_examples=500,
                   batch_size=16, seeds=3, budgets="lora,1", search_trials=0, search_fidelity=None,
                   full_ft_lrs="2e-5,5e-5,1e-4", default_search=True),
}
YES_NO = {True: "yes", False: "no", None: "–"}
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


def default_search(args, task: str, fidelity, budget: int, label: str, **settings) -> dict:
    """A search as a user runs it (default space, --fidelity auto, default trials/sampler, per-type learning rates)
    whose full fidelity is this benchmark's training and whose --max-params is ``budget``; a final stage with
    ``--search-final-seeds`` seeds (0: none, the pick is then the top rung's one-seed result).
    ``settings``: more search settings (e.g. ``prior=["oneshot"]``)."""
    import shutil

    from autopeft.search import records as R
    from autopeft.search.results import load_results
    from autopeft.search.run import run_search
    from autopeft.search.settings import SearchSettings

    run_dir = C.runs_dir(args, "quality") / f"{task}-default-{label}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    final_seeds = getattr(args, "search_final_seeds", 0) or 0   # bench_oneshot's searches have no such option
    options = dict(model="minilm", dataset=C.dataset_path(task), final_seeds=final_seeds,
                   max_params=budget,
                   train_examples=fidelity.train_examples, epochs=fidelity.epochs, max_length=fidelity.max_length,
                   eval_examples=fidelity.eval_examples, batch_size=fidelity.batch_size, out=str(run_dir))
    if args.search_trials:
        options["trials"] = args.search_trials
    if args.lr is not None:
        options["lr"] = args.lr
    options.update(settings)
    started = time.perf_counter()
    run_search(SearchSettings.model_validate(options))
    seconds = time.perf_counter() - started
    results = load_results(run_dir)
    trained = [r for r in results.all_records if r.trained and R.RESULT in r.attrs]
    by_stage = {stage: sum(1 for r in records if r.trained) for stage, records in results.stages.items()}
    study_attrs = _study_attrs(run_dir)
    return {"run": str(run_dir), "budget": budget, "label": label, "seconds": round(seconds, 1), "commit": C.COMMIT,
            "final_seeds": options["final_seeds"],
            "trial_seconds": round(sum(r.attrs[R.RESULT]["wall_seconds"] for r in trained), 1),
            "trained_per_stage": by_stage, "first_rung": study_attrs.get(R.FIRST_RUNG_ATTR, 0),
            "agreement": study_attrs.get(R.AGREEMENT_ATTR, []),
            "trivial_trials": sum(1 for r in trained if r.trivial),
            "front_stage": results.front_stage, "front_size": len(results.front),
            "trivial_on_front": sum(1 for r in results.front if r.trivial),
            "any_nontrivial": any(not r.trivial and r.complete for r in trained)}


def _study_attrs(run_dir: Path) -> dict:
    """The rung-0 study's user attributes (first rung, rung agreement) of a run."""
    import optuna

    from autopeft.search import records as R
    from autopeft.search.run import read_run_info

    info = read_run_info(run_dir)
    study = optuna.load_study(study_name=R.rung_study_name(info.study_name, 0), storage=info.open_storage())
    return dict(study.user_attrs)


def autopeft_points(run_dirs: list[Path], budgets: list[float], model_params: int) -> list[dict]:
    """The best exported Pareto point within each budget (fraction of the model), pooled over the runs.
    ``search_metric`` is the first objective's value signed so that higher is better (a minimised one negated)."""
    from autopeft.export import export_run
    from autopeft.search.results import load_results
    from autopeft.space import PeftPoint

    candidates = {}
    for run_dir in run_dirs:
        if not load_results(run_dir).front:  # every trial trivial: the run has no Pareto point (export refuses it)
            print(f"note: {run_dir} has no Pareto front (every trial trivial or failed); it offers no point",
                  file=sys.stderr)
            continue
        export, _ = export_run(run_dir)
        pareto = json.loads((export / "pareto.json").read_text())
        metric = pareto["objectives"][0]["name"]
        sign = -1.0 if pareto["objectives"][0].get("direction") == "minimize" else 1.0  # eval_loss: lower is better
        for entry in pareto["points"]:
            key = json.dumps(entry["point"], sort_keys=True)
            value = sign * entry["values"][metric]
            if key not in candidates or value > candidates[key]["search_metric"]:
                candidates[key] = {"search_metric": value, "params": entry["adapter_params"], "point": entry["point"],
                                   "from": f"{run_dir} {entry['trial']}", "description": entry["description"]}
    chosen = []
    for budget in budgets:
        # + 0.5: a budget given as a count (LoRA r8's) reaches here as a share of the model, rounded
        inside = [c for c in candidates.values() if c["params"] <= budget / 100 * model_params + 0.5]
        if inside:
            best = max(inside, key=lambda c: c["search_metric"])
            chosen.append({**best, "budget_percent": budget, "peft_point": PeftPoint.from_dict(best["point"])})
        else:
            chosen.append({"budget_percent": budget, "peft_point": None, "from": None,
                           "description": f"no exported Pareto point within {budget} %"})
    return chosen


REUSABLE = ("full", "pfeiffer")   # methods whose rows a change to search or LoRA cannot move
SAME_TRAINING = ("train_examples", "epochs", "max_length", "eval_examples", "batch_size", "seeds", "full_ft_lrs",
                 "full_ft_lr", "lr")


def reused_rows(args, task: str) -> tuple[list[dict], dict]:
    """The rows of ``--reuse`` methods for ``task`` from the earlier ``OUT/quality.json`` (and, when full fine-tuning
    is reused, its learning-rate sweep): a re-run after a change that cannot move them (a new LoRA rate, a search
    default) retrains only what it can change. Refused unless the earlier run trained exactly as this one would."""
    methods = C.csv(args.reuse) if args.reuse else []
    if not methods:
        return [], {}
    unknown = set(methods) - set(REUSABLE)
    if unknown:
        raise SystemExit(f"--reuse: {sorted(unknown)} cannot be reused (only {', '.join(REUSABLE)})")
    path = args.out / "quality.json"
    if not path.is_file():
        raise SystemExit(f"--reuse: no earlier {path} to take rows from")
    earlier = json.loads(path.read_text())
    differs = [k for k in SAME_TRAINING if earlier.get("settings", {}).get(k) != getattr(args, k, None)]
    if earlier.get("size") != args.size or differs:
        raise SystemExit(f"--reuse: {path} was trained differently ({', '.join(differs) or 'size'}); run without it")
    rows = [{**r, "reused": True} for r in earlier.get("rows", []) if r["task"] == task and r["method"] in methods]
    missing = [m for m in methods if len([r for r in rows if r["method"] == m]) != args.seeds]
    if missing:
        raise SystemExit(f"--reuse: {path} lacks {task}'s {', '.join(missing)} rows for {args.seeds} seeds")
    extra = {}
    if "full" in methods:
        extra["full_ft_sweep"] = [x for x in earlier.get("full_ft_sweep", []) if x["task"] == task]
        extra["full_ft_lr"] = next(x["full_ft_lr"] for x in earlier.get("per_task", []) if x["task"] == task)
    return rows, extra


def run_task(args, task: str, from_runs: list[Path],
             reuse: tuple[list[dict], dict] = ([], {})) -> tuple[list[dict], list[dict]]:
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
    reused, earlier = reuse
    reused_methods = {r["method"] for r in reused}
    made = hand_made(base.config)
    entries = [(m, *made[m]) for m in methods if m not in ("full", "autopeft", *reused_methods)]
    picked, searches = [], []
    if "autopeft" in methods and args.default_search:
        from autopeft.space import count_trainable_params

        for budget in C.csv(args.budgets):
            count = (count_trainable_params(made["lora"][1], base.config) if budget == "lora"
                     else int(float(budget) / 100 * model_params))
            label = "lora" if budget == "lora" else f"{float(budget):g}pct"
            search = default_search(args, task, fidelity, count, label)
            searches.append({"task": task, **search})
            print(json.dumps(searches[-1]), flush=True)
            for pick in autopeft_points([Path(search["run"])], [100 * count / model_params], model_params):
                pick["budget_label"] = "LoRA r8's parameters" if budget == "lora" else f"{float(budget):g} %"
                picked.append(pick)
        entries += [("autopeft", f"autopeft ≤ {p['budget_label']}", p["peft_point"]) for p in picked
                    if p["peft_point"] is not None]
    elif "autopeft" in methods:
        runs = [r for r in from_runs if Path(read_run_info(r).settings["dataset"]).name == C.TASKS[task][0]]
        if not runs and args.search_trials:
            runs = [own_search(args, task)]
        picked = autopeft_points(runs, [float(b) for b in C.csv(args.budgets)], model_params)
        entries += [("autopeft", f"autopeft ≤{p['budget_percent']:g} %", p["peft_point"]) for p in picked
                    if p["peft_point"] is not None]
    needs_heads = any(m.type == "lofit" for _, _, point in entries for m in point.modules.values())
    evaluator = C.runner_evaluator(base, data, args.lr, fidelity.max_length if needs_heads else None)
    full_ft_lr, sweep = earlier.get("full_ft_lr", args.full_ft_lr), earlier.get("full_ft_sweep", [])
    if "full" in methods and "full" not in reused_methods and getattr(args, "full_ft_lrs", None):
        for lr in (float(x) for x in C.csv(args.full_ft_lrs)):
            result = evaluator.runner.run(full_finetuning, fidelity, 0, TrainingConfig(learning_rate=lr))
            sweep.append({"task": task, "lr": lr, "status": result.status,
                          "validation": result.metrics.get(data.spec.metric), "wall_s": round(result.wall_seconds, 1)})
            print(json.dumps(sweep[-1]), flush=True)
        scored = [x for x in sweep if x["validation"] is not None]
        if scored:
            full_ft_lr = max(scored, key=lambda x: x["validation"])["lr"]
    rows = list(reused)
    for seed in range(args.seeds):
        retrain_full = "full" in methods and "full" not in reused_methods
        jobs = ([("full", LABELS["full"], None)] if retrain_full else []) + entries
        for method, label, point in jobs:
            if point is None:
                result = evaluator.runner.run(full_finetuning, fidelity, seed,
                                              TrainingConfig(learning_rate=full_ft_lr), evaluate_test=True)
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
                         "wall_s": round(result.wall_seconds, 2), "commit": C.COMMIT})
            print(json.dumps(rows[-1]), flush=True)
    for entry in picked:
        entry.pop("peft_point")
    lora_wall = C.mean_std([r["wall_s"] for r in rows if r["method"] == "lora" and r["status"] == "ok"])[0]
    for search in searches:
        search["cost_vs_lora_r8"] = round(search["seconds"] / lora_wall, 2) if lora_wall else None
    extra = {"full_ft_sweep": sweep, "full_ft_lr": full_ft_lr, "searches": searches, "lora_r8_wall_s": lora_wall}
    return rows, [{"task": task, **p} for p in picked], extra


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


def verdicts(summary: list[dict]) -> list[dict]:
    """Per task: autopeft within LoRA r8's parameters vs LoRA r8, and autopeft within 1 % vs full fine-tuning - 0.5
    points (issue 17's goals), on the reported split's mean over seeds."""
    out = []
    for task in sorted({r["task"] for r in summary}):
        rows = {r["label"]: r for r in summary if r["task"] == task}
        lora = next((r for r in rows.values() if r["method"] == "lora"), None)
        full = next((r for r in rows.values() if r["method"] == "full"), None)
        small = rows.get("autopeft ≤ LoRA r8's parameters")
        large = rows.get("autopeft ≤ 1 %")

        def mean(row):
            return row["test"][0] if row and row["test"] and row["test"][0] is not None else None
        out.append({"task": task, "autopeft_small": mean(small), "lora_r8": mean(lora),
                    "beats_lora_r8": (mean(small) > mean(lora)) if None not in (mean(small), mean(lora)) else None,
                    "autopeft_1pct": mean(large), "full_ft": mean(full),
                    "within_half_point_of_full_ft": (mean(large) >= mean(full) - 0.005)
                    if None not in (mean(large), mean(full)) else None})
    return out


def markdown(args, data: dict) -> list[str]:
    shown = [t for t in C.TASKS if any(r["task"] == t for r in data["summary"])] or C.csv(args.tasks)  # merged too
    caps = C.per_task(args.train_examples, shown)
    sizes = ", ".join(f"{t} {n if n else 'whole train split'}" for t, n in caps.items())
    lengths = args.max_length or "per task (" + ", ".join(f"{t} {C.TASKS[t][1]}" for t in caps) + ")"
    lines = ["# Quality vs hand-made PEFT (MiniLM)", "",
             f"Training: {sizes} examples × {args.epochs:g} epoch(s), length {lengths}, "
             f"batch {args.batch_size}, lr {args.lr or 'of each module type (autopeft/modules/)'} (PEFT) / "
             + (f"{args.full_ft_lr} (full fine-tuning); " if not args.full_ft_lrs
                else "the best of a sweep over " + args.full_ft_lrs + " (full fine-tuning, below); ")
             +
             f"{args.eval_examples or 'all'} evaluation examples per split; seeds 0..{args.seeds - 1}. "
             "Metric: the reported split (GLUE dev, TREC test), mean ± std over seeds. Params: trainable parameters "
             "without the task head, and their share of the base model. autopeft rows: the best exported Pareto point "
             f"of the search runs within the budget ({data['autopeft_source']}), retrained here.", ""]
    for task in shown:
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
                name = (f"autopeft ≤ {pick['budget_label']}" if pick.get("budget_label")
                        else f"autopeft ≤{pick['budget_percent']:g} %")
                lines.append(f"- {name}: {pick['description']}{source}")
        lines.append("")
    if data.get("full_ft_sweep"):
        lines += ["## Full fine-tuning: learning-rate sweep (seed 0, validation)", ""]
        lines += C.table(["task", "lr", "validation", "wall s"],
                         [[x["task"], f"{x['lr']:g}", C.fmt(x["validation"]), C.fmt(x["wall_s"], 1)]
                          for x in data["full_ft_sweep"]])
        lines += [""]
    if data.get("searches"):
        lines += ["## The searches behind the autopeft rows", "",
                  "Cost: the whole search's wall time / one full-fidelity LoRA r8 training (mean wall time of its rows "
                  "here). ρ: Spearman between consecutive rungs over the promoted configurations.", ""]
        walls = {x["task"]: x["lora_r8_wall_s"] for x in data.get("per_task", [])}
        lines += C.table(["task", "budget", "cost (× LoRA r8)", "search s", "trained per stage", "final seeds",
                          "first rung", "rung ρ (n)", "trivial trials", "trivial on front", "commit"],
                         [[x["task"], f"{x['budget']:,} ({x['label']})", C.fmt(x.get("cost_vs_lora_r8"), 2),
                           C.fmt(x["seconds"], 0),
                           ", ".join(f"{k} {v}" for k, v in sorted(x["trained_per_stage"].items())),
                           x.get("final_seeds", 0), x["first_rung"],
                           "; ".join(f"{a.get('lower')}→{a.get('upper')}: {C.fmt(a.get('rho'), 2)} ({a.get('n')})"
                                     for a in x["agreement"]) or "–",
                           x["trivial_trials"], x["trivial_on_front"], x.get("commit") or "–"]
                          for x in data["searches"]])
        lines += ["", "LoRA r8 full-fidelity wall s per task: "
                  + ", ".join(f"{t} {C.fmt(w, 1)}" for t, w in walls.items()), ""]
    if data.get("verdicts"):
        lines += ["## Goals (issue 17)", ""]
        lines += C.table(["task", "autopeft ≤ LoRA r8 params", "LoRA r8", "beats LoRA r8", "autopeft ≤ 1 %",
                          "full fine-tuning", "≥ full FT − 0.5 pt"],
                         [[v["task"], C.fmt(v["autopeft_small"], 4), C.fmt(v["lora_r8"], 4), YES_NO[v["beats_lora_r8"]],
                           C.fmt(v["autopeft_1pct"], 4), C.fmt(v["full_ft"], 4),
                           YES_NO[v["within_half_point_of_full_ft"]]] for v in data["verdicts"]])
        lines += [""]
    reused = sorted({(r["task"], r["label"], r.get("commit") or "not recorded") for r in data["rows"]
                     if r.get("reused")})
    if reused:
        lines.append("Rows taken from an earlier run with the same training (`--reuse`; the code they depend on "
                     "unchanged since): " + "; ".join(f"{t} {label} (trained at commit {c})" for t, label, c in reused)
                     + ".")
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
    parser.add_argument("--lr", type=float, help="one rate for every PEFT method (default: 3e-3; size medium: each "
                                                 "module type's own rate, as autopeft search)")
    parser.add_argument("--full-ft-lr", type=float, default=5e-5)
    parser.add_argument("--full-ft-lrs", help="sweep these full fine-tuning rates first (seed 0, validation) and use "
                                              "the best (size medium: 2e-5,5e-5,1e-4)")
    parser.add_argument("--from-run", type=Path, nargs="+", default=[], help="search run folders to take autopeft from")
    parser.add_argument("--search-trials", type=int, help="trials of the search run when no --from-run fits a task "
                                                          "(0: no autopeft rows then)")
    parser.add_argument("--default-search", action="store_true", default=None,
                        help="autopeft rows from one search per budget with autopeft search's defaults (size medium)")
    parser.add_argument("--search-final-seeds", type=int, default=0,
                        help="with --default-search: the searches' final stage re-trains their front with this many "
                             "seeds and the pick is by the seeds' mean (autopeft search's default is 3; 0: none)")
    parser.add_argument("--runs", type=Path, help="folder for that search (default runs/bench-<size>/quality)")
    parser.add_argument("--reuse", help=f"comma-separated, of {', '.join(REUSABLE)}: take these methods' rows (and "
                                        "full fine-tuning's sweep) from the earlier OUT/quality.json instead of "
                                        "retraining them; refused unless it trained the same way")
    args = C.parse_args(parser, PRESETS, argv, "quality")
    if args.lr is None and args.size != "medium":
        args.lr = 3e-3
    started = time.perf_counter()
    C.quiet()
    rows, picks, sweeps, searches, lora_walls = [], [], [], [], []
    reuse = {task: reused_rows(args, task) for task in C.csv(args.tasks)}   # refused before any model loads
    for task in C.csv(args.tasks):
        task_rows, task_picks, extra = run_task(args, task, args.from_run, reuse[task])
        rows += task_rows
        picks += task_picks
        sweeps += extra["full_ft_sweep"]
        searches += extra["searches"]
        lora_walls.append({"task": task, "lora_r8_wall_s": extra["lora_r8_wall_s"], "full_ft_lr": extra["full_ft_lr"]})
    if args.default_search:
        source = "one search per budget made by this script with autopeft search's defaults"
    elif args.from_run:
        source = "runs " + ", ".join(f"`{r}`" for r in args.from_run)
    else:
        source = f"a {args.search_trials}-trial search of space `autopeft` made by this script"
    data = {"autopeft_source": source, "autopeft": picks, "rows": rows, "summary": summarise(rows),
            "full_ft_sweep": sweeps, "searches": searches, "per_task": lora_walls}
    if args.size == "medium":
        data = C.merge_tasks(args, data, ("autopeft", "rows", "full_ft_sweep", "searches", "per_task"))
        data["summary"] = summarise(data["rows"])
        data["verdicts"] = verdicts(data["summary"])
    C.write(args, data, markdown(args, data), started)


if __name__ == "__main__":
    main()

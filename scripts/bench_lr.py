"""Learning rate per module type: a sweep around each type's declared default (MiniLM, short budgets).

One baseline-like point per module type (LoRA r8 on query/value, Pfeiffer serial adapter, parallel FFN adapter with
scaling 4, prefix 30, IA3, BitFit, LN tuning, sparse at density 0.005; bottleneck sizes given for a 768-wide model
are scaled to MiniLM's 384), each trained at a log grid of rates: the type's default times ``--step`` to the powers
-k..k (``--rates`` = 2k+1 values), clipped to the type's [low, high] (``autopeft/modules/``). The rate reaches the
point as its module's ``lr``, so the trial trains exactly as a search's per-module groups do (the head at the same
rate). LoFiT is left out: its points need a head ranking, a training of its own per task (``bench_lofit.py``).

Reported per type and task: the validation metric mean ± std over seeds at every rate, the best rate (bold), and
whether the declared default is within the best's noise: best − default ≤ sqrt(std_best² + std_default²) over
seeds, or with one seed 1.4 × the binomial standard error of the best's accuracy on the evaluated examples.

    python scripts/bench_lr.py --size toy|quick|medium [--out DIR] [--tasks sst2,rte] [--types lora,prefix] ...
    -> benchmarks/lr.json and benchmarks/lr.md
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

TYPES = ("lora", "serial_adapter", "parallel_adapter", "prefix", "ia3", "bitfit", "ln_tuning", "sparse")
ALL = ",".join(TYPES)
# medium: 800 examples x 1 epoch at batch 16 = 50 steps, the low end of a search's full fidelity, on SST-2 and
# TREC (length 64; a sentence-pair task such as RTE needs far more steps than 50 to leave the majority class, so
# it would not rank rates at this budget); 2 seeds x 5 rates x 8 types
PRESETS = {
    "toy": dict(tasks="rte", types="lora,prefix", train_examples="16", epochs=1.0, max_length=16, eval_examples=16,
                batch_size=8, seeds=1, rates=2, step=3.0),
    "quick": dict(tasks="sst2", types=ALL, train_examples="500", epochs=1.0, max_length=0, eval_examples=300,
                  batch_size=16, seeds=1, rates=5, step=3.0),
    "medium": dict(tasks="sst2,trec", types=ALL, train_examples="800", epochs=1.0, max_length=0, eval_examples=300,
                   batch_size=16, seeds=2, rates=5, step=3.0),
}
LABELS = {"lora": "LoRA r8 q/v", "serial_adapter": "serial adapter (Pfeiffer, 48@768)",
          "parallel_adapter": "parallel adapter (FFN, 48@768, scaling 4)", "prefix": "prefix 30",
          "ia3": "IA3", "bitfit": "BitFit", "ln_tuning": "LN tuning", "sparse": "sparse 0.5 %"}


def rate_grid(kind: str, count: int, step: float) -> list[float]:
    """``count`` rates around the type's default, ``step`` apart on a log scale, clipped to its [low, high]; the
    default is always one of them (an even ``count`` leans to the higher side)."""
    from autopeft.modules import get_module_type

    prior = get_module_type(kind).learning_rate
    below = (count - 1) // 2
    rates = [min(max(prior.default * step ** k, prior.low), prior.high) for k in range(-below, count - below)]
    return sorted({float(f"{r:.2g}") if r != prior.default else r for r in rates})


def point_for(kind: str, config, lr: float):
    """The type's baseline-like point on every layer, training at ``lr``."""
    from autopeft.modules import get_module_type
    from autopeft.space import ModuleChoice, PeftPoint

    layers = range(config.num_hidden_layers)
    scaled = max(1, round(48 * config.hidden_size / 768))
    sizes = {"lora": 8, "serial_adapter": scaled, "parallel_adapter": scaled, "prefix": 30, "sparse": 0.005}
    options = {"lora": {"alpha": 2.0}, "serial_adapter": {"location": "ffn"},
               "parallel_adapter": {"location": "ffn", "scaling": 4.0}}.get(kind, {})
    targets = ("query", "value") if kind == "lora" else get_module_type(kind).targets or ()
    return PeftPoint({kind: ModuleChoice(kind, dict.fromkeys(layers, sizes.get(kind, 1)), tuple(targets),
                                         options, lr)})


def run_task(args, task: str) -> list[dict]:
    from autopeft.trial import Fidelity

    data, base = C.load(task)
    caps = C.per_task(args.train_examples, [task])
    fidelity = Fidelity(train_examples=caps[task], epochs=args.epochs, max_length=args.max_length or C.TASKS[task][1],
                        eval_examples=args.eval_examples or None, batch_size=args.batch_size)
    evaluator = C.runner_evaluator(base, data, None)   # no --lr: each point's module rate
    rows = []
    for kind in C.csv(args.types):
        if kind not in TYPES:
            raise SystemExit(f"unknown module type {kind!r} (choose from: {ALL})")
        for lr in rate_grid(kind, args.rates, args.step):
            point = point_for(kind, base.config, lr)
            for seed in range(args.seeds):
                result = evaluator(point, fidelity, seed)
                metric = data.spec.metric
                rows.append({"task": task, "type": kind, "lr": lr, "seed": seed, "status": result.status,
                             "reason": result.reason, "metric": metric, "validation": result.metrics.get(metric),
                             "eval_examples": result.eval_examples, "steps": result.steps,
                             "adapter_params": result.adapter_params, "train_s": round(result.train_seconds, 2)})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Per (task, type): every rate's mean ± std, the best rate, and whether the default is within its noise."""
    from autopeft.modules import get_module_type

    table = []
    for task, kind in dict.fromkeys((r["task"], r["type"]) for r in rows):
        members = [r for r in rows if r["task"] == task and r["type"] == kind]
        per_rate = []
        for lr in sorted({r["lr"] for r in members}):
            at = [r for r in members if r["lr"] == lr]
            ok = [r["validation"] for r in at if r["status"] == "ok" and r["validation"] is not None]
            mean, std = C.mean_std(ok)
            per_rate.append({"lr": lr, "mean": mean, "std": std, "ok": len(ok), "runs": len(at),
                             "eval_examples": max((r["eval_examples"] or 0) for r in at)})
        scored = [p for p in per_rate if p["mean"] is not None]
        default = get_module_type(kind).learning_rate.default
        entry = {"task": task, "type": kind, "default_lr": default, "rates": per_rate, "best_lr": None,
                 "default_within_noise": None}
        if scored:
            best = max(scored, key=lambda p: p["mean"])
            at_default = next((p for p in scored if p["lr"] == default), None)
            entry["best_lr"] = best["lr"]
            if at_default is not None:
                if best["ok"] > 1 and at_default["ok"] > 1:
                    noise = math.hypot(best["std"], at_default["std"])
                else:  # one seed: the evaluation's own binomial noise on the two accuracies
                    p, n = min(max(best["mean"], 0.0), 1.0), max(best["eval_examples"], 1)
                    noise = math.sqrt(2 * p * (1 - p) / n)
                entry["noise"] = noise
                entry["default_within_noise"] = best["mean"] - at_default["mean"] <= noise
        table.append(entry)
    return table


def markdown(args, data: dict) -> list[str]:
    caps = C.per_task(args.train_examples, C.csv(args.tasks))
    sizes = ", ".join(f"{t} {n if n else 'whole train split'}" for t, n in caps.items())
    lengths = args.max_length or "per task (" + ", ".join(f"{t} {C.TASKS[t][1]}" for t in caps) + ")"
    lines = ["# Learning rate per module type (MiniLM)", "",
             f"Training: {sizes} examples × {args.epochs:g} epoch(s), length {lengths}, batch {args.batch_size}; "
             f"{args.eval_examples or 'all'} validation examples; seeds 0..{args.seeds - 1}. Each type trains at "
             f"{args.rates} rates around its declared default ({args.step:g}× apart, clipped to its range), the head "
             "at the same rate. Cells: validation metric mean ± std over seeds; **bold**: the best rate; "
             "default ✓: the declared default is within the best's noise.", ""]
    for task in C.csv(args.tasks):
        entries = [e for e in data["summary"] if e["task"] == task]
        if not entries:
            continue
        lines += [f"## {task}", ""]
        for entry in entries:
            cells = []
            for rate in entry["rates"]:
                text = C.cell((rate["mean"], rate["std"]), rate["ok"], 3)
                text = f"**{text}**" if rate["lr"] == entry["best_lr"] else text
                mark = " (default)" if rate["lr"] == entry["default_lr"] else ""
                cells.append(f"{rate['lr']:.2g}{mark}: {text}")
            verdict = {True: "✓", False: "✗", None: "–"}[entry["default_within_noise"]]
            best = f"{entry['best_lr']:.2g}" if entry["best_lr"] is not None else "–"
            entry["row"] = [LABELS[entry["type"]], f"{entry['default_lr']:.2g}", best, verdict, "; ".join(cells)]
        lines += C.table(["module type", "default lr", "best lr", "default ✓", "lr: metric"],
                         [e.pop("row") for e in entries])
        lines.append("")
    failed = [r for r in data["rows"] if r["status"] != "ok"]
    if failed:
        lines.append("Failed runs: " + "; ".join(f"{r['task']} {r['type']} lr {r['lr']:.2g} seed {r['seed']}: "
                                                 f"{r['reason']}" for r in failed))
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", help=f"comma-separated: {', '.join(C.TASKS)}")
    parser.add_argument("--types", help=f"comma-separated module types: {ALL}")
    parser.add_argument("--train-examples", help="'800' for every task or 'sst2=1000,rte=all'")
    parser.add_argument("--epochs", type=float)
    parser.add_argument("--max-length", type=int, help="0: per task (sst2 64, rte 128, trec 64)")
    parser.add_argument("--eval-examples", type=int, help="cap on validation examples; 0: all")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--rates", type=int, help="rates per type (around its default)")
    parser.add_argument("--step", type=float, help="factor between neighbouring rates")
    args = C.parse_args(parser, PRESETS, argv, "lr")
    started = time.perf_counter()
    C.quiet()
    rows = []
    for task in C.csv(args.tasks):
        rows += run_task(args, task)
    data = {"rows": rows, "summary": summarise(rows)}
    C.write(args, data, markdown(args, data), started)


if __name__ == "__main__":
    main()

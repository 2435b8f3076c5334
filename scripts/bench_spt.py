"""SPT allocation vs uniform LoRA at equal trainable-parameter budgets (MiniLM; SST-2 and TREC).

The budgets are those of uniform LoRA on query/value in every layer at the given ranks, so the
LoRA baseline matches them exactly; the SPT point (sensitivity map of the task, then SPT's
allocation at that budget) is trained with the same fidelity, learning rate and seeds.

    python scripts/bench_spt.py --size quick|toy [--out DIR] [overrides]
    -> benchmarks/spt.json and benchmarks/spt.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_common as C  # noqa: E402

PRESETS = {
    "toy": dict(tasks="glue_rte", ranks="1", seeds=1, train_examples=16, epochs=1.0, eval_examples=16, max_length=16),
    "quick": dict(tasks="glue_sst2,trec", ranks="1,8", seeds=3, train_examples=1500, epochs=2.0, eval_examples=500,
                  max_length=64),
}


def uniform_lora(rank: int, layers: int):
    from autopeft.space.point import ModuleChoice, PeftPoint

    return PeftPoint({"lora": ModuleChoice("lora", {layer: rank for layer in range(layers)}, ("query", "value"),
                                           {"alpha": 2.0})})


def run(args) -> dict:
    from autopeft.builders import build_adapter
    from autopeft.data import load_task
    from autopeft.models import get_base_model
    from autopeft.priors.sensitivity import compute_sensitivity
    from autopeft.priors.spt import spt_allocation
    from autopeft.space import count_trainable_params
    from autopeft.trial import Fidelity, TrainingConfig, TrialRunner

    fidelity = Fidelity(train_examples=args.train_examples, epochs=args.epochs, max_length=args.max_length,
                        eval_examples=args.eval_examples)
    training = TrainingConfig(learning_rate=args.lr)
    rows, costs = [], {}
    with tempfile.TemporaryDirectory() as folder:
        for task_name in args.tasks.split(","):
            task = load_task(str(C.DATASETS / task_name))
            base = get_base_model("minilm", task.spec.kind, num_labels=task.spec.num_labels)
            start = time.perf_counter()
            smap = compute_sensitivity(base, task, batches=16, batch_size=32, max_length=args.max_length, seed=0)
            costs[task_name] = round(time.perf_counter() - start, 1)
            print(f"{task_name}: sensitivity {costs[task_name]} s", flush=True)
            runner = TrialRunner(base, task)
            for rank in [int(r) for r in args.ranks.split(",")]:
                lora = uniform_lora(rank, base.config.num_hidden_layers)
                budget = count_trainable_params(lora, base.config)
                allocation = spt_allocation(smap.scores, base.config, budget)
                spt = allocation.to_point(Path(folder) / f"{task_name}-{rank}.safetensors")
                for method, point in (("lora", lora), ("spt", spt)):
                    for seed in range(args.seeds):
                        result = runner.run(build_adapter(point, base.config, task.spec.kind), fidelity, seed, training)
                        rows.append({"task": task_name, "budget": budget, "method": method, "seed": seed,
                                     "status": result.status, "metric": task.spec.metric,
                                     "value": result.metrics.get(task.spec.metric),
                                     "adapter_params": result.adapter_params,
                                     "train_seconds": round(result.train_seconds, 1),
                                     "lora_matrices": sum(len(r) for r in allocation.structured.values())
                                     if method == "spt" else 2 * base.config.num_hidden_layers,
                                     "sparse_entries": allocation.sparse_params if method == "spt" else 0})
                        print(json.dumps(rows[-1]), flush=True)
    return {"rows": rows, "sensitivity_seconds": costs}


def markdown(data: dict, args) -> list[str]:
    lines = ["# SPT allocation vs uniform LoRA at equal budgets (MiniLM)", "",
             f"Fidelity: {args.train_examples} training examples × {args.epochs} epoch(s), "
             f"max length {args.max_length}, "
             f"batch 32, lr {args.lr}, {args.eval_examples} dev examples; seeds 0..{args.seeds - 1}. LoRA = rank r on "
             "query/value in all 6 layers (alpha 2r); SPT = sensitivity (16 batches × 32) → LoRA r=8 where c(W) ≥ "
             "P_lora/10, sparse entries elsewhere, at exactly LoRA's parameter count.", "",
             "| task | budget (params) | method | metric (mean ± std) | trainable params | LoRA matrices "
             "| sparse entries |",
             "|---|---:|---|---:|---:|---:|---:|"]
    groups: dict[tuple, list[dict]] = {}
    for row in data["rows"]:
        groups.setdefault((row["task"], row["budget"], row["method"]), []).append(row)
    for (task, budget, method), rows in groups.items():
        values = [r["value"] for r in rows if r["value"] is not None]
        mean = statistics.mean(values) if values else float("nan")
        std = statistics.pstdev(values) if len(values) > 1 else 0.0
        lines.append(f"| {task} | {budget:,} | {method} | {rows[0]['metric']} {mean:.4f} ± {std:.4f} | "
                     f"{rows[0]['adapter_params']:,} | {rows[0]['lora_matrices']} | {rows[0]['sparse_entries']:,} |")
    lines += ["", "Sensitivity pass (16 × 32 examples, fresh head): "
              + ", ".join(f"{task} {seconds} s" for task, seconds in data["sensitivity_seconds"].items()) + "."]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", help="comma-separated dataset folders under shared/datasets")
    parser.add_argument("--ranks", help="comma-separated LoRA ranks: the budgets")
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--train-examples", type=int)
    parser.add_argument("--epochs", type=float)
    parser.add_argument("--eval-examples", type=int)
    parser.add_argument("--max-length", type=int)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = C.parse_args(parser, PRESETS, argv, "spt")
    started = time.perf_counter()
    C.quiet()
    data = run(args)
    C.write(args, data, markdown(data, args), started)


if __name__ == "__main__":
    main()

"""Trial-runner benchmark: MiniLM + LoRA (r=8, query/value) on 2,000 SST-2 examples, 872 dev.

Runs several trials in one process and reports train/eval throughput, the per-trial overhead
(wall time / pure compute of trials 2 and 3; target <= 1.05), peak RSS and dev accuracy. full adds
a trial under bf16 autocast and full fine-tuning on 20,000 examples (the reference anchor).

    python scripts/bench_trial.py --size quick|full|toy [--out DIR] [overrides]
    -> benchmarks/trial.json and benchmarks/trial.md
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_common as C  # noqa: E402

PRESETS = {
    "toy": dict(dataset="glue_rte", train_examples=16, trials=2, epochs=1.0, max_length=16, eval_examples=16,
                bf16_trial=False, full_ft_examples=0),
    "quick": dict(dataset="glue_sst2", train_examples=2000, trials=3, epochs=3.0, max_length=64, eval_examples=0,
                  bf16_trial=False, full_ft_examples=0),
}
PRESETS["full"] = PRESETS["quick"] | dict(bf16_trial=True, full_ft_examples=20000)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", help="dataset folder under shared/datasets, or a path")
    parser.add_argument("--train-examples", type=int)
    parser.add_argument("--trials", type=int)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--epochs", type=float)
    parser.add_argument("--max-length", type=int)
    parser.add_argument("--eval-examples", type=int, help="dev examples scored (0: all)")
    parser.add_argument("--bf16-trial", action=argparse.BooleanOptionalAction,
                        help="add one more trial under bf16 autocast")
    parser.add_argument("--full-ft-examples", type=int,
                        help="also run full fine-tuning on this many examples (lr 5e-5), the reference anchor")
    args = C.parse_args(parser, PRESETS, argv, "trial")
    started = time.perf_counter()
    C.quiet()
    from peft import LoraConfig

    from autopeft.data import load_task
    from autopeft.models import get_base_model
    from autopeft.trial import Fidelity, TrainingConfig, TrialRunner

    dataset = args.dataset if Path(args.dataset).is_dir() else str(C.DATASETS / args.dataset)
    start = time.perf_counter()
    task = load_task(dataset)
    # score on the GLUE dev examples only (the reported split), not the carved validation split
    task = dataclasses.replace(task, validation=task.test, fingerprint=task.fingerprint + ":dev")
    base = get_base_model("minilm", task.spec.kind, num_labels=task.spec.num_labels)
    setup_seconds = time.perf_counter() - start
    runner = TrialRunner(base, task)
    eval_examples = args.eval_examples or None
    fidelity = Fidelity(train_examples=args.train_examples, epochs=args.epochs, max_length=args.max_length,
                        batch_size=32, eval_examples=eval_examples)
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1, target_modules=["query", "value"], task_type="SEQ_CLS")

    runs = []
    settings = [False] * args.trials + ([True] if args.bf16_trial else [])
    for index, bf16 in enumerate(settings):
        result = runner.run(lora, fidelity, seed=index, training=TrainingConfig(learning_rate=args.lr, bf16=bf16))
        if not result.ok:
            raise SystemExit(f"trial {index} failed: {result.reason}")
        compute = result.train_seconds + result.eval_seconds
        runs.append({
            "trial": index + 1, "bf16": bf16, "wall_s": result.wall_seconds, "compute_s": compute,
            "overhead_ratio": result.wall_seconds / compute, "setup_s": result.setup_seconds,
            "train_s": result.train_seconds, "eval_s": result.eval_seconds,
            "train_examples_per_s": result.train_examples_per_second,
            "eval_examples_per_s": result.eval_examples_per_second,
            "dev_accuracy": result.metrics["accuracy"], "adapter_params": result.adapter_params,
            "peak_memory_mb": result.peak_memory_mb,
        })
        print(json.dumps(runs[-1]), flush=True)

    full_ft = None
    if args.full_ft_examples:
        full_fidelity = Fidelity(train_examples=args.full_ft_examples, max_length=args.max_length, batch_size=32,
                                 eval_examples=eval_examples)
        full = runner.run(full_finetuning, full_fidelity, seed=0, training=TrainingConfig(learning_rate=5e-5))
        if not full.ok:
            raise SystemExit(f"full fine-tuning failed: {full.reason}")
        full_ft = {"train_examples": full.train_examples, "train_s": full.train_seconds,
                   "train_examples_per_s": full.train_examples_per_second, "dev_accuracy": full.metrics["accuracy"],
                   "trainable_params": full.trainable_params}
        print(json.dumps(full_ft), flush=True)

    fp32 = [r for r in runs if not r["bf16"]]
    later = fp32[1:3]
    summary = {
        "description": f"trial runner: MiniLM + LoRA r8 (query, value), {Path(dataset).name}",
        "train_examples": args.train_examples,
        "dev_examples": len(TrialRunner.eval_subset(len(task.validation), fidelity)), "max_length": args.max_length,
        "batch_size": 32, "epochs": args.epochs, "learning_rate": args.lr,
        "model_and_data_load_s": setup_seconds,
        "overhead_ratio_trials_2_3": statistics.mean(r["overhead_ratio"] for r in later) if later else None,
        "train_examples_per_s": statistics.mean(r["train_examples_per_s"] for r in fp32),
        "eval_examples_per_s": statistics.mean(r["eval_examples_per_s"] for r in fp32),
        "dev_accuracy_mean": statistics.mean(r["dev_accuracy"] for r in fp32),
        "peak_rss_mb": C.peak_rss_mb(),
        "trials": runs,
        "full_finetuning": full_ft,
    }
    bf16_runs = [r for r in runs if r["bf16"]]
    if bf16_runs:
        summary["bf16_train_speedup"] = bf16_runs[0]["train_examples_per_s"] / summary["train_examples_per_s"]
    C.write(args, summary, markdown(summary), started)


def full_finetuning(model):
    """Every weight trains: the anchor the issue's reference figures were measured with."""
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model


def markdown(summary: dict) -> list[str]:
    lines = [
        "# Trial runner benchmark",
        "",
        f"{summary['description']}; {summary['train_examples']} train examples, {summary['dev_examples']} dev, "
        f"max length {summary['max_length']}, batch {summary['batch_size']}, {summary['epochs']} epoch(s), "
        f"lr {summary['learning_rate']}.",
        "",
        "| trial | bf16 | wall s | compute s | overhead | setup s | train ex/s | eval ex/s | dev acc | peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["trials"]:
        lines.append(
            f"| {r['trial']} | {'yes' if r['bf16'] else 'no'} | {r['wall_s']:.1f} | {r['compute_s']:.1f} | "
            f"{r['overhead_ratio']:.3f} | {r['setup_s']:.2f} | {r['train_examples_per_s']:.1f} | "
            f"{r['eval_examples_per_s']:.1f} | {r['dev_accuracy']:.4f} | {r['peak_memory_mb']:.0f} |"
        )
    lines += [
        "",
        f"- overhead ratio (wall / compute) of trials 2-3: **{summary['overhead_ratio_trials_2_3']:.3f}** "
        "(target <= 1.05)",
        f"- model + data load (once per process): {summary['model_and_data_load_s']:.1f} s",
        f"- peak RSS of the process: {summary['peak_rss_mb']:.0f} MB",
        f"- mean dev accuracy (fp32 trials): {summary['dev_accuracy_mean']:.4f}",
    ]
    if "bf16_train_speedup" in summary:
        lines.append(f"- bf16 autocast train speed-up: {summary['bf16_train_speedup']:.2f}x")
    full = summary.get("full_finetuning")
    if full:
        lines.append(
            f"- full fine-tuning, {full['train_examples']:,} examples, lr 5e-5: "
            f"dev accuracy {full['dev_accuracy']:.4f}, "
            f"{full['train_s']:.0f} s ({full['train_examples_per_s']:.1f} ex/s); reference on this kind of machine: "
            "0.878, 437 s (46 ex/s)")
    return lines


if __name__ == "__main__":
    main()

"""Trial-runner benchmark: MiniLM + LoRA (r=8, query/value) on 2,000 SST-2 examples, 872 dev.

Runs several trials in one process and reports train/eval throughput, the per-trial overhead
(wall time / pure compute of trials 2 and 3; target <= 1.05), peak RSS and dev accuracy.
Writes benchmarks/trial.json and benchmarks/trial.md.

    HF_HUB_OFFLINE=1 python scripts/bench_trial.py [--train-examples 2000] [--trials 3] [--bf16-trial]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from peft import LoraConfig

from autopeft.data import load_task
from autopeft.models import get_base_model
from autopeft.trial import Fidelity, TrainingConfig, TrialRunner

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=str(ROOT.parent / "shared" / "datasets" / "glue_sst2"))
    parser.add_argument("--train-examples", type=int, default=2000)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--bf16-trial", action="store_true", help="add one more trial under bf16 autocast")
    parser.add_argument("--full-ft-examples", type=int, default=0,
                        help="also run full fine-tuning on this many examples (lr 5e-5), the reference anchor")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "trial"))
    args = parser.parse_args()

    start = time.perf_counter()
    task = load_task(args.dataset)
    # score on the 872 GLUE dev examples only (the reported split), not the carved validation split
    task = dataclasses.replace(task, validation=task.test, fingerprint=task.fingerprint + ":dev")
    base = get_base_model("minilm", task.spec.kind, num_labels=task.spec.num_labels)
    setup_seconds = time.perf_counter() - start
    runner = TrialRunner(base, task)
    fidelity = Fidelity(train_examples=args.train_examples, epochs=args.epochs, max_length=64, batch_size=32)
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
        print(json.dumps(runs[-1]))

    full_ft = None
    if args.full_ft_examples:
        full = runner.run(full_finetuning, Fidelity(train_examples=args.full_ft_examples, max_length=64, batch_size=32),
                          seed=0, training=TrainingConfig(learning_rate=5e-5))
        if not full.ok:
            raise SystemExit(f"full fine-tuning failed: {full.reason}")
        full_ft = {"train_examples": full.train_examples, "train_s": full.train_seconds,
                   "train_examples_per_s": full.train_examples_per_second, "dev_accuracy": full.metrics["accuracy"],
                   "trainable_params": full.trainable_params}
        print(json.dumps(full_ft))

    fp32 = [r for r in runs if not r["bf16"]]
    later = fp32[1:3]
    summary = {
        "benchmark": "trial runner: MiniLM + LoRA r8 (query, value), SST-2",
        "train_examples": args.train_examples, "dev_examples": len(task.validation), "max_length": 64,
        "batch_size": 32, "epochs": args.epochs, "learning_rate": args.lr,
        "model_and_data_load_s": setup_seconds,
        "overhead_ratio_trials_2_3": statistics.mean(r["overhead_ratio"] for r in later) if later else None,
        "train_examples_per_s": statistics.mean(r["train_examples_per_s"] for r in fp32),
        "eval_examples_per_s": statistics.mean(r["eval_examples_per_s"] for r in fp32),
        "dev_accuracy_mean": statistics.mean(r["dev_accuracy"] for r in fp32),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "processor": platform.processor() or platform.machine(), "torch": torch.__version__},
        "trials": runs,
        "full_finetuning": full_ft,
    }
    bf16_runs = [r for r in runs if r["bf16"]]
    if bf16_runs:
        summary["bf16_train_speedup"] = bf16_runs[0]["train_examples_per_s"] / summary["train_examples_per_s"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(summary))
    print(markdown(summary))


def full_finetuning(model):
    """Every weight trains: the anchor the issue's reference figures were measured with."""
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model


def markdown(summary: dict) -> str:
    lines = [
        "# Trial runner benchmark",
        "",
        f"{summary['benchmark']}; {summary['train_examples']} train examples, {summary['dev_examples']} dev, "
        f"max length {summary['max_length']}, batch {summary['batch_size']}, {summary['epochs']} epoch(s), "
        f"lr {summary['learning_rate']}; {summary['machine']['cpu_count']} CPU cores, torch {summary['machine']['torch']}.",
        f"Reproduce: `HF_HUB_OFFLINE=1 python scripts/bench_trial.py --bf16-trial --full-ft-examples 20000`.",
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
        f"- overhead ratio (wall / compute) of trials 2-3: **{summary['overhead_ratio_trials_2_3']:.3f}** (target <= 1.05)",
        f"- model + data load (once per process): {summary['model_and_data_load_s']:.1f} s",
        f"- peak RSS of the process: {summary['peak_rss_mb']:.0f} MB",
        f"- mean dev accuracy (fp32 trials): {summary['dev_accuracy_mean']:.4f}",
    ]
    if "bf16_train_speedup" in summary:
        lines.append(f"- bf16 autocast train speed-up: {summary['bf16_train_speedup']:.2f}x")
    full = summary.get("full_finetuning")
    if full:
        lines.append(
            f"- full fine-tuning, {full['train_examples']:,} examples, lr 5e-5: dev accuracy {full['dev_accuracy']:.4f}, "
            f"{full['train_s']:.0f} s ({full['train_examples_per_s']:.1f} ex/s); reference on this kind of machine: "
            "0.878, 437 s (46 ex/s)")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

"""LoFiT with learned top-K heads vs the same K random heads vs LoRA r8 (query/value), same fidelity.

MiniLM on SST-2 and TREC (classification), and SmolLM2-135M SFT on a GSM8K subset (eval loss and
greedy exact match). Step 1 (head selection, `autopeft select-heads`) runs once per task (cached);
step 2 trains offsets on the K best heads. K is a fraction of all heads (default 10 %). full
trains and scores SmolLM2 on more GSM8K examples.

    python scripts/bench_lofit.py --size quick|full|toy [--out DIR] [overrides]
    -> benchmarks/lofit.json and benchmarks/lofit.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_common as C  # noqa: E402

PRESETS = {
    "toy": dict(tasks="minilm:glue_rte", seeds=1, methods="lofit-learned,lora-r8", head_fraction=0.1,
                train_examples=16, epochs=1.0, eval_examples=16, select_epochs=1, select_examples=32,
                lm_train_examples=8, lm_select_examples=8, lm_max_length=32, lm_eval_examples=4,
                lm_generation_examples=1),
    "quick": dict(tasks="minilm:glue_sst2,minilm:trec,smollm2-135m:gsm8k", seeds=3,
                  methods="lofit-learned,lofit-random,lora-r8", head_fraction=0.1, train_examples=1500, epochs=2.0,
                  eval_examples=500, select_epochs=2, select_examples=1000, lm_train_examples=64,
                  lm_select_examples=200, lm_max_length=256, lm_eval_examples=32, lm_generation_examples=8),
}
PRESETS["full"] = PRESETS["quick"] | dict(lm_train_examples=200, lm_eval_examples=64, lm_generation_examples=16)


def fidelity_for(kind: str, args):
    from autopeft.trial import Fidelity

    if kind == "causal_lm":
        return Fidelity(train_examples=args.lm_train_examples, epochs=1, max_length=args.lm_max_length, batch_size=8,
                        eval_examples=args.lm_eval_examples, eval_batch_size=16,
                        generation_examples=args.lm_generation_examples, max_new_tokens=160)
    return Fidelity(train_examples=args.train_examples, epochs=args.epochs, max_length=64,
                    eval_examples=args.eval_examples)


def points(layers: int, k: int):
    from autopeft.space.point import ModuleChoice, PeftPoint

    lofit = PeftPoint({"lofit": ModuleChoice("lofit", {layer: k for layer in range(layers)})})
    lora = PeftPoint({"lora": ModuleChoice("lora", {layer: 8 for layer in range(layers)}, ("query", "value"),
                                           {"alpha": 2.0})})
    return lofit, lora


def random_ranking(model_id: str, layers: int, heads: int, seed: int):
    import torch

    from autopeft.tuners.lofit import HeadRanking

    return HeadRanking.from_tensor(model_id, torch.rand(layers, heads, generator=torch.Generator().manual_seed(seed)))


def layer_normalised(ranking):
    """Each head's ||A|| over its layer's mean: the ranking without the layer-wide scale (a diagnostic variant)."""
    import torch

    from autopeft.tuners.lofit import HeadRanking

    scores = torch.tensor(ranking.scores)
    return HeadRanking.from_tensor(ranking.model_id, scores / scores.mean(dim=1, keepdim=True))


def run(args) -> dict:
    from autopeft.builders import BuildContext, build_adapter
    from autopeft.data import load_task
    from autopeft.models import get_base_model
    from autopeft.priors.heads import load_or_select_heads
    from autopeft.trial import TrainingConfig, TrialRunner

    rows, selection = [], {}
    for spec in args.tasks.split(","):
        model_name, task_name = spec.split(":")
        task = load_task(str(C.DATASETS / task_name))
        kind = task.spec.kind
        base = get_base_model(model_name, kind, num_labels=max(task.spec.num_labels, 1))
        layers, heads = base.config.num_hidden_layers, base.config.num_attention_heads
        k = max(1, round(args.head_fraction * layers * heads))
        fidelity = fidelity_for(kind, args)
        start = time.perf_counter()
        step1 = dict(l1=args.l1, lr=args.select_lr, epochs=args.select_epochs,
                     train_examples=args.select_examples if kind != "causal_lm" else args.lm_select_examples,
                     batch_size=32 if kind != "causal_lm" else 8,
                     max_length=64 if kind != "causal_lm" else args.lm_max_length)
        ranking, meta, cached = load_or_select_heads(base, task, **step1)
        selection[spec] = {"seconds": round(time.perf_counter() - start, 1), "cached": cached, "k": k,
                           "top_k": ranking.top_k(k), "settings": step1,
                           "layer_mean_norm": [float(f"{sum(row) / len(row):.3g}") for row in ranking.scores]}
        print(f"{spec}: step 1 {selection[spec]['seconds']} s, top-{k} {ranking.top_k(k)}", flush=True)
        runner = TrialRunner(base, task)
        lofit, lora = points(layers, k)
        for seed in range(args.seeds):
            methods = {
                "lofit-learned": (lofit, BuildContext(head_ranking=ranking), args.lofit_lr),
                "lofit-random": (lofit,
                                 BuildContext(head_ranking=random_ranking(ranking.model_id, layers, heads, seed)),
                                 args.lofit_lr),
                "lofit-layer-normalised": (lofit, BuildContext(head_ranking=layer_normalised(ranking)), args.lofit_lr),
                "lora-r8": (lora, BuildContext(), args.lora_lr),
            }
            for method in args.methods.split(","):
                point, context, lr = methods[method]
                result = runner.run(build_adapter(point, base.config, kind, context), fidelity, seed,
                                    TrainingConfig(learning_rate=lr))
                row = {"task": spec, "method": method, "seed": seed, "status": result.status,
                       "reason": result.reason, "adapter_params": result.adapter_params,
                       "train_seconds": round(result.train_seconds, 1), **result.metrics}
                rows.append(row)
                print(json.dumps(row), flush=True)
    return {"rows": rows, "step1": selection}


def markdown(data: dict, args) -> list[str]:
    lines = ["# LoFiT: learned heads vs random heads vs LoRA r8", "",
             f"K = {args.head_fraction:.0%} of the heads. MiniLM: {args.train_examples} training examples × "
             f"{args.epochs} epoch(s), length 64, batch 32, {args.eval_examples} dev examples. SmolLM2-135M on GSM8K: "
             f"{args.lm_train_examples} training examples, 1 epoch, length {args.lm_max_length}, batch 8, eval loss on "
             f"{args.lm_eval_examples} test examples, exact match of greedy answers on {args.lm_generation_examples}. "
             f"Learning rates: LoFiT {args.lofit_lr}, LoRA {args.lora_lr}. Step 1: l1 {args.l1}, lr {args.select_lr}, "
             f"{args.select_epochs} epochs on {args.select_examples} (MiniLM) / {args.lm_select_examples} (SmolLM2) "
             f"examples. Seeds 0..{args.seeds - 1}.", "",
             "| task | method | trainable params | metrics (mean ± std over seeds) |", "|---|---|---:|---|"]
    groups: dict[tuple, list[dict]] = {}
    for row in data["rows"]:
        groups.setdefault((row["task"], row["method"]), []).append(row)
    for (task, method), rows in groups.items():
        ok = [r for r in rows if r["status"] == "ok"]
        names = [n for n in ("accuracy", "exact_match", "eval_loss") if ok and n in ok[0]]
        cells = []
        for name in names:
            values = [r[name] for r in ok]
            cells.append(f"{name} {statistics.mean(values):.4f} ± {statistics.pstdev(values):.4f}")
        failed = len(rows) - len(ok)
        lines.append(f"| {task} | {method} | {rows[0]['adapter_params']:,} | {'; '.join(cells)}"
                     f"{f' ({failed} failed)' if failed else ''} |")
    lines += ["", "Step 1 (head selection): " + "; ".join(
        f"{task} {s['seconds']} s{' (cached)' if s['cached'] else ''}, top-{s['k']} {s['top_k']}"
        for task, s in data["step1"].items())]
    lines += ["", "Mean ‖A‖ per layer after step 1 (first to last layer): " + "; ".join(
        f"{task} {s['layer_mean_norm']}" for task, s in data["step1"].items() if "layer_mean_norm" in s)]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", help="comma-separated model:dataset (a folder under shared/datasets)")
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--methods", help="of lofit-learned, lofit-random, lofit-layer-normalised, lora-r8")
    parser.add_argument("--head-fraction", type=float)
    parser.add_argument("--train-examples", type=int)
    parser.add_argument("--epochs", type=float)
    parser.add_argument("--eval-examples", type=int)
    parser.add_argument("--lm-train-examples", type=int)
    parser.add_argument("--lm-select-examples", type=int)
    parser.add_argument("--lm-max-length", type=int)
    parser.add_argument("--lm-eval-examples", type=int)
    parser.add_argument("--lm-generation-examples", type=int)
    # offsets start at 0: 5e-3 left SST-2 at 0.64, 5e-2 0.74
    parser.add_argument("--lofit-lr", type=float, default=5e-2)
    parser.add_argument("--lora-lr", type=float, default=3e-3)
    parser.add_argument("--l1", type=float, default=5e-4)  # = select-heads defaults
    parser.add_argument("--select-lr", type=float, default=5e-3)
    parser.add_argument("--select-epochs", type=int)
    parser.add_argument("--select-examples", type=int)
    args = C.parse_args(parser, PRESETS, argv, "lofit")
    started = time.perf_counter()
    C.quiet()
    data = run(args)
    C.write(args, data, markdown(data, args), started)


if __name__ == "__main__":
    main()

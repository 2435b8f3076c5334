"""LoFiT with learned top-K heads vs the same K random heads vs LoRA r8 (query/value), same fidelity.

quick/full: MiniLM on SST-2 and TREC (classification, a new head), and SmolLM2-135M SFT on a GSM8K
subset (eval loss and greedy exact match). decoder: LoFiT's own setting, a decoder LM with no new
head: SmolLM2-135M on SST-2 and TREC as verbalised classification (label words as the answers,
`--task causal_lm`), K at 2 %, 5 % and 10 % of the heads, bf16 autocast; decoder-sft: the same on Code Alpaca
instruction SFT (response loss). encoder: MiniLM with step
1 after a linear probe of the new head, and rankings within layers vs global. Step 1 (head selection,
`autopeft select-heads`) runs once per task (cached); step 2 trains offsets on the K best heads.

    python scripts/bench_lofit.py --size quick|full|decoder|decoder-sft|encoder|toy [--out DIR] [overrides]
    -> benchmarks/lofit.{json,md}; decoder, decoder-sft, encoder: benchmarks/lofit-SIZE.{json,md}
    python scripts/bench_lofit.py --render benchmarks/lofit-decoder.json   # the markdown again, from the JSON
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
                lm_generation_examples=1, verbalize=False, bf16=False, lofit_lr=5e-2, lora_lr=3e-3),
    "quick": dict(tasks="minilm:glue_sst2,minilm:trec,smollm2-135m:gsm8k", seeds=3,
                  methods="lofit-learned,lofit-random,lora-r8", head_fraction=0.1, train_examples=1500, epochs=2.0,
                  eval_examples=500, select_epochs=2, select_examples=1000, lm_train_examples=64,
                  lm_select_examples=200, lm_max_length=256, lm_eval_examples=32, lm_generation_examples=8,
                  verbalize=False, bf16=False, lofit_lr=5e-2, lora_lr=3e-3),
}
PRESETS["full"] = PRESETS["quick"] | dict(lm_train_examples=200, lm_eval_examples=64, lm_generation_examples=16)
# LoFiT's setting: a decoder, no new head. The offsets' rate from a probe on SST-2 at K = 5 %, 2000 examples
# (accuracy 0.790 / 0.793 / 0.780 at 5e-2 / 1e-1 / 2e-1; at 5e-3 and 500 examples it stayed at the majority class);
# LoRA r8 at the product's default rate for its rank.
PRESETS["decoder"] = PRESETS["quick"] | dict(
    tasks="smollm2-135m:sst2,smollm2-135m:trec", verbalize=True, head_fraction="0.02,0.05,0.1", train_examples=2000,
    epochs=1.0, eval_examples=500, select_examples=500, select_epochs=2, batch_size=16, bf16=True, lofit_lr=0.1,
    lora_lr=1.4e-3)
# LoFiT's setting on a generative task a 135M model learns at CPU scale: instruction SFT on Code Alpaca, scored by the
# response loss (GSM8K's exact match stayed 0 for every method at this size); the decoder preset's rates and step 1.
PRESETS["decoder-sft"] = PRESETS["decoder"] | dict(
    tasks="smollm2-135m:code_alpaca_2k", verbalize=False, lm_train_examples=400, lm_select_examples=200,
    lm_max_length=256, lm_eval_examples=64, lm_generation_examples=0)
# Encoders with a new head (issue 20): step 1 as it was, after a linear probe of the head, each ranked globally and
# within layers, vs random heads; quick's training and rates.
PRESETS["encoder"] = PRESETS["quick"] | dict(
    tasks="minilm:glue_sst2,minilm:trec", head_fraction="0.1", methods="lofit-learned,lofit-within-layers,lofit-probed,"
    "lofit-probed-within-layers,lofit-random")


def fidelity_for(spec, args):
    from autopeft.trial import Fidelity

    if spec.is_verbalized:  # a prompt with the answer choices + the answer word: 64 tokens hold SST-2 and TREC
        return Fidelity(train_examples=args.train_examples, epochs=args.epochs, max_length=64,
                        batch_size=args.batch_size, eval_examples=args.eval_examples, eval_batch_size=32)
    if spec.kind == "causal_lm":
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
    fractions = [float(f) for f in str(args.head_fraction).split(",")]
    for spec in args.tasks.split(","):
        model_name, task_name = spec.split(":")
        # an alias (sst2) keeps its label words; a folder name under shared/datasets reads that folder
        source = task_name if args.verbalize else str(C.DATASETS / task_name)
        task = load_task(source, task="causal_lm" if args.verbalize else None)
        kind = task.spec.kind
        base = get_base_model(model_name, kind, num_labels=max(task.spec.num_labels, 1))
        layers, heads = base.config.num_hidden_layers, base.config.num_attention_heads
        ks = [max(1, round(f * layers * heads)) for f in fractions]
        fidelity = fidelity_for(task.spec, args)
        training = dict(bf16=args.bf16)
        generative = kind == "causal_lm" and not task.spec.is_verbalized
        start = time.perf_counter()
        step1 = dict(l1=args.l1, lr=args.select_lr, epochs=args.select_epochs,
                     train_examples=args.lm_select_examples if generative else args.select_examples,
                     batch_size=8 if generative else (args.batch_size or 32),
                     max_length=args.lm_max_length if generative else 64)
        ranking, meta, cached = load_or_select_heads(base, task, **step1)
        probed = None
        if any("probed" in method for method in args.methods.split(",")):  # step 1 after a linear probe of the head
            probed, _, _ = load_or_select_heads(base, task, probe_epochs=args.probe_epochs, **step1)
        selection[spec] = {"seconds": round(time.perf_counter() - start, 1), "cached": cached, "k": ks,
                           "top_k": {k: ranking.top_k(k) for k in ks}, "settings": step1,
                           "layer_mean_norm": [float(f"{sum(row) / len(row):.3g}") for row in ranking.scores]}
        if probed is not None:
            selection[spec]["probed_top_k"] = {k: probed.top_k(k) for k in ks}
            selection[spec]["probed_layer_mean_norm"] = [float(f"{sum(r) / len(r):.3g}") for r in probed.scores]
        print(f"{spec}: step 1 {selection[spec]['seconds']} s, top-{ks[-1]} {ranking.top_k(ks[-1])}", flush=True)
        runner = TrialRunner(base, task)
        if generative and args.size == "decoder-sft":  # the base model's own response loss: the bar to clear
            trivial = runner.trivial_score(fidelity, TrainingConfig(**training))
            selection[spec] |= {"trivial": {trivial.metric: trivial.value, "stderr": trivial.stderr}}
        if not generative:
            trivial = runner.trivial_score(fidelity, TrainingConfig(**training))
            zero = runner.evaluate(base.fresh_copy(0), fidelity, TrainingConfig(**training))
            selection[spec] |= {"trivial": {trivial.metric: trivial.value, "stderr": trivial.stderr},
                                "untrained": zero}
        for seed in range(args.seeds):
            for method in args.methods.split(","):
                for k in ks if method.startswith("lofit") else [None]:
                    lofit, lora = points(layers, k or 1)
                    context = {
                        "lofit-learned": BuildContext(head_ranking=ranking),
                        "lofit-random": BuildContext(head_ranking=random_ranking(ranking.model_id, layers, heads,
                                                                                 seed)),
                        "lofit-layer-normalised": BuildContext(head_ranking=layer_normalised(ranking)),
                        "lofit-within-layers": BuildContext(head_ranking=ranking.within_layers()),
                        "lofit-probed": BuildContext(head_ranking=probed),
                        "lofit-probed-within-layers": BuildContext(head_ranking=probed and probed.within_layers()),
                        "lora-r8": BuildContext(),
                    }[method]
                    point, lr = (lora, args.lora_lr) if method == "lora-r8" else (lofit, args.lofit_lr)
                    result = runner.run(build_adapter(point, base.config, kind, context), fidelity, seed,
                                        TrainingConfig(learning_rate=lr, **training))
                    label = method if k is None else f"{method} K={k}"
                    row = {"task": spec, "method": label, "seed": seed, "status": result.status,
                           "reason": result.reason, "adapter_params": result.adapter_params,
                           "train_seconds": round(result.train_seconds, 1), "trivial": result.trivial,
                           **result.metrics}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    return {"rows": rows, "step1": selection}


def markdown(data: dict, args) -> list[str]:
    if getattr(args, "verbalize", False):   # (runs before the decoder preset have no such setting)
        return decoder_markdown(data, args)
    if args.size == "decoder-sft":
        return sft_markdown(data, args)
    if args.size == "encoder":
        return encoder_markdown(data, args)
    lines = ["# LoFiT: learned heads vs random heads vs LoRA r8", "",
             "Other settings: [a decoder LM with no new head, LoFiT's own](lofit-decoder.md) (SmolLM2-135M, "
             "verbalised SST-2 and TREC, K at 2/5/10 %); [the same on instruction SFT](lofit-decoder-sft.md) "
             "(Code Alpaca, response loss); [encoders: a probed head, rankings within layers](lofit-encoder.md).", "",
             f"K = {float(args.head_fraction):.0%} of the heads. MiniLM: {args.train_examples} training examples × "
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


def _result_rows(data: dict, names: tuple[str, ...]) -> list[str]:
    """| task | method | params | each metric mean ± std | seeds at the trivial score | per (task, method)."""
    groups: dict[tuple, list[dict]] = {}
    for row in data["rows"]:
        groups.setdefault((row["task"], row["method"]), []).append(row)
    lines = []
    for (task, method), rows in groups.items():
        ok = [r for r in rows if r["status"] == "ok"]
        cells = []
        for name in names:
            values = [r[name] for r in ok if name in r]
            cells.append(f"{statistics.mean(values):.4f} ± {statistics.pstdev(values):.4f}" if values else "–")
        failed = len(rows) - len(ok)
        lines.append(f"| {task} | {method}{f' ({failed} failed)' if failed else ''} | {rows[0]['adapter_params']:,} | "
                     f"{' | '.join(cells)} | {sum(bool(r.get('trivial')) for r in ok)}/{len(ok)} |")
    return lines


def _per_layer(top_k: dict) -> str:
    """{layer: heads} as "layer: count" (1-based layers), the shape of a selection."""
    layers = sorted(top_k.items(), key=lambda item: int(item[0]))
    return ", ".join(f"L{int(layer) + 1}: {len(heads)}" for layer, heads in layers)


def encoder_markdown(data: dict, args) -> list[str]:
    lines = ["# LoFiT on an encoder with a new head: where step 1 should look", "",
             f"MiniLM (6 layers × 12 heads), K = {float(args.head_fraction):.0%} of the heads, {args.train_examples} "
             f"training examples × {args.epochs:g} epochs, length 64, batch 32, {args.eval_examples} validation "
             f"examples; offsets at {args.lofit_lr:g}. Step 1: L1 {args.l1:g}, lr {args.select_lr:g}, "
             f"{args.select_epochs} epochs on {args.select_examples} examples. Rankings: *learned* = step 1 as "
             "it was (the classifier fresh), heads ranked globally by ‖A‖; *within-layers* = the same scores, every "
             "layer's best head before any layer's second best; *probed* = step 1 after the classifier alone was "
             f"fitted for {args.probe_epochs} epoch(s) (a linear probe); *random* = K random heads (redrawn per "
             f"seed). Seeds 0..{args.seeds - 1}; std over seeds (population).", "",
             "| task | method | trainable params | accuracy | eval loss | at the trivial score |",
             "|---|---|---:|---|---|---:|", *_result_rows(data, ("accuracy", "eval_loss")), "",
             "Where the K heads sit (layer: heads) and step 1's mean ‖A‖ per layer (first to last):", ""]
    for task, s in data["step1"].items():
        k = s["k"][0]
        lines.append(f"- {task}, learned: {_per_layer(_by_k(s['top_k'], k))}; "
                     f"‖A‖ {s['layer_mean_norm']}")
        if "probed_top_k" in s:
            lines.append(f"- {task}, probed: {_per_layer(_by_k(s['probed_top_k'], k))}; "
                         f"‖A‖ {s['probed_layer_mean_norm']}")
    return lines


def decoder_markdown(data: dict, args) -> list[str]:
    lines = ["# LoFiT in its own setting: a decoder LM, no new head", "",
             f"SmolLM2-135M-Instruct, verbalised classification (`--task causal_lm`: the prompt is the text then "
             f"\"Answer (word / word …):\", the response the label's word; accuracy from the likeliest label word's "
             f"first token after the prompt). {args.train_examples} training examples × {args.epochs:g} epoch, "
             f"length 64, batch {args.batch_size}, bf16 autocast, {args.eval_examples} validation examples (the same "
             f"for every trial). Rates: LoFiT offsets {args.lofit_lr:g}, LoRA r8 (q/v, alpha 16) {args.lora_lr:g}. "
             f"Step 1: L1 {args.l1:g}, lr {args.select_lr:g}, {args.select_epochs} epochs on {args.select_examples} "
             f"examples, heads ranked globally by ‖A‖. Seeds 0..{args.seeds - 1} (the random heads are redrawn per "
             "seed). std is over seeds (population).", "",
             "| task | method | trainable params | accuracy | macro F1 | eval loss | at the trivial score |",
             "|---|---|---:|---|---|---|---:|", *_result_rows(data, ("accuracy", "macro_f1", "eval_loss"))]
    lines += ["", "Before training (the base model, zero-shot) and the trivial (majority-class) score on the same "
              "examples:", ""]
    for task, s in data["step1"].items():
        if "untrained" in s:
            lines.append(f"- {task}: untrained accuracy {s['untrained']['accuracy']:.4f}; majority class "
                         f"{s['trivial']['accuracy']:.4f} ± {s['trivial']['stderr']:.4f}")
    return lines + _step1_lines(data)


def _step1_lines(data: dict) -> list[str]:
    """The decoder tables' step-1 part: time, where the top-K heads sit, mean ‖A‖ per layer."""
    lines = ["", "Step 1 (head selection) and where the top-K heads sit (layer: heads):", ""]
    for task, s in data["step1"].items():
        tops = "; ".join(f"top-{k}: {_per_layer(_by_k(s['top_k'], k))}" for k in s["k"])
        lines.append(f"- {task}: {s['seconds']} s{' (cached)' if s['cached'] else ''}; {tops}")
    return lines + ["", "Mean ‖A‖ per layer after step 1 (first to last layer): " + "; ".join(
        f"{task} {s['layer_mean_norm']}" for task, s in data["step1"].items())]


def sft_markdown(data: dict, args) -> list[str]:
    lines = ["# LoFiT in its own setting: a decoder LM, instruction SFT", "",
             f"SmolLM2-135M-Instruct on Code Alpaca (2k instruction/response pairs; validation carved from the single "
             f"file), the LM loss on the response tokens only, no new head. {args.lm_train_examples} training examples "
             f"× 1 epoch, length {args.lm_max_length}, batch 8, bf16 autocast; validation loss on "
             f"{args.lm_eval_examples} examples (the same for every trial; lower is better). Rates: LoFiT offsets "
             f"{args.lofit_lr:g}, LoRA r8 (q/v, alpha 16) {args.lora_lr:g}. Step 1: L1 {args.l1:g}, lr "
             f"{args.select_lr:g}, {args.select_epochs} epochs on {args.lm_select_examples} examples, heads ranked "
             f"globally by ‖A‖. Seeds 0..{args.seeds - 1} (the random heads are redrawn per seed). std is over seeds "
             "(population). A trial at the trivial score did not get below the base model's own loss.", "",
             "| task | method | trainable params | eval loss | at the trivial score |", "|---|---|---:|---|---:|",
             *_result_rows(data, ("eval_loss",))]
    lines += ["", "The base model's own validation loss on the same examples (the trivial score): " + "; ".join(
        f"{task} {s['trivial']['eval_loss']:.4f}" for task, s in data["step1"].items() if "trivial" in s)]
    return lines + _step1_lines(data)


def _by_k(selections: dict, k: int):
    """A per-K entry of a run's step 1, whether read back from JSON (string keys) or fresh (int keys)."""
    return selections[k] if k in selections else selections[str(k)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", help="comma-separated model:dataset (a folder under shared/datasets)")
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--methods", help="of lofit-learned, lofit-random, lofit-layer-normalised, "
                        "lofit-within-layers, lofit-probed, lofit-probed-within-layers (step 1 after --probe-epochs "
                        "of a linear probe), lora-r8")
    parser.add_argument("--probe-epochs", type=int, default=1, help="linear-probe epochs before step 1 (probed)")
    parser.add_argument("--head-fraction", help="K as fractions of all heads, comma-separated (e.g. 0.02,0.05,0.1)")
    parser.add_argument("--verbalize", action="store_true", default=None,
                        help="labelled tasks as verbalised classification (--task causal_lm)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--bf16", action="store_true", default=None)
    parser.add_argument("--train-examples", type=int)
    parser.add_argument("--epochs", type=float)
    parser.add_argument("--eval-examples", type=int)
    parser.add_argument("--lm-train-examples", type=int)
    parser.add_argument("--lm-select-examples", type=int)
    parser.add_argument("--lm-max-length", type=int)
    parser.add_argument("--lm-eval-examples", type=int)
    parser.add_argument("--lm-generation-examples", type=int)
    # MiniLM: offsets start at 0: 5e-3 left SST-2 at 0.64, 5e-2 0.74
    parser.add_argument("--lofit-lr", type=float)
    parser.add_argument("--lora-lr", type=float)
    parser.add_argument("--l1", type=float, default=5e-4)  # = select-heads defaults
    parser.add_argument("--select-lr", type=float, default=5e-3)
    parser.add_argument("--select-epochs", type=int)
    parser.add_argument("--select-examples", type=int)
    parser.add_argument("--render", type=Path, help="rewrite the markdown of this benchmark JSON only (no run)")
    args = C.parse_args(parser, PRESETS, argv, "lofit")
    if args.render:
        return C.render(args.render, lambda payload, saved: markdown(payload, saved))
    if args.size in ("decoder", "encoder", "decoder-sft"):  # beside benchmarks/lofit.md, which links them
        args.name = f"lofit-{args.size}"
    started = time.perf_counter()
    C.quiet()
    data = run(args)
    C.write(args, data, markdown(data, args), started)


if __name__ == "__main__":
    main()

"""Data selection: each strategy vs random, MiniLM + LoRA r8 (query/value), SST-2 dev accuracy.

Part "pool" (GOT-D's use, Kang et al., ICLR 2024): target = a 1k slice of SST-2 train; pool = the rest of
SST-2 train + TREC train + CoLA train, texts only. Each strategy selects N pool texts, the adapter is warmed
up on them with masked LM (1 epoch), then trained on the 1k target; "none" trains on the target directly.
Part "subset" (cheap low-fidelity trials): each strategy picks N examples of SST-2 train to train on.
Embeddings: MiniLM mean-pooled (cached); the OT solve time over the whole pool is reported.

gotd: GOT-D's own setting as far as 2 cores allow (issue 20): the pool is the rest of SST-2 train plus every
other dataset in ../shared/datasets (~100k texts), budgets 10k and 30k, the embeddings from MiniLM after a
short LoRA fit on the 1k target (`--embedding-model tuned`), the masked-LM warm-up's head fitted on the frozen
model first (MiniLM ships without one); OT vs random vs DSIR, 3 seeds.

    python scripts/bench_data_selection.py --size quick|gotd|toy [--out DIR] [overrides]
    -> benchmarks/data_selection.{json,md}; gotd: benchmarks/data_selection-gotd.{json,md}
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_common as C  # noqa: E402

POOL_STRATEGIES = "random,kcenter,similarity,dsir,ot"  # target-aware ones + k-center; el2n/stratified need labels
SUBSET_STRATEGIES = "random,stratified,kcenter,similarity,el2n"  # dsir and ot rank a pool against itself at random
PRESETS = {
    "toy": dict(parts="subset", budgets="16", subset_sizes="16", pool_strategies="random",
                subset_strategies="random,stratified", seeds=1, target_size=16, epochs=1.0, max_length=16,
                eval_examples=16, pool_datasets="trec", embedding="untuned", head="untrained", ablations=""),
    "quick": dict(parts="pool,subset", budgets="2000,5000", subset_sizes="1000", pool_strategies=POOL_STRATEGIES,
                  subset_strategies=SUBSET_STRATEGIES, seeds=3, target_size=1000, epochs=2.0, max_length=64,
                  eval_examples=0, pool_datasets="trec,glue_cola", embedding="untuned", head="untrained",
                  ablations=""),
}
PRESETS["gotd"] = PRESETS["quick"] | dict(
    parts="pool", budgets="10000,30000", pool_strategies="random,dsir,ot",
    pool_datasets="trec,glue_cola,glue_rte,glue_stsb,gsm8k,code_alpaca_2k", embedding="tuned", head="fitted",
    ablations="ot:untuned-embedding,random:untrained-head")


def lora_point(layers: int):
    from autopeft.space.point import ModuleChoice, PeftPoint

    return PeftPoint({"lora": ModuleChoice("lora", {layer: 8 for layer in range(layers)}, ("query", "value"),
                                           {"alpha": 2.0})})


def train(runner, base, args, seed: int, indices: np.ndarray, warmup=None) -> dict:
    from autopeft.builders import build_adapter
    from autopeft.trial import Fidelity, TrainingConfig

    fidelity = Fidelity(epochs=args.epochs, max_length=args.max_length, eval_examples=args.eval_examples or None)
    result = runner.run(build_adapter(lora_point(base.config.num_hidden_layers), base.config, "classification"),
                        fidelity, seed, TrainingConfig(learning_rate=args.lr), train_indices=indices, warmup=warmup)
    if not result.ok:
        raise SystemExit(f"trial failed: {result.reason}")
    return {"accuracy": result.metrics["accuracy"], "train_seconds": round(result.train_seconds, 1),
            "warmup_seconds": round(result.warmup_seconds, 1), "warmup_loss": result.warmup_loss}


def pool_part(args, base, task, runner, embed) -> tuple[list[dict], dict]:  # noqa: C901 (one benchmark part)
    from autopeft.priors.selection import (
        SelectionInputs,
        load_or_compute_order,
        pool_from_datasets,
        select,
        selection_fingerprint,
        task_texts,
    )
    from autopeft.trial.warmup import Warmup

    texts = task_texts(task, "train")
    target_rows = np.sort(np.random.default_rng(args.target_seed).permutation(len(texts))[: args.target_size])
    rest = np.setdiff1d(np.arange(len(texts)), target_rows)
    other_texts, other_sources = pool_from_datasets([str(C.DATASETS / name) for name in C.csv(args.pool_datasets)])
    pool_texts = [texts[i] for i in rest] + list(other_texts)
    origin = np.array(["glue_sst2"] * len(rest) + [source[0] for source in other_sources])
    info = {"pool_size": len(pool_texts), "target_size": len(target_rows),
            "pool_composition": {name: int((origin == name).sum()) for name in np.unique(origin)}, "orders": {}}
    if args.embedding == "tuned":  # GOT-D: embed with the model fitted on the target (the 1k rows only)
        from autopeft.priors.selection.tuned import MARK_FILE, task_tuned_encoder

        start = time.perf_counter()
        folder = task_tuned_encoder(args.model, task, rows=target_rows, max_length=args.max_length)
        info["tuned_encoder"] = {**json.loads((folder / MARK_FILE).read_text()),
                                 "wall_seconds": round(time.perf_counter() - start, 1)}
        embed = _embedder(str(folder), args.max_length)
    inputs = SelectionInputs(pool_texts=pool_texts, pool_labels=None,
                             target_texts=[texts[i] for i in target_rows], embed=embed)
    fingerprint = selection_fingerprint(inputs, embed.identity)
    start = time.perf_counter()
    _ = inputs.pool_embeddings, inputs.target_embeddings
    info["embedding_seconds"] = round(time.perf_counter() - start, 1)
    head_file = None
    if args.head == "fitted":
        from autopeft.priors.mlm_head import cached_masked_lm_head

        start = time.perf_counter()
        path, facts = cached_masked_lm_head(args.model, pool_texts, max_length=args.max_length)
        head_file = str(path)
        info["mlm_head"] = {**facts, "wall_seconds": round(time.perf_counter() - start, 1)}
    rows = []
    for seed in range(args.seeds):
        row = {"part": "pool", "strategy": "none", "budget": 0, "seed": seed,
               **train(runner, base, args, seed, target_rows)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    def warm_up_and_train(label, strategy, inputs, fingerprint, head_file, budgets):
        for seed in range(args.seeds):
            order, meta, cached = load_or_compute_order(strategy, inputs, seed, fingerprint=fingerprint)
            info["orders"].setdefault(label, []).append({"seed": seed, "cached": cached, **_small(meta)})
            for budget in budgets:
                chosen = select(order, budget)
                share = {name: round(float((origin[chosen] == name).mean()), 3) for name in np.unique(origin)}
                warmup = Warmup("lm", texts=tuple(pool_texts[i] for i in chosen), epochs=1.0, head_file=head_file)
                row = {"part": "pool", "strategy": label, "budget": budget, "seed": seed, "selected_from": share,
                       **train(runner, base, args, seed, target_rows, warmup)}
                rows.append(row)
                print(json.dumps(row), flush=True)

    for strategy in args.pool_strategies.split(","):
        warm_up_and_train(strategy, strategy, inputs, fingerprint, head_file, args.budgets)
    # ablations at the first budget: what each of GOT-D's settings adds on its own
    for ablation in C.csv(args.ablations):
        strategy, variant = ablation.split(":")
        if variant == "untuned-embedding":
            untuned = _embedder(args.model, args.max_length)
            plain = SelectionInputs(pool_texts=pool_texts, pool_labels=None,
                                    target_texts=[texts[i] for i in target_rows], embed=untuned)
            warm_up_and_train(f"{strategy} (untuned embeddings)", strategy, plain,
                              selection_fingerprint(plain, untuned.identity), head_file, args.budgets[:1])
        elif variant == "untrained-head":
            warm_up_and_train(f"{strategy} (untrained head)", strategy, inputs, fingerprint, None, args.budgets[:1])
        else:
            raise SystemExit(f"unknown ablation {ablation!r} (strategy:untuned-embedding or strategy:untrained-head)")
    return rows, info


def subset_part(args, base, task, runner, embed) -> tuple[list[dict], dict]:
    from autopeft.priors.selection import (
        SelectionInputs,
        load_or_compute_order,
        select,
        selection_fingerprint,
        task_labels,
        task_texts,
    )

    texts = task_texts(task, "train")
    inputs = SelectionInputs(pool_texts=texts, pool_labels=task_labels(task, "train"), target_texts=texts, embed=embed)
    fingerprint = selection_fingerprint(inputs, embed.identity)
    rows, info = [], {"pool_size": len(texts), "orders": {}}
    for strategy in args.subset_strategies.split(","):
        for seed in range(args.seeds):
            order, meta, cached = load_or_compute_order(strategy, inputs, seed, fingerprint=fingerprint)
            info["orders"].setdefault(strategy, []).append({"seed": seed, "cached": cached, **_small(meta)})
            for size in args.subset_sizes:
                chosen = select(order, size)
                labels = np.asarray(inputs.pool_labels)[chosen]
                row = {"part": "subset", "strategy": strategy, "budget": size, "seed": seed,
                       "positive_share": round(float((labels == 1).mean()), 3),
                       **train(runner, base, args, seed, chosen)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows, info


def _embedder(model: str, max_length: int):
    from autopeft.priors.selection import cached_embeddings, encoder_signature

    def embed(texts):
        return cached_embeddings(model, texts, max_length=max_length)

    embed.identity = {"model": encoder_signature(model), "max_length": max_length}
    return embed


def _small(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if isinstance(v, (int, float, str, bool)) or v is None}


def markdown(data: dict, args) -> list[str]:
    setting = ("GOT-D's setting: task-tuned embeddings, trained MLM head, 10k/30k budgets"
               if args.embedding == "tuned" else "strategies vs random")
    embedding = (f"{args.model} after a short LoRA fit on the 1k target (`--embedding-model tuned`), mean-pooled"
                 if args.embedding == "tuned" else f"{args.model} (untuned), mean-pooled")
    head = ("fitted on the frozen model first (the checkpoint has none)" if args.head == "fitted"
            else "untrained at the start (identity dense layer)")
    lines = [f"# Data selection: {setting} (MiniLM + LoRA r8 q,v, SST-2 dev accuracy)", "",
             f"Training: lr {args.lr}, {args.epochs} epoch(s), length {args.max_length}, batch 32, "
             f"{args.eval_examples or 'all'} dev examples; seeds 0..{args.seeds - 1} (the seed drives the selection "
             f"of seeded strategies and the training). Embeddings: {embedding}. Masked-LM warm-up (1 epoch over the "
             f"selected texts, LoRA only): its head {head}.", ""]
    if args.embedding != "tuned":
        lines += ["GOT-D's own setting (task-tuned embeddings, a trained MLM head, a 93k pool, 10k/30k budgets): "
                  "[data_selection-gotd.md](data_selection-gotd.md).", ""]
    info = data["info"].get("pool", {})
    if "tuned_encoder" in info:
        fit = info["tuned_encoder"]
        lines += [f"Tuned embedder: LoRA r8 on {fit['examples']:,} target rows, {fit['epochs']:g} epochs at lr "
                  f"{fit['learning_rate']:g}: validation accuracy {fit['validation'].get('accuracy', float('nan')):.3f}"
                  f" ({fit['seconds']} s).", ""]
    if "mlm_head" in info:
        head_facts = info["mlm_head"]
        lines += [f"MLM head: {head_facts['source']}" + (
            f" on {head_facts['texts']:,} pool texts, {head_facts['steps']} steps, loss {head_facts['initial_loss']} "
            f"-> {head_facts['final_loss']} ({head_facts['seconds']} s)" if "steps" in head_facts else "") + ".", ""]
    groups: dict[tuple, list[dict]] = {}
    for row in data["rows"]:
        groups.setdefault((row["part"], row["budget"], row["strategy"]), []).append(row)

    def paired(rows: list[dict], reference: list[dict] | None) -> str:
        """Mean ± std over seeds of (this − the reference) at the same seed: the seed fixes the training's own
        randomness, so the pairing removes most of the run-to-run spread from the comparison."""
        if not reference:
            return ""
        theirs = {r["seed"]: r["accuracy"] for r in reference}
        differences = [r["accuracy"] - theirs[r["seed"]] for r in rows if r["seed"] in theirs]
        if not differences:
            return ""
        return f"{statistics.mean(differences):+.4f} ± {statistics.pstdev(differences):.4f}"
    for part, title in (("pool", "Pool → masked-LM warm-up → 1k SST-2 target (GOT-D's use)"),
                        ("subset", "Subset of SST-2 train to tune on (low-fidelity trials)")):
        if part not in data["info"]:
            continue
        info = data["info"][part]
        lines += [f"## {title}", "", f"Pool: {info['pool_size']:,} examples"
                  + (f" ({', '.join(f'{k} {v:,}' for k, v in info['pool_composition'].items())}); target "
                     f"{info['target_size']:,}; pool + target "
                     + (f"embedded in {info['embedding_seconds']} s" if info["embedding_seconds"] >= 2
                        else "embeddings read from the cache")
                     if part == "pool" else "") + ".", "",
                  "| budget | strategy | accuracy (mean ± std) | Δ vs random (paired) | Δ vs no warm-up (paired) | "
                  "selection seconds | notes |",
                  "|---:|---|---|---:|---:|---:|---|"] if part == "pool" else [
                  "| budget | strategy | accuracy (mean ± std) | Δ vs random (paired) | selection seconds | notes |",
                  "|---:|---|---|---:|---:|---|"]
        for (row_part, budget, strategy), rows in sorted(groups.items(), key=lambda g: (g[0][1], g[0][2])):
            if row_part != part:
                continue
            accuracy = [r["accuracy"] for r in rows]
            delta = "" if strategy in ("random", "none") else paired(rows, groups.get((part, budget, "random")))
            if part == "pool":
                delta += " | " + ("" if strategy == "none" else paired(rows, groups.get((part, 0, "none"))))
            seconds = [o.get("seconds") for o in info["orders"].get(strategy, []) if not o["cached"]]
            notes = ""
            if part == "pool" and strategy != "none":
                shares = {k: statistics.mean(r["selected_from"][k] for r in rows) for k in rows[0]["selected_from"]}
                notes = "from " + ", ".join(f"{k} {v:.0%}" for k, v in shares.items())
            elif part == "subset":
                notes = f"positive share {statistics.mean(r['positive_share'] for r in rows):.2f}"
            if part == "pool" and strategy != "none":
                notes += f"; warm-up {statistics.mean(r['warmup_seconds'] for r in rows):.0f} s"
            timing = (f"{statistics.mean(s for s in seconds if s is not None):.1f}"
                      if seconds and any(s is not None for s in seconds) else "cached")
            lines.append(f"| {budget or '—'} | {strategy} | {statistics.mean(accuracy):.4f} ± "
                         f"{statistics.pstdev(accuracy):.4f} | {delta} | "
                         f"{timing} | {notes} |")
        lines.append("")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", help="comma-separated: pool, subset")
    parser.add_argument("--budgets", help="pool part: warm-up examples selected")
    parser.add_argument("--subset-sizes", help="subset part: training examples selected")
    parser.add_argument("--pool-strategies")
    parser.add_argument("--subset-strategies")
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--target-size", type=int)
    parser.add_argument("--target-seed", type=int, default=0)
    parser.add_argument("--epochs", type=float)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--max-length", type=int)
    parser.add_argument("--eval-examples", type=int, help="dev examples scored (0: all)")
    parser.add_argument("--model", default="minilm", help="the model tuned (and embedded with)")
    parser.add_argument("--pool-datasets", help="pool part: datasets under ../shared/datasets besides SST-2's rest")
    parser.add_argument("--embedding", choices=["untuned", "tuned"], help="pool part: embed with the model as is, or "
                                                                          "after a short fit on the target")
    parser.add_argument("--head", choices=["untrained", "fitted"], help="pool part: the masked-LM head's start")
    parser.add_argument("--ablations", help="pool part, first budget: strategy:untuned-embedding, "
                                            "strategy:untrained-head (comma-separated)")
    args = C.parse_args(parser, PRESETS, argv, "data_selection")
    if args.size == "gotd":
        args.name = "data_selection-gotd"
    started = time.perf_counter()
    C.quiet()
    args.budgets = C.ints(args.budgets)
    args.subset_sizes = C.ints(args.subset_sizes)

    from autopeft.data import load_task
    from autopeft.models import get_base_model
    from autopeft.trial import TrialRunner

    task = load_task(str(C.DATASETS / "glue_sst2"))
    base = get_base_model(args.model, "classification", num_labels=task.spec.num_labels)
    runner = TrialRunner(base, task)
    embed = _embedder(args.model, args.max_length)

    data = {"rows": [], "info": {}}
    for part in C.csv(args.parts):
        rows, info = (pool_part if part == "pool" else subset_part)(args, base, task, runner, embed)
        data["rows"] += rows
        data["info"][part] = info
    C.write(args, data, markdown(data, args), started)


if __name__ == "__main__":
    main()

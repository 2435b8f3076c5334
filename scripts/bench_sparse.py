"""Sparse tuning speed: autopeft's `sparse` tuner (a delta of the mask's entries scattered into W) vs
PEFT's SHiRA given the same mask, on MiniLM training steps.

SHiRA needs exactly r·(d_in + d_out) entries per matrix, so both get that many per matrix (the
top-scoring ones of a random score map, the same indices for both); SPT's masks, with any count per
matrix, only fit autopeft's tuner.

    python scripts/bench_sparse.py --size quick|toy [--out DIR] [--rank 4] [--steps 20]
    -> benchmarks/sparse.json and benchmarks/sparse.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_common as C  # noqa: E402
import torch  # noqa: E402

PRESETS = {
    "toy": dict(rank=1, steps=2),
    "quick": dict(rank=4, steps=20),
}
TARGETS = ("query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense")


def masks(model, rank: int) -> dict[str, torch.Tensor]:
    """Per targeted nn.Linear: a 0/1 mask with rank·(in + out) ones (seeded top entries of random scores)."""
    generator = torch.Generator().manual_seed(0)
    chosen = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and ".layer." in name and name.endswith(TARGETS):
            out_features, in_features = module.weight.shape
            count = rank * (in_features + out_features)
            flat = torch.zeros(module.weight.numel())
            flat[torch.rand(module.weight.numel(), generator=generator).topk(count).indices] = 1.0
            chosen[name] = flat.reshape(module.weight.shape)
    return chosen


def step_seconds(model, batch, steps: int) -> list[float]:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    times = []
    for step in range(steps + 3):
        start = time.perf_counter()
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= 3:  # warm-up steps excluded
            times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rank", type=int)
    parser.add_argument("--steps", type=int)
    args = C.parse_args(parser, PRESETS, argv, "sparse")
    started = time.perf_counter()
    C.quiet()
    from peft import ShiraConfig, get_peft_model

    from autopeft.models import get_base_model
    from autopeft.tuners.sparse import SparseConfig, SparseMask

    base = get_base_model("minilm", "classification", num_labels=2)
    dense = masks(base.pristine, args.rank)
    batch = {"input_ids": torch.randint(1000, 20000, (32, 64), generator=torch.Generator().manual_seed(1)),
             "attention_mask": torch.ones(32, 64, dtype=torch.long), "labels": torch.randint(0, 2, (32,))}
    results = {}
    sparse_mask = SparseMask({name: mask.reshape(-1).nonzero().squeeze(1) for name, mask in dense.items()})
    ours = get_peft_model(base.fresh_copy(0), SparseConfig(target_modules=sorted(dense), masks=sparse_mask,
                                                           task_type="SEQ_CLS"))
    shira_config = ShiraConfig(r=args.rank, target_modules=sorted(dense), task_type="SEQ_CLS")
    shira_config.mask_fn = lambda base_layer, r, **_: next(
        mask for name, mask in dense.items()
        if base.pristine.get_submodule(name).weight.shape == base_layer.weight.shape
        and torch.equal(base.pristine.get_submodule(name).weight, base_layer.weight)).to(base_layer.weight.dtype)
    shira = get_peft_model(base.fresh_copy(0), shira_config)
    for name, model in (("autopeft sparse (scatter delta)", ours), ("peft SHiRA (sparse COO delta)", shira)):
        model.train()
        trainable = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "classifier" not in n)
        times = step_seconds(model, batch, args.steps)
        results[name] = {"trainable_params": trainable, "median_step_seconds": round(statistics.median(times), 4),
                         "examples_per_second": round(32 / statistics.median(times), 1)}
        print(name, results[name], flush=True)
    frozen = base.fresh_copy(0)
    for parameter in frozen.parameters():
        parameter.requires_grad_(parameter.ndim == 2 and parameter.shape[0] == 2)  # classifier only: the floor
    times = step_seconds(frozen, batch, args.steps)
    results["classifier only (no adapter)"] = {"trainable_params": 0,
                                              "median_step_seconds": round(statistics.median(times), 4),
                                              "examples_per_second": round(32 / statistics.median(times), 1)}
    lines = ["# Sparse tuning: scatter delta (autopeft) vs SHiRA (PEFT), MiniLM training step", "",
             f"Batch 32 × 64 tokens, AdamW, {args.steps} timed steps after 3 warm-up, "
             f"{torch.get_num_threads()} threads; mask = {args.rank}·(d_in + d_out) entries in each of the 36 role "
             "matrices, the same indices for both.",
             "", "| method | trainable params | median step (s) | examples/s |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {r['trainable_params']:,} | {r['median_step_seconds']} | {r['examples_per_second']} |"
              for name, r in results.items()]
    C.write(args, {"results": results}, lines, started)


if __name__ == "__main__":
    main()

"""Check every shipped search space on the real models: N random points per space and model must
build, match the analytic parameter count exactly, run forward + backward, and survive
save -> PeftModel.from_pretrained with the same outputs (max abs diff <= 1e-5).

    HF_HUB_OFFLINE=1 python scripts/check_spaces.py [--points 200] [--models minilm smollm2-135m]

Writes benchmarks/spaces_check.{json,md}. Exits 1 when any point fails.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from peft import PeftModel

from autopeft.builders import BuildContext, build_adapter
from autopeft.models import get_base_model
from autopeft.space import SearchSpace, count_trainable_params
from autopeft.tuners.lofit.ranking import HeadRanking

torch.set_num_threads(1)  # two short sentences per point: one thread is fastest and leaves a core free

ROOT = Path(__file__).resolve().parents[1]
KINDS = {"minilm": "classification", "smollm2-135m": "causal_lm"}


def adapter_params(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters()
               if p.requires_grad and ".modules_to_save." not in n and ".classifier." not in n)


def check(base, space: SearchSpace, point, context, inputs) -> float:
    """Returns the round-trip max abs difference; raises on any mismatch."""
    model = build_adapter(point, base.config, base.kind, context)(base.fresh_copy(0))
    measured, analytic = adapter_params(model), count_trainable_params(point, base.config)
    if measured != analytic:
        raise AssertionError(f"count {measured} != analytic {analytic}")
    model.train()
    model(**inputs).loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    model.eval()
    with torch.no_grad():
        expected = model(**inputs).logits
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        loaded = PeftModel.from_pretrained(base.fresh_copy(0), folder).eval()
        with torch.no_grad():
            diff = (loaded(**inputs).logits - expected).abs().max().item()
    if diff > 1e-5:
        raise AssertionError(f"round trip differs by {diff}")
    return diff


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=200)
    parser.add_argument("--models", nargs="+", default=list(KINDS))
    parser.add_argument("--spaces", nargs="+", default=["autopeft", "lora", "unified"])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "spaces_check"))
    args = parser.parse_args()
    rows, failures = [], []
    for model_name in args.models:
        base = get_base_model(model_name, KINDS[model_name], num_labels=2)
        config = base.config
        scores = torch.rand(config.num_hidden_layers, config.num_attention_heads,
                            generator=torch.Generator().manual_seed(0))
        context = BuildContext(head_ranking=HeadRanking.from_tensor(model_name, scores))
        tokens = base.tokenizer(["a short sentence to check the model", "and a second one"], return_tensors="pt",
                                padding=True)
        inputs = dict(tokens)
        inputs["labels"] = (torch.tensor([0, 1]) if base.kind == "classification"
                            else tokens["input_ids"].masked_fill(tokens["attention_mask"] == 0, -100))
        for space_name in args.spaces:
            space = SearchSpace.from_file(ROOT / "search_spaces" / f"{space_name}.yaml", config)
            rng = np.random.default_rng(0)
            start, checked, empty, worst, params = time.perf_counter(), 0, 0, 0.0, []
            while checked + empty < args.points:
                point = space.decode(space.sample(rng))
                if point.is_empty:  # every layer or size off: nothing to build
                    empty += 1
                    continue
                try:
                    worst = max(worst, check(base, space, point, context, inputs))
                    params.append(count_trainable_params(point, config))
                except Exception as exc:  # record and go on: the report lists every failure
                    failures.append({"model": model_name, "space": space_name, "point": point.to_dict(),
                                     "error": f"{type(exc).__name__}: {exc}"})
                checked += 1
            rows.append({"model": model_name, "space": space_name, "points": checked, "empty_points": empty,
                         "failures": sum(1 for f in failures if f["model"] == model_name and f["space"] == space_name),
                         "max_round_trip_diff": worst, "min_params": min(params), "max_params": max(params),
                         "seconds": time.perf_counter() - start})
            print(json.dumps(rows[-1]), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"rows": rows, "failures": failures}, indent=2) + "\n")
    lines = ["# Search spaces on the real models", "",
             "Each random point: build, analytic count == measured trainable parameters, forward + backward, "
             "save -> PeftModel.from_pretrained -> same outputs (max abs diff <= 1e-5). "
             "LoFiT points use a random head ranking (the ranking itself is the LoFiT issue's).", "",
             f"Reproduce: `HF_HUB_OFFLINE=1 python scripts/check_spaces.py --points {args.points}`", "",
             "| model | space | points built | empty points | failures | max round-trip diff | params min..max | s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['space']} | {r['points']} | {r['empty_points']} | {r['failures']} | "
                     f"{r['max_round_trip_diff']:.2e} | {r['min_params']:,}..{r['max_params']:,} | "
                     f"{r['seconds']:.0f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()

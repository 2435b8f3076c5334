"""Shared pieces of the search tests: a tiny model folder, a tiny synthetic task, a LoRA-only builder."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from tests.conftest import tiny_bert_config

VOCAB = 30522  # the MiniLM tokenizer's

LORA_SPACE = """\
name: tiny-lora
placement: {mode: all}
modules:
  lora:
    targets: {choices: [[query, value], [query, key, value]]}
    size: {grid: [2, 4, 8], tie: per_layer}
    alpha: 2.0
"""


def write_tiny_model(folder: Path, **config) -> str:
    """The tiny BERT classifier (``config``: BertConfig overrides) with the MiniLM tokenizer, saved in ``folder``."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    from autopeft.models import resolve_model

    torch.manual_seed(0)
    BertForSequenceClassification(tiny_bert_config(vocab_size=VOCAB, **config)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(resolve_model("minilm").path).save_pretrained(folder)
    return str(folder)


@pytest.fixture
def lora_only_builders(monkeypatch):
    """Build points with a plain LoRA factory (:func:`lora_builder`), so search tests do not depend on the builders'
    progress; a module that imports this fixture gets it ``autouse``-d with ``pytestmark``."""
    monkeypatch.setattr("autopeft.search.evaluator.builders_adapter_builder", lora_builder)


def write_search_inputs(base: Path) -> dict[str, str]:
    """The tiny model, the tiny task and the LoRA space in ``base``: what a search test passes as flags."""
    (base / "space.yaml").write_text(LORA_SPACE)
    return {"model": write_tiny_model(base / "model"), "dataset": write_tiny_task(base / "task"),
            "space": str(base / "space.yaml")}


def write_tiny_task(folder: Path, rows: int = 64) -> str:
    """Sentiment-like sentences; the label is decided by the words, so a little training helps."""
    rng = random.Random(0)
    good, bad, filler = (["good", "great", "fine", "nice"], ["bad", "awful", "poor", "sad"],
                         ["the", "movie", "was", "a", "plot"])
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", rows), ("dev", rows // 2), ("test", rows // 2)):
        lines = ["sentence\tlabel"]
        for _ in range(n):
            label = rng.randint(0, 1)
            words = rng.sample(filler, 3) + [rng.choice(good if label else bad)]
            rng.shuffle(words)
            lines.append(f"{' '.join(words)}\t{label}")
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return str(folder)


def lora_builder(model_config, kind, context=None):
    """point -> factory: LoRA from point.modules['lora'] (per-layer ranks), or the head only."""
    from peft import LoraConfig, get_peft_model

    from autopeft.arch import architecture_for

    arch = architecture_for(model_config)

    def build(point):
        module = point.modules.get("lora")
        if module is None:
            def head_only(model):
                for parameter in model.parameters():
                    parameter.requires_grad_(False)
                return model
            return head_only
        names = [n for role in module.targets for n in arch.matrices[role]]
        ranks = {layer: int(r) for layer, r in module.sizes.items()}
        default = max(ranks.values())
        pattern = {f"{arch.layer_prefix}.{layer}.{n}": r for layer, r in ranks.items() for n in names if r != default}
        config = LoraConfig(
            r=default, lora_alpha=2 * default, target_modules=names, layers_to_transform=sorted(ranks),
            rank_pattern=pattern, alpha_pattern={k: 2 * v for k, v in pattern.items()}, task_type="SEQ_CLS",
        )
        return lambda model: get_peft_model(model, config)

    return build


def interrupt_on_call(monkeypatch, n: int) -> None:
    """The search's evaluator raises KeyboardInterrupt (Ctrl-C) on its n-th trial; earlier ones train normally."""
    from autopeft.search.evaluator import RunnerEvaluator

    real_call = RunnerEvaluator.__call__
    calls = []

    def interrupting(self, point, *args, **kwargs):
        calls.append(point)
        if len(calls) == n:
            raise KeyboardInterrupt
        return real_call(self, point, *args, **kwargs)

    monkeypatch.setattr(RunnerEvaluator, "__call__", interrupting)

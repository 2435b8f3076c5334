"""Shared checks for the tests of autopeft's own tuners (tests/test_tuners_*.py).

Parameter counts are reported two ways, and the tests pin both:
- adapter parameters: trainable parameters inside tuner layers (what the analytic counter predicts);
- ``get_nb_trainable_parameters()[0]``: adapter parameters plus, for sequence classification, the classifier head,
  which PEFT trains in full through ``modules_to_save`` (BERT here: 32 * 2 + 2 = 66).
"""

from __future__ import annotations

import torch
from conftest import tiny_bert_config, tiny_llama_config
from peft import PeftModel, get_peft_model
from transformers import BertForSequenceClassification, LlamaForCausalLM

import autopeft  # noqa: F401  (registers autopeft's tuners with PEFT)

HIDDEN, INTERMEDIATE, LAYERS, LLAMA_KV = 32, 64, 2, 16  # tiny fixtures; Llama: 2 kv heads * head_dim 8
BERT_HEAD_PARAMS = HIDDEN * 2 + 2
# BitFit bias sizes per layer. BERT: query, key, value, attention.output.dense and its LayerNorm, intermediate.dense,
# output.dense and its LayerNorm. Llama (no biases, so BitFit adds them): q, k, v, o, gate, up, down, two RMSNorms.
BERT_BIASES_PER_LAYER = 3 * HIDDEN + 2 * HIDDEN + INTERMEDIATE + 2 * HIDDEN
LLAMA_BIASES_PER_LAYER = HIDDEN + 2 * LLAMA_KV + HIDDEN + 2 * INTERMEDIATE + HIDDEN + 2 * HIDDEN


def build_bert() -> BertForSequenceClassification:
    """The ``tiny_bert`` fixture's model, rebuilt with the same seed (identical weights)."""
    torch.manual_seed(0)
    return BertForSequenceClassification(tiny_bert_config()).eval()


def build_llama() -> LlamaForCausalLM:
    """The ``tiny_llama`` fixture's model, rebuilt with the same seed (identical weights)."""
    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config()).eval()


def input_ids(seed: int = 1) -> torch.Tensor:
    return torch.randint(3, 1000, (2, 7), generator=torch.Generator().manual_seed(seed))


def logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def bottleneck_params(d_in: int, size: int, d_out: int) -> int:
    """down (d_in*m + m) + up (m*d_out + d_out)."""
    return d_in * size + size + size * d_out + d_out


def adapter_parameter_count(model: PeftModel) -> int:
    """Trainable parameters of the tuner layers: everything trainable except the modules_to_save copies."""
    head = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and ".modules_to_save." in n)
    return model.get_nb_trainable_parameters()[0] - head


def train_one_step(model: torch.nn.Module, ids: torch.Tensor) -> None:
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(input_ids=ids).logits.pow(2).mean().backward()
    optimizer.step()
    optimizer.zero_grad()


def check_lifecycle(build, config, adapter_params: int, head_params: int, tmp_path) -> PeftModel:
    """Identity at init, exact counts, training changes the output, save -> load reproduces it; returns the loaded."""
    ids = input_ids()
    base = build()
    reference = logits(base, ids)
    model = get_peft_model(base, config)
    assert torch.equal(logits(model, ids), reference), "a fresh adapter must leave the outputs exactly unchanged"
    assert adapter_parameter_count(model) == adapter_params
    assert model.get_nb_trainable_parameters()[0] == adapter_params + head_params

    train_one_step(model, ids)
    trained = logits(model, ids)
    assert not torch.allclose(trained, reference)

    model.save_pretrained(tmp_path)
    assert (tmp_path / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "adapter_model.bin").exists()
    loaded = PeftModel.from_pretrained(build(), tmp_path)
    assert (logits(loaded, ids) - trained).abs().max().item() <= 1e-5
    return loaded

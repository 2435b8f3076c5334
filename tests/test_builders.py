"""Every searched point becomes a real PEFT model: exact counts, training, save -> load round trip."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import PeftModel
from transformers import BertForSequenceClassification, LlamaForCausalLM

from autopeft.builders import BuildContext, build_adapter, build_peft_config
from autopeft.space import SearchSpace, count_trainable_params, parse_space
from autopeft.tuners.lofit.ranking import HeadRanking
from tests.conftest import tiny_bert_config, tiny_llama_config

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
POINTS_PER_SPACE = 200

BERT = (tiny_bert_config(hidden_size=64, intermediate_size=128, num_hidden_layers=3), BertForSequenceClassification,
        "classification")
LLAMA = (tiny_llama_config(hidden_size=128, intermediate_size=128, num_hidden_layers=3), LlamaForCausalLM, "causal_lm")


def fresh(model_cls, config):
    torch.manual_seed(0)
    return model_cls(config).eval()


def context_for(config) -> BuildContext:
    scores = torch.rand(config.num_hidden_layers, config.num_attention_heads,
                        generator=torch.Generator().manual_seed(0))
    return BuildContext(head_ranking=HeadRanking.from_tensor("tiny", scores))


def adapter_params(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters()
               if p.requires_grad and ".modules_to_save." not in n and ".classifier." not in n)


def batch(config, kind):
    ids = torch.randint(5, config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, -3:] = 0  # padding in the batch
    labels = torch.tensor([0, 1]) if kind == "classification" else ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def check_point(point, config, model_cls, kind, context, tmp_path, round_trip: bool):
    model = build_adapter(point, config, kind, context)(fresh(model_cls, config))
    assert adapter_params(model) == count_trainable_params(point, config), point.describe()
    inputs = batch(config, kind)
    model.train()
    model(**inputs).loss.backward()
    trained = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None for p in trained), point.describe()
    if not round_trip:
        return
    with torch.no_grad():  # move away from the identity init so the comparison means something
        generator = torch.Generator().manual_seed(2)
        for p in trained:
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    model.eval()
    with torch.no_grad():
        expected = model(**inputs).logits
    model.save_pretrained(tmp_path)
    assert (tmp_path / "adapter_model.safetensors").is_file()
    loaded = PeftModel.from_pretrained(fresh(model_cls, config), tmp_path).eval()
    with torch.no_grad():
        actual = loaded(**inputs).logits
    assert (actual - expected).abs().max() <= 1e-5, point.describe()


@pytest.mark.parametrize("space_name", ["autopeft", "lora", "unified"])
@pytest.mark.parametrize("family", [BERT, LLAMA], ids=["bert", "llama"])
def test_random_points_build_train_and_round_trip(space_name, family, tmp_path):
    config, model_cls, kind = family
    space = SearchSpace.from_file(SPACES / f"{space_name}.yaml", config)
    context = context_for(config)
    rng = np.random.default_rng(0)
    checked = 0
    for index in range(POINTS_PER_SPACE):
        point = space.decode(space.sample(rng))
        if point.is_empty:
            continue
        # every point: build, exact count, forward + backward; every 5th point also save -> load
        check_point(point, config, model_cls, kind, context, tmp_path / str(index), round_trip=index % 5 == 0)
        checked += 1
    assert checked > POINTS_PER_SPACE * 0.8


def test_pure_lora_and_ia3_export_without_autopeft(tmp_path):
    config, model_cls, kind = BERT
    for name, module in [("lora", {"targets": ["query", "value"], "size": 4}), ("ia3", {})]:
        space = SearchSpace(parse_space({"name": name, "modules": {name: module}}, name), config)
        peft_config = build_peft_config(space.decode({}), config, kind)
        assert peft_config.peft_type.value == name.upper()
        model = build_adapter(space.decode({}), config, kind)(fresh(model_cls, config))
        model.save_pretrained(tmp_path / name)
        config.save_pretrained(tmp_path / "base")
        saved = json.loads((tmp_path / name / "adapter_config.json").read_text())
        assert saved["peft_type"] == name.upper()
    script = f"""
import sys, torch
from transformers import BertConfig, BertForSequenceClassification
from peft import PeftModel
config = BertConfig.from_pretrained({str(tmp_path / 'base')!r})
for name in ("lora", "ia3"):
    torch.manual_seed(0)
    model = PeftModel.from_pretrained(BertForSequenceClassification(config), {str(tmp_path)!r} + "/" + name)
    model(input_ids=torch.tensor([[5, 6, 7]]))
assert "autopeft" not in sys.modules
print("loaded")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd="/",
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0 and "loaded" in done.stdout, done.stderr[-2000:]


def test_mixed_point_is_one_composite_model(tmp_path):
    config, model_cls, kind = BERT
    spec = parse_space({"name": "mam", "modules": {
        "lora": {"targets": ["query", "value"], "size": 4},
        "parallel_adapter": {"location": "ffn", "size": 16, "scaling": 4.0},
        "prefix": {"size": 5},
    }}, "mam")
    point = SearchSpace(spec, config).decode({})
    peft_config = build_peft_config(point, config, kind)
    assert peft_config.peft_type.value == "AUTOPEFT" and len(peft_config.components) == 3
    check_point(point, config, model_cls, kind, BuildContext(), tmp_path, round_trip=True)


def test_decoder_prefix_on_every_layer_uses_peft_prefix_tuning(tmp_path):
    config, model_cls, kind = LLAMA
    space = SearchSpace(parse_space({"name": "p", "modules": {"prefix": {"size": 6}}}, "p"), config)
    point = space.decode({})
    assert build_peft_config(point, config, kind).peft_type.value == "PREFIX_TUNING"
    model = build_adapter(point, config, kind)(fresh(model_cls, config))
    assert model.get_nb_trainable_parameters()[0] == count_trainable_params(point, config)


def test_lofit_without_a_head_ranking_is_a_clear_error():
    from autopeft.errors import SpaceError

    config, _, kind = BERT
    space = SearchSpace(parse_space({"name": "l", "modules": {"lofit": {"size": 3}}}, "l"), config)
    with pytest.raises(SpaceError, match="head ranking"):
        build_peft_config(space.decode({}), config, kind)


def test_empty_point_is_rejected():
    from autopeft.errors import SpaceError
    from autopeft.space import PeftPoint

    with pytest.raises(SpaceError, match="no PEFT module"):
        build_peft_config(PeftPoint(modules={}), BERT[0], "classification")

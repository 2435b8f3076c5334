"""SPT sensitivity maps on tiny random models: the scores, what is scored, saving, masks and the cache."""

import json
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from autopeft.arch import MATRIX_ROLES, architecture_for
from autopeft.data import collate, load_task, tokenize_task
from autopeft.errors import AutopeftError
from autopeft.models import get_base_model
from autopeft.priors import (
    SensitivityMap,
    atomic_folder,
    cached_path,
    compute_sensitivity,
    load_or_compute_sensitivity,
)
from autopeft.priors import sensitivity as sensitivity_module
from autopeft.tuners.sparse import sparse_entries
from tests.conftest import tiny_llama_config
from tests.search_helpers import VOCAB, write_tiny_model, write_tiny_task


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return get_base_model(write_tiny_model(tmp_path_factory.mktemp("bert")), "classification")


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return load_task(write_tiny_task(tmp_path_factory.mktemp("task"), rows=64))


@pytest.fixture(scope="module")
def bert_map(bert, task):
    return compute_sensitivity(bert, task, batches=2, batch_size=8, max_length=32, seed=0)


def test_scores_are_summed_squared_batch_gradients(bert, task):
    sensitivity = compute_sensitivity(bert, task, batches=3, batch_size=8, max_length=32, seed=1)

    # the same three batches, drawn here from the seed, through plain autograd over every parameter
    split = tokenize_task(task, bert.tokenizer, 32)["train"]
    batches = np.random.default_rng(1).permutation(len(split))[:24].reshape(3, 8)
    model = bert.fresh_copy(1).train()
    weights = {name: module.weight for name, module in model.named_modules() if name in sensitivity.scores}
    expected = {name: torch.zeros_like(weight) for name, weight in weights.items()}
    torch.manual_seed(1)  # the same dropout masks
    for rows in batches:
        batch = collate(split, rows, bert.tokenizer.pad_token_id)
        labels = batch.pop("labels")
        loss = F.cross_entropy(model(**batch).logits, labels)
        model.zero_grad()
        loss.backward()
        for name, weight in weights.items():
            expected[name] += weight.grad**2

    assert sensitivity.meta["batches"] == 3
    assert set(expected) == set(sensitivity.scores)
    for name, score in sensitivity.scores.items():
        assert score.dtype == torch.float32
        torch.testing.assert_close(score, expected[name], rtol=1e-5, atol=1e-12 * float(expected[name].max()))


def test_only_the_role_matrices_of_every_layer_are_scored(bert, bert_map):
    arch = architecture_for(bert.config)
    expected = {
        f"bert.{arch.module_name(layer, relative)}": (layer, role)
        for layer in range(bert.config.num_hidden_layers)
        for role in MATRIX_ROLES
        for relative in arch.matrices[role]
    }
    assert bert_map.index() == expected
    weights = dict(bert.pristine.named_parameters())
    for name, score in bert_map.scores.items():
        assert score.shape == weights[f"{name}.weight"].shape
        assert float(score.sum()) > 0
    excluded = ("embeddings", "classifier", "LayerNorm", "pooler")
    assert not any(word in name for name in bert_map.scores for word in excluded)
    assert bert_map.model_id == bert.source.name


def test_a_small_split_gives_fewer_batches(bert, task):
    sensitivity = compute_sensitivity(bert, task, batches=16, batch_size=24, max_length=32, seed=0)
    assert (sensitivity.meta["batches"], sensitivity.meta["examples"]) == (3, 64)  # 24 + 24 + 16 rows


def test_summary_pools_scores_per_layer_and_role(bert_map):
    summary = bert_map.summary()
    assert summary["layers"] == [0, 1] and summary["roles"] == list(MATRIX_ROLES)
    query = bert_map.scores["bert.encoder.layer.1.attention.self.query"]
    assert summary["total"][1]["query"] == pytest.approx(float(query.double().sum()))
    assert summary["mean"][1]["query"] == pytest.approx(float(query.double().mean()))


def test_save_and_load_round_trip_in_bfloat16(bert_map, tmp_path):
    bert_map.save(tmp_path / "map")
    assert sorted(p.name for p in (tmp_path / "map").iterdir()) == ["meta.json", "scores.safetensors"]
    loaded = SensitivityMap.load(tmp_path / "map")
    assert loaded.model_id == bert_map.model_id and loaded.meta == bert_map.meta
    assert loaded.index() == bert_map.index()
    for name, score in bert_map.scores.items():
        assert loaded.scores[name].dtype == torch.float32
        torch.testing.assert_close(loaded.scores[name], score, rtol=2**-8, atol=0)
    with pytest.raises(AutopeftError, match="does not hold a sensitivity map"):
        SensitivityMap.load(tmp_path)


def test_top_fraction_mask_keeps_the_highest_scores(bert_map):
    names = [n for n, (_, role) in bert_map.index().items() if role in ("query", "ffn_in")]
    mask = bert_map.top_fraction_mask(names, 0.05)
    assert set(mask.indices) == set(names)
    for name in names:
        score = bert_map.scores[name]
        chosen = mask.indices[name]
        assert chosen.numel() == sparse_entries(0.05, *score.shape)
        rest = torch.ones(score.numel(), dtype=torch.bool)
        rest[chosen] = False
        assert score.flatten()[chosen].min() >= score.flatten()[rest].max()
    with pytest.raises(AutopeftError, match="no scores"):
        bert_map.top_fraction_mask(["bert.pooler.dense"], 0.05)
    with pytest.raises(AutopeftError, match="density"):
        bert_map.top_fraction_mask(names, 0.0)


def test_ties_go_to_the_lower_index():
    scores = {"w": torch.tensor([[1.0, 2.0, 2.0], [2.0, 0.0, 2.0]])}
    tied = SensitivityMap("m", scores, {"modules": {"w": [0, "query"]}})
    assert tied.top_fraction_mask(["w"], 0.5).indices["w"].tolist() == [1, 2, 3]


def test_the_cache_is_hit_on_the_second_call(bert, task, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOPEFT_CACHE", str(tmp_path))
    settings = dict(batches=2, batch_size=8, max_length=32, seed=0)
    first, hit = load_or_compute_sensitivity(bert, task, **settings)
    assert not hit

    def must_not_compute(*args, **kwargs):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(sensitivity_module, "compute_sensitivity", must_not_compute)
    second, hit = load_or_compute_sensitivity(bert, task, **settings)
    assert hit
    assert all(torch.equal(second.scores[name], score) for name, score in first.scores.items())  # cold == warm
    entries = list((tmp_path / "sensitivity").iterdir())
    assert len(entries) == 1 and not entries[0].name.startswith(".")
    with pytest.raises(AssertionError, match="cache was not used"):
        load_or_compute_sensitivity(bert, task, **{**settings, "seed": 1})


def test_cache_keys_and_atomic_entries(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOPEFT_CACHE", str(tmp_path))
    assert cached_path("sensitivity", seed=0, task="t") == cached_path("sensitivity", task="t", seed=0)
    assert cached_path("sensitivity", seed=0, task="t") != cached_path("sensitivity", seed=1, task="t")
    assert cached_path("sensitivity", seed=0).parent == tmp_path / "sensitivity"

    entry = cached_path("sensitivity", seed=0)
    with pytest.raises(RuntimeError), atomic_folder(entry) as staging:
        (staging / "half.json").write_text("{")
        raise RuntimeError("killed mid-write")
    assert not entry.exists() and list(entry.parent.iterdir()) == []
    with atomic_folder(entry) as staging:
        (staging / "whole.json").write_text("{}")
    assert [p.name for p in entry.iterdir()] == ["whole.json"] and len(list(entry.parent.iterdir())) == 1


def test_heatmap_is_a_png(bert_map, tmp_path, monkeypatch):
    bert_map.heatmap(tmp_path / "sensitivity.png")
    assert (tmp_path / "sensitivity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.setitem(sys.modules, "matplotlib.colors", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(AutopeftError, match=r"pip install 'autopeft\[report\]'"):
        bert_map.heatmap(tmp_path / "again.png")


def test_causal_lm_llama(tmp_path):
    from transformers import AutoTokenizer, LlamaForCausalLM

    from autopeft.models import resolve_model

    torch.manual_seed(0)
    config = tiny_llama_config(vocab_size=VOCAB, pad_token_id=0, bos_token_id=101, eos_token_id=102)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "llama")
    AutoTokenizer.from_pretrained(resolve_model("minilm").path).save_pretrained(tmp_path / "llama")
    (tmp_path / "qa").mkdir()
    for split, count in (("train", 12), ("dev", 4), ("test", 4)):
        rows = [{"question": f"what is {i} plus {i}?", "answer": f"it is {2 * i}"} for i in range(count)]
        (tmp_path / "qa" / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    base = get_base_model(str(tmp_path / "llama"), "causal_lm", num_labels=0)

    sensitivity = compute_sensitivity(base, load_task(str(tmp_path / "qa")), batches=2, batch_size=4, max_length=32)
    index = sensitivity.index()
    assert len(index) == 2 * 7  # q, k, v, o, gate, up, down per layer
    assert index["model.layers.1.mlp.gate_proj"] == index["model.layers.1.mlp.up_proj"] == (1, "ffn_in")
    assert sensitivity.scores["model.layers.0.self_attn.k_proj"].shape == (16, 32)
    assert all(torch.isfinite(s).all() and s.sum() > 0 for s in sensitivity.scores.values())
    summary = sensitivity.summary()
    assert summary["roles"] == list(MATRIX_ROLES) and summary["layers"] == [0, 1]

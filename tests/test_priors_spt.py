"""SPT allocation: the τ sweep meets the budget, SPT's structured/unstructured rule holds, and the
allocation is a point that counts, builds, trains only its mask, saves and loads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autopeft.priors.spt import SPT_ALPHA, SPT_RANK, spt_allocation
from autopeft.space import count_trainable_params
from autopeft.space.point import PeftPoint
from tests.conftest import tiny_bert_config, tiny_llama_config


def synthetic_scores(config, seed=0, hot=()):
    """Per-weight scores for every role matrix; the (layer, role) pairs in ``hot`` are much more sensitive."""
    from autopeft.arch import architecture_for

    arch = architecture_for(config)
    shapes = arch.matrix_shapes(config)
    generator = torch.Generator().manual_seed(seed)
    scores = {}
    for layer in range(config.num_hidden_layers):
        for role, relatives in arch.matrices.items():
            for relative, (rows, cols) in zip(relatives, shapes[role]):
                values = torch.rand(rows, cols, generator=generator) ** 4
                scores[f"model.{arch.module_name(layer, relative)}"] = values * (50.0 if (layer, role) in hot else 1.0)
    return scores


@pytest.mark.parametrize("make_config", [tiny_bert_config, tiny_llama_config])
@pytest.mark.parametrize("budget", [300, 2_000, 5_000])
def test_the_tau_sweep_meets_the_budget_within_one_percent(make_config, budget):
    config = make_config()
    allocation = spt_allocation(synthetic_scores(config, hot={(0, "value"), (1, "query")}), config, budget)
    assert abs(allocation.params - budget) <= 0.01 * budget
    assert allocation.params <= budget


def test_a_budget_beyond_lora_everywhere_is_a_clear_error():
    from autopeft.errors import AutopeftError

    config = tiny_bert_config()
    with pytest.raises(AutopeftError, match="exceeds rank-8 LoRA on every matrix"):
        spt_allocation(synthetic_scores(config), config, 10**6)


def test_structured_where_sensitive_weights_cluster_by_the_alpha_rule():
    config = tiny_bert_config()
    scores = synthetic_scores(config, hot={(1, "query")})
    allocation = spt_allocation(scores, config, 1_500)
    assert "query" in allocation.structured.get(1, [])   # the hot matrix goes LoRA
    assert sum(len(roles) for roles in allocation.structured.values()) < 12
    shapes = {name: tensor.shape for name, tensor in scores.items()}
    for name, indices in allocation.sparse.items():
        rows, cols = shapes[name]
        assert indices.numel() < SPT_RANK * (rows + cols) / SPT_ALPHA      # else it would have gone to LoRA
        top = torch.argsort(scores[name].reshape(-1), descending=True)[: indices.numel()]
        assert set(top.tolist()) == set(indices.tolist())                 # a sparse matrix tunes its top entries


def test_the_allocation_is_a_point_that_counts_builds_trains_only_its_mask_and_reloads(tmp_path):
    from peft import PeftModel, get_peft_model
    from transformers import BertForSequenceClassification

    from autopeft.builders import build_peft_config

    config = tiny_bert_config(hidden_dropout_prob=0.0)
    model = BertForSequenceClassification(config)
    scores = synthetic_scores(config, hot={(0, "value")})
    scores = {name.replace("model.", "bert."): value for name, value in scores.items()}
    allocation = spt_allocation(scores, config, 2_500)
    point = allocation.to_point(tmp_path / "mask.safetensors")
    assert set(point.modules) == {"lora", "sparse"}
    assert count_trainable_params(point, config) == allocation.params
    assert PeftPoint.from_dict(point.to_dict()) == point

    peft_model = get_peft_model(model, build_peft_config(point, config, "classification"))
    trainable = {n: p for n, p in peft_model.named_parameters() if p.requires_grad and "classifier" not in n}
    assert sum(p.numel() for p in trainable.values()) == allocation.params
    before = {n: p.detach().clone() for n, p in peft_model.named_parameters()}
    optimizer = torch.optim.SGD([p for p in peft_model.parameters() if p.requires_grad], lr=0.5)
    batch = {"input_ids": torch.randint(0, config.vocab_size, (4, 12)), "labels": torch.tensor([0, 1, 0, 1])}
    for _ in range(3):
        peft_model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    changed = {n for n, p in peft_model.named_parameters() if not torch.equal(p, before[n])}
    assert changed <= set(trainable) | {n for n in before if "classifier" in n}
    peft_model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(BertForSequenceClassification(config), tmp_path / "adapter")
    saved = {n: p for n, p in reloaded.named_parameters() if any(k in n for k in ("lora_", "sparse"))}
    trained = {n: p for n, p in peft_model.named_parameters() if any(k in n for k in ("lora_", "sparse"))}
    assert saved.keys() == trained.keys() and saved
    assert all(torch.equal(saved[n], trained[n]) for n in saved)


def test_sensitivity_command_writes_map_heatmap_and_trainable_spt_points(tmp_path, monkeypatch, capsys):
    import json

    from autopeft.cli import main
    from tests.search_helpers import write_tiny_model, write_tiny_task

    monkeypatch.setenv("AUTOPEFT_CACHE", str(tmp_path / "cache"))
    model, task = write_tiny_model(tmp_path / "model"), write_tiny_task(tmp_path / "task")
    out = tmp_path / "out"
    args = ["sensitivity", "--model", model, "--dataset", task, "--out", str(out), "--batches", "2",
            "--batch-size", "8", "--max-length", "16", "--budgets", "400,1500"]
    main(args)
    summary = json.loads((out / "summary.json").read_text())
    assert not summary["cached"] and (out / "heatmap.png").is_file() and (out / "sensitivity").is_dir()
    for entry in summary["spt_points"]:
        assert abs(entry["params"] - entry["budget_params"]) <= 0.01 * entry["budget_params"]
        assert (out / entry["folder"] / "point.yaml").is_file()
    main(args)
    assert json.loads((out / "summary.json").read_text())["cached"]  # the second run reuses the map

    moved = tmp_path / "moved"
    (out / "spt-1500").rename(moved)  # a point folder is self-contained
    result = tmp_path / "trial.json"
    main(["trial", "--model", model, "--dataset", task, "--point", str(moved / "point.yaml"), "--max-length", "16",
          "--batch-size", "8", "--json", str(result)])
    record = json.loads(result.read_text())
    assert record["status"] == "ok"
    assert record["adapter_params"] == next(p["params"] for p in summary["spt_points"] if p["folder"] == "spt-1500")


def test_nearest_space_point_shares_the_allocation_placements():
    import yaml

    from autopeft.priors.spt import allocation_placements, nearest_space_params
    from autopeft.space import SearchSpace, parse_space

    config = tiny_bert_config()
    space = SearchSpace(parse_space(yaml.safe_load("""
name: per-layer
placement: {mode: per_module}
modules:
  lora:
    optional: true
    targets: {choices: [[query], [value], [query, value]]}
    size: {grid: [2, 4, 8]}
  sparse:
    optional: true
    targets: {choices: [[ffn_in, ffn_out], [query, key, value, attention_output]]}
    size: {grid: [0.005, 0.01, 0.05]}
"""), "t"), config, "t")
    allocation = spt_allocation(synthetic_scores(config, hot={(0, "value"), (1, "value")}), config, 3_000)
    params = nearest_space_params(space, allocation, np.random.default_rng(0), draws=500)
    point = space.decode(params)
    assert "lora" in point.modules and "value" in point.modules["lora"].targets
    spt_lora = {(layer, r) for layer, r, kind in allocation_placements(allocation) if kind == "lora"}
    assert {(0, "value"), (1, "value")} <= spt_lora
    assert {(0, "value"), (1, "value")} <= {(layer, r) for layer in point.modules["lora"].layers
                                            for r in point.modules["lora"].targets}


SPT_SPACE = """\
name: tiny-spt
placement: {mode: per_module}
modules:
  lora:
    optional: true
    targets: {choices: [[query, value], [ffn_in, ffn_out]]}
    size: {grid: [2, 4, 8]}
  sparse:
    optional: true
    targets: {choices: [[query, key, value, attention_output], [ffn_in, ffn_out]]}
    size: {grid: [0.01, 0.05]}
"""


def test_search_with_the_sensitivity_prior_starts_from_spt_points_and_reuses_the_cached_map(tmp_path, monkeypatch):
    import optuna

    from autopeft.search import records as R
    from autopeft.search.run import read_run_info, run_search
    from autopeft.search.settings import merge_settings
    from tests.search_helpers import write_tiny_model, write_tiny_task

    monkeypatch.setenv("AUTOPEFT_CACHE", str(tmp_path / "cache"))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    (tmp_path / "space.yaml").write_text(SPT_SPACE)
    inputs = dict(model=write_tiny_model(tmp_path / "model"), dataset=write_tiny_task(tmp_path / "task"),
                  space=str(tmp_path / "space.yaml"), trials=4, sampler="random", baselines=False, quasi_random=0,
                  final_seeds=0, max_length=16, batch_size=16, prior=["sensitivity"], prior_batches=2,
                  prior_budgets=["300", "1500"], sensitive_layers=1)

    class Notes:
        def __init__(self):
            self.lines = []

        def on_note(self, message):
            self.lines.append(message)

        def on_trial(self, record, progress):
            pass

    first, second = Notes(), Notes()
    run_search(merge_settings({}, {**inputs, "out": str(tmp_path / "a")}), first)
    run_search(merge_settings({}, {**inputs, "out": str(tmp_path / "b"), "seed": 1, "prior_batches": 2}), second)
    assert any("computed" in line for line in first.lines)
    assert any("most sensitive layers" in line for line in first.lines)
    info = read_run_info(tmp_path / "a")
    trials = optuna.load_study(study_name=R.rung_study_name(info.study_name, 0), storage=info.open_storage()).trials
    origins = [t.user_attrs.get(R.ORIGIN) for t in trials]
    assert origins[:2] == ["prior:spt-300", "prior:spt-1500"]
    assert all(t.user_attrs.get(R.STATUS) == "ok" for t in trials[:2])
    layers = {layer for t in trials for module in t.user_attrs[R.POINT]["modules"].values()
              for layer in module["layers"]}
    assert len(layers) == 1   # --sensitive-layers 1
    # another seed is another map; the same settings again read it from the cache
    third = Notes()
    run_search(merge_settings({}, {**inputs, "out": str(tmp_path / "c")}), third)
    assert any("read from the cache" in line for line in third.lines)

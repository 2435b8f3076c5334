"""Data selection inside a search (space ``data:`` dimensions, ``--subset-strategy``) and the pool warm-up."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from autopeft.cli import main
from autopeft.search import records as R
from autopeft.search.run import read_run_info
from tests.conftest import tiny_bert_config, tiny_llama_config
from tests.search_helpers import VOCAB, lora_builder, write_tiny_model, write_tiny_task

DATA_SPACE = """\
name: tiny-lora-data
modules:
  lora: {targets: [query, value], size: {grid: [2, 4]}, alpha: 2.0}
data:
  strategy: {choices: [kcenter, stratified]}
  size: {choices: [16, "50%"]}
"""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    base = tmp_path_factory.mktemp("data-inputs")
    (base / "space.yaml").write_text(DATA_SPACE)
    (base / "lora.yaml").write_text(DATA_SPACE.split("data:")[0])
    return {"model": write_tiny_model(base / "model"), "dataset": write_tiny_task(base / "task"),
            "pool": write_tiny_task(base / "pool", rows=48), "space": str(base / "space.yaml"),
            "lora_space": str(base / "lora.yaml")}


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("AUTOPEFT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("autopeft.search.evaluator.builders_adapter_builder", lora_builder)


@pytest.fixture
def runs(monkeypatch):
    """Every TrialRunner.run call's train indices and warm-up, in order."""
    from autopeft.trial import TrialRunner

    calls, original = [], TrialRunner.run

    def spy(self, adapter, fidelity, seed, training, **kwargs):
        calls.append({"indices": kwargs.get("train_indices"), "warmup": kwargs.get("warmup"), "fidelity": fidelity})
        return original(self, adapter, fidelity, seed, training, **kwargs)

    monkeypatch.setattr(TrialRunner, "run", spy)
    return calls


def search(inputs, out, *extra, space=None):
    main(["search", "--model", inputs["model"], "--dataset", inputs["dataset"], "--space", space or inputs["space"],
          "--max-length", "16", "--batch-size", "8", "--lr", "5e-3", "--final-seeds", "0", "--out", str(out), *extra])
    info = read_run_info(out)
    return [r for r in R.load_records(info.open_storage(), info.study_name, info.objectives)["rung-0"] if r.trained]


def independent_order(strategy: str, inputs, seed: int = 0) -> np.ndarray:
    """The strategy's ranking of the task's train split, computed without the search or any cache."""
    from autopeft.data import load_task
    from autopeft.priors.selection import SelectionInputs, get_strategy, mean_pooled_embeddings, task_labels, task_texts

    task = load_task(inputs["dataset"])
    texts = task_texts(task)
    selection = SelectionInputs(texts, task_labels(task), texts,
                                embed=lambda t: mean_pooled_embeddings(inputs["model"], t, max_length=16))
    return get_strategy(strategy).order(selection, seed)


def test_space_data_dimensions_decode_and_round_trip(tmp_path):
    from autopeft.space import PeftPoint, SearchSpace

    (tmp_path / "space.yaml").write_text(DATA_SPACE)
    space = SearchSpace.from_file(tmp_path / "space.yaml", tiny_bert_config())
    assert {"data.strategy", "data.size"} <= {d.name for d in space.dimensions}
    assert space.cardinality() == 2 * 2 * 2
    point = space.decode(space.sample(np.random.default_rng(1)))
    assert point.data["strategy"] in ("kcenter", "stratified") and point.data["size"] in (16, "50%")
    assert PeftPoint.from_dict(point.to_dict()) == point
    point.save(tmp_path / "point.yaml")
    assert PeftPoint.from_file(tmp_path / "point.yaml").data == point.data


def test_each_trial_trains_on_its_points_selection(inputs, tmp_path, runs):
    # one rung: a trial promoted to a higher rung would be a fifth run (trained on the same selection)
    records = search(inputs, tmp_path / "run", "--trials", "4", "--sampler", "random", "--no-baselines",
                     "--fidelity", "1")
    assert len(records) == 4 and len(runs) == 4
    orders = {s: independent_order(s, inputs) for s in ("kcenter", "stratified")}
    train_rows = len(orders["kcenter"])
    seen = set()
    for record, call in zip(sorted(records, key=lambda r: r.number), runs):
        strategy, size = record.params["data.strategy"], record.params["data.size"]
        expected = 16 if size == 16 else round(0.5 * train_rows)
        assert np.array_equal(call["indices"], np.sort(orders[strategy][:expected]))
        assert record.attrs[R.RESULT]["train_examples"] == expected
        seen.add((strategy, size))
    assert len(seen) > 1


def test_subset_strategy_cuts_every_fidelity_from_one_ranking(inputs, tmp_path, runs):
    search(inputs, tmp_path / "run", "--space", inputs["lora_space"], "--trials", "3", "--sampler", "random",
           "--subset-strategy", "stratified", "--train-examples", "24", "--fidelity", "0.5,1", "--eta", "2",
           "--fidelity-resource", "data", "--lr", "5e-2", "--epochs", "40",  # enough for 12 examples to beat trivial
           space=inputs["lora_space"])  # data rungs: each trains on a cut subset
    order = independent_order("stratified", inputs)
    sizes = sorted({len(call["indices"]) for call in runs})
    assert sizes == [12, 24]
    for call in runs:
        assert np.array_equal(call["indices"], np.sort(order[: len(call["indices"])]))


def test_pool_warmup_selects_toward_the_task_and_warms_every_trial_up(inputs, tmp_path, runs):
    from autopeft.data import load_task
    from autopeft.priors.selection import SelectionInputs, get_strategy, mean_pooled_embeddings, select, task_texts

    records = search(inputs, tmp_path / "run", "--space", inputs["lora_space"], "--trials", "2", "--sampler",
                     "random", "--warmup-pool", inputs["pool"], "--warmup-size", "20", "--warmup-strategy",
                     "similarity", "--fidelity", "1", space=inputs["lora_space"])  # one rung: one run per trial
    pool_texts = task_texts(load_task(inputs["pool"]))
    selection = SelectionInputs(pool_texts, None, task_texts(load_task(inputs["dataset"])),
                                embed=lambda t: mean_pooled_embeddings(inputs["model"], t, max_length=16))
    expected = [pool_texts[i] for i in select(get_strategy("similarity").order(selection, 0), 20)]
    assert [call["warmup"].texts for call in runs] == [tuple(expected)] * 2
    for record in records:
        assert record.attrs[R.RESULT]["warmup_steps"] == 1  # 20 texts, one batch of (up to) 32


@pytest.mark.parametrize("extra, message", [
    (["--warmup-pool", "somewhere"], "--warmup-pool needs --warmup-size"),
    (["--subset-strategy", "best"], "unknown selection strategy 'best'"),
    (["--warmup-pool", "p", "--warmup-size", "0"], "size must be"),
])
def test_bad_data_selection_input_is_a_one_line_error(inputs, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        search(inputs, tmp_path / "run", "--trials", "1", *extra)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]
    assert not (tmp_path / "run" / "run.json").exists()


def test_space_size_beyond_the_train_split_is_a_one_line_error(inputs, tmp_path, capsys):
    (tmp_path / "big.yaml").write_text(DATA_SPACE.replace("[16, ", "[100000, "))
    with pytest.raises(SystemExit) as exit_info:
        search(inputs, tmp_path / "run", "--trials", "1", space=str(tmp_path / "big.yaml"))
    assert exit_info.value.code == 2
    assert "data.size: size 100000 is larger than the pool" in capsys.readouterr().err
    assert not (tmp_path / "run" / "run.json").exists()


# ----------------------------------------------------------------------------- the warm-up itself

def _lora_config(kind):
    from peft import LoraConfig

    targets = ["query", "value"] if kind != "causal_lm" else ["q_proj", "v_proj"]
    return LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False)


@pytest.mark.parametrize("kind", ["classification", "causal_lm"])
def test_lm_warmup_trains_only_the_adapter_and_is_recorded(kind, monkeypatch):
    """Masked LM (encoder) / causal LM (decoder) warm-up: adapter weights move, frozen base weights do not."""
    from peft import get_peft_model
    from transformers import AutoTokenizer, BertForSequenceClassification, LlamaForCausalLM

    from autopeft.models import resolve_model
    from autopeft.trial.warmup import Warmup, lm_warmup

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("minilm").path)
    if kind == "causal_lm":
        model = LlamaForCausalLM(tiny_llama_config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id))
    else:
        model = BertForSequenceClassification(tiny_bert_config(vocab_size=len(tokenizer)))
    model = get_peft_model(model, _lora_config(kind))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    texts = tuple(f"the movie number {i} was {'good' if i % 2 else 'bad'}" for i in range(40))
    done = lm_warmup(model, tokenizer, kind, Warmup("lm", texts=texts, batch_size=8), max_length=16,
                     learning_rate=1e-2, max_grad_norm=1.0, seed=0, device=torch.device("cpu"))
    assert done["steps"] == 5 and done["examples"] == 40 and np.isfinite(done["final_loss"])
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved and all("lora_" in n for n in moved)
    assert {n for n, p in model.named_parameters() if p.requires_grad} >= moved


def test_warmup_objectives_are_checked():
    from autopeft.trial.warmup import Warmup

    with pytest.raises(ValueError, match="needs texts"):
        Warmup("lm")
    with pytest.raises(ValueError, match="needs train_indices"):
        Warmup("task")
    with pytest.raises(ValueError, match="objective must be"):
        Warmup("contrastive", texts=("a",))


# ----------------------------------------------------------------------------- GOT-D's own setting (issue 20)

def test_masked_lm_head_fitted_on_the_frozen_model_learns_and_round_trips(tmp_path):
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, BertForSequenceClassification

    from autopeft.errors import AutopeftError
    from autopeft.models import resolve_model
    from autopeft.trial.warmup import fit_masked_lm_head, masked_lm_head_for

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("minilm").path)
    model = BertForSequenceClassification(tiny_bert_config(vocab_size=len(tokenizer)))
    frozen = {n: p.detach().clone() for n, p in model.named_parameters()}
    texts = [f"the movie number {i} was {'good' if i % 2 else 'bad'}" for i in range(64)]
    head, facts = fit_masked_lm_head(model, tokenizer, texts, epochs=6, learning_rate=3e-2, batch_size=16,
                                     max_length=16)
    assert facts["steps"] == 24 and facts["final_loss"] < facts["initial_loss"] - 1.0
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters())  # only the head trained
    save_file(head.trained_state(), str(tmp_path / "head.safetensors"))
    again = masked_lm_head_for(model)
    again.load_head_file(str(tmp_path / "head.safetensors"))
    hidden = torch.randn(3, model.config.hidden_size)
    assert torch.allclose(again(hidden), head(hidden))
    other = BertForSequenceClassification(tiny_bert_config(vocab_size=len(tokenizer), hidden_size=16))
    with pytest.raises(AutopeftError, match="another size"):
        masked_lm_head_for(other).load_head_file(str(tmp_path / "head.safetensors"))


def test_warmup_head_is_the_checkpoints_own_else_fitted_and_cached(inputs, tmp_path, monkeypatch):
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, BertForMaskedLM

    from autopeft.models import resolve_model
    from autopeft.priors import mlm_head

    torch.manual_seed(0)
    masked = BertForMaskedLM(tiny_bert_config(vocab_size=VOCAB))
    with torch.no_grad():
        masked.cls.predictions.transform.dense.weight.normal_()
    masked.save_pretrained(tmp_path / "mlm")
    AutoTokenizer.from_pretrained(resolve_model("minilm").path).save_pretrained(tmp_path / "mlm")
    texts = [f"a plot that was {word}" for word in ("good", "bad", "fine", "poor") * 8]
    path, facts = mlm_head.cached_masked_lm_head(str(tmp_path / "mlm"), texts, max_length=16)
    assert facts == {"source": "checkpoint"}
    assert torch.equal(load_file(str(path))["dense.weight"], masked.cls.predictions.transform.dense.weight)

    path, facts = mlm_head.cached_masked_lm_head(inputs["model"], texts, max_length=16)  # a classifier: no head
    assert facts["source"] == "fitted on the frozen model" and facts["texts"] == 32 and path.is_file()
    monkeypatch.setattr(mlm_head, "_fit", lambda *a, **k: pytest.fail("fitted again instead of read from the cache"))
    assert mlm_head.cached_masked_lm_head(inputs["model"], texts, max_length=16) == (path, facts)


def test_tuned_embedding_model_is_fitted_on_the_task_once_and_embeds_differently(inputs, monkeypatch):
    from transformers import AutoConfig

    from autopeft.data import load_task
    from autopeft.priors.selection import mean_pooled_embeddings, task_texts
    from autopeft.priors.selection import tuned as tuned_module

    task = load_task(inputs["dataset"])
    folder = tuned_module.task_tuned_encoder(inputs["model"], task, examples=32, epochs=2, max_length=16)
    assert AutoConfig.from_pretrained(folder).architectures == ["BertModel"]  # the encoder only, LoRA folded in
    texts = task_texts(task)[:8]
    untuned = mean_pooled_embeddings(inputs["model"], texts, max_length=16)
    tuned = mean_pooled_embeddings(str(folder), texts, max_length=16)
    assert tuned.shape == untuned.shape and not np.allclose(tuned, untuned, atol=1e-4)
    monkeypatch.setattr(tuned_module, "_fit_and_merge", lambda *a, **k: pytest.fail("fitted twice"))
    assert tuned_module.task_tuned_encoder(inputs["model"], task, examples=32, epochs=2, max_length=16) == folder
    assert tuned_module.embedding_model_for(None, "m", task) == "m"
    assert tuned_module.embedding_model_for("other", "m", task) == "other"


def test_search_warms_up_on_texts_chosen_with_tuned_embeddings_and_a_trained_head(inputs, tmp_path, runs):
    from autopeft.data import load_task
    from autopeft.priors.selection import SelectionInputs, get_strategy, mean_pooled_embeddings, select, task_texts
    from autopeft.priors.selection.tuned import task_tuned_encoder

    search(inputs, tmp_path / "run", "--trials", "1", "--sampler", "random", "--warmup-pool", inputs["pool"],
           "--warmup-size", "20", "--warmup-strategy", "similarity", "--embedding-model", "tuned", "--fidelity", "1",
           space=inputs["lora_space"])
    task = load_task(inputs["dataset"])
    folder = task_tuned_encoder(inputs["model"], task, max_length=16)  # what the search fitted (cached)
    pool_texts = task_texts(load_task(inputs["pool"]))
    selection = SelectionInputs(pool_texts, None, task_texts(task),
                                embed=lambda t: mean_pooled_embeddings(str(folder), t, max_length=16))
    expected = [pool_texts[i] for i in select(get_strategy("similarity").order(selection, 0), 20)]
    fit, trial = runs  # the embedding model's short fit (no warm-up), then the search's one trial
    assert fit["warmup"] is None and fit["indices"] is None
    warmup = trial["warmup"]
    assert warmup.texts == tuple(expected) and warmup.head_file and Path(warmup.head_file).is_file()

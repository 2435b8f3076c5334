"""LoFiT step 1 (head selection) on tiny random models: the L1 effect, what trains, the cache and the CLI.

That zero scales and offsets leave a model's outputs exactly unchanged is tested in
tests/test_tuners_lofit.py (test_zero_scale_and_offset_leave_outputs_exactly_unchanged).
"""

import json
import sys

import pytest
import torch

from autopeft.data import load_task
from autopeft.errors import AutopeftError
from autopeft.models import get_base_model
from autopeft.priors import heads as heads_module
from autopeft.priors import heads_plot, load_or_select_heads, ranked_heads, select_heads
from autopeft.tuners.lofit import HeadRanking
from tests.conftest import tiny_llama_config
from tests.search_helpers import VOCAB, write_tiny_model, write_tiny_task

QUICK = dict(epochs=2, batch_size=8, max_length=32, lr=1e-3)  # 64 rows: 16 steps; small steps: AdamW keeps |A| ~lr


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return get_base_model(write_tiny_model(tmp_path_factory.mktemp("bert")), "classification")


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return load_task(write_tiny_task(tmp_path_factory.mktemp("task"), rows=64))


def test_strong_l1_switches_heads_off_and_no_l1_lets_them_grow(bert, task):
    free, free_meta = select_heads(bert, task, l1=0.0, **QUICK)
    sparse, sparse_meta = select_heads(bert, task, l1=1.0, **QUICK)

    assert (free.num_layers, free.num_heads) == (2, 4)  # every head of every layer
    initial = free_meta["initial_mean_norm"]
    assert initial == pytest.approx(1e-3 * 8**0.5, rel=0.5)  # A ~ N(0, 1e-3) over head_dim = 8
    assert sparse_meta["initial_mean_norm"] == initial  # same seed, same draw
    assert min(min(row) for row in free.scores) > initial and free_meta["fraction_near_zero"] == 0
    assert sparse_meta["fraction_near_zero"] >= 0.8
    assert sparse_meta["final_mean_norm"] < 0.25 * initial < 0.25 * free_meta["final_mean_norm"]
    for meta in (free_meta, sparse_meta):
        assert meta["steps"] == 16 and meta["train_examples"] == 64 and meta["seconds"] > 0
        assert meta["trained_task_head"] == ["classifier.weight", "classifier.bias"]
        assert meta["final_loss"] == pytest.approx(meta["final_task_loss"] + meta["l1"] * meta["final_l1_norm"])


def test_only_scales_and_the_fresh_head_train(bert, task, monkeypatch):
    """Spy on the optimizer: it gets exactly the LoFiT scales of every layer and the classifier."""
    seen = {}
    original = torch.optim.AdamW

    def spy(parameters, **kwargs):
        seen["parameters"], seen["kwargs"] = list(parameters), kwargs
        return original(seen["parameters"], **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", spy)
    select_heads(bert, task, l1=1e-3, lr=1e-2, epochs=1, batch_size=32, max_length=32, train_examples=40)
    shapes = sorted(tuple(p.shape) for p in seen["parameters"])
    assert shapes == sorted([(4, 8), (4, 8), (2, 32), (2,)])  # A of 2 layers x 4 heads, classifier W and b
    assert seen["kwargs"] == {"lr": 1e-2, "weight_decay": 0.0}


def test_a_seeded_subset_and_reproducible_rankings(bert, task):
    first, meta = select_heads(bert, task, train_examples=20, seed=3, **QUICK)
    again, _ = select_heads(bert, task, train_examples=20, seed=3, **QUICK)
    other, _ = select_heads(bert, task, train_examples=20, seed=4, **QUICK)
    assert meta["train_examples"] == 20 and meta["steps"] == 2 * 3  # 8 + 8 + 4 rows per epoch
    assert first == again and first != other
    assert first.model_id == bert.source.name


@pytest.mark.parametrize(
    ("setting", "message"),
    [({"l1": -1.0}, "l1 must be"), ({"lr": 0.0}, "lr must be"), ({"epochs": 0}, "epochs must be at least 1"),
     ({"train_examples": 0}, "train_examples must be"), ({"batch_size": 0}, "batch_size must be")],
)
def test_bad_settings_are_user_errors(bert, task, setting, message):
    with pytest.raises(AutopeftError, match=message):
        select_heads(bert, task, **setting)


def test_ranking_round_trip_and_order(tmp_path):
    ranking = HeadRanking.from_tensor("m", torch.tensor([[0.3, 0.9, 0.1], [0.9, 0.0, 0.5]]))
    ranking.save(tmp_path / "ranking.json")
    assert HeadRanking.load(tmp_path / "ranking.json") == ranking
    assert ranked_heads(ranking, 3) == [(0, 1, pytest.approx(0.9)), (1, 0, pytest.approx(0.9)),
                                        (1, 2, pytest.approx(0.5))]
    assert {(layer, head) for layer, head, _ in ranked_heads(ranking, 3)} == {
        (layer, head) for layer, heads in ranking.top_k(3).items() for head in heads}


def test_within_layers_takes_every_layers_best_head_before_any_second_best():
    ranking = HeadRanking.from_tensor("m", torch.tensor([[0.1, 0.2, 0.05], [0.9, 0.8, 0.7], [0.3, 0.6, 0.4]]))
    assert ranking.top_k(3) == {1: [0, 1, 2]}  # globally the loud layer takes all
    spread = ranking.within_layers()
    assert spread.top_k(3) == {0: [1], 1: [0], 2: [1]}
    assert spread.top_k(4) == {0: [1], 1: [0, 1], 2: [1]}  # second bests by their own score: layer 1's 0.8 first


def test_the_probe_fits_the_head_alone_first_and_is_its_own_cache_entry(bert, task, tmp_path, monkeypatch):
    """probe_epochs: an optimizer over the classifier only runs before step 1's (scales + classifier)."""
    monkeypatch.setenv("AUTOPEFT_CACHE", str(tmp_path))
    seen = []
    original = torch.optim.AdamW

    def spy(parameters, **kwargs):
        parameters = list(parameters)
        seen.append(sorted(tuple(p.shape) for p in parameters))
        return original(parameters, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", spy)
    settings = dict(l1=1e-3, lr=1e-2, epochs=1, batch_size=32, max_length=32, train_examples=40)
    plain, _, _ = load_or_select_heads(bert, task, **settings)
    probed, meta, hit = load_or_select_heads(bert, task, probe_epochs=2, **settings)
    assert not hit and meta["probe_epochs"] == 2 and meta["probe_final_loss"] > 0
    assert seen == [sorted([(4, 8), (4, 8), (2, 32), (2,)]), [(2,), (2, 32)], sorted([(4, 8), (4, 8), (2, 32), (2,)])]
    assert probed.scores != plain.scores
    assert load_or_select_heads(bert, task, probe_epochs=2, **settings)[2]  # cached apart from the plain one


def test_the_cache_is_hit_on_the_second_call_and_missed_on_other_settings(bert, task, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOPEFT_CACHE", str(tmp_path))
    settings = dict(l1=1e-2, seed=0, train_examples=24, **QUICK)
    first, first_meta, hit = load_or_select_heads(bert, task, **settings)
    assert not hit
    entries = list((tmp_path / "heads").iterdir())
    assert len(entries) == 1 and sorted(p.name for p in entries[0].iterdir()) == ["meta.json", "ranking.json"]

    def must_not_train(*args, **kwargs):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(heads_module, "select_heads", must_not_train)
    second, second_meta, hit = load_or_select_heads(bert, task, **settings)
    assert hit and second == first and second_meta == first_meta
    for changed in ({"l1": 2e-2}, {"seed": 1}):
        with pytest.raises(AssertionError, match="cache was not used"):
            load_or_select_heads(bert, task, **{**settings, **changed})
    with pytest.raises(AutopeftError, match="l1 must be"):  # checked before the cache is looked at
        load_or_select_heads(bert, task, **{**settings, "l1": -1.0})


def test_heads_plot_is_a_png(tmp_path, monkeypatch):
    ranking = HeadRanking.from_tensor("m", torch.rand(3, 4))
    heads_plot(ranking, tmp_path / "heads.png", mark_top=5)
    assert (tmp_path / "heads.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(AutopeftError, match=r"pip install 'autopeft\[report\]'"):
        heads_plot(ranking, tmp_path / "again.png")


def test_select_heads_command(tmp_path, monkeypatch, capsys):
    from autopeft.cli import main

    monkeypatch.setenv("AUTOPEFT_CACHE", str(tmp_path / "cache"))
    model, data = write_tiny_model(tmp_path / "model"), write_tiny_task(tmp_path / "task", rows=32)
    out = tmp_path / "out"
    args = ["select-heads", "--model", model, "--dataset", data, "--out", str(out), "--epochs", "1",
            "--batch-size", "8", "--max-length", "16", "--top-k", "3"]
    main(args)
    assert sorted(p.name for p in out.iterdir()) == ["heads.png", "ranking.json", "summary.json"]
    ranking = HeadRanking.load(out / "ranking.json")
    summary = json.loads((out / "summary.json").read_text())
    assert not summary["cached"] and summary["meta"]["l1"] == heads_module.DEFAULT_L1 and len(summary["top_heads"]) == 3
    # a new task head: by default it is probed first and the heads are ranked within layers
    assert summary["ranked"] == "within layers" and summary["meta"]["probe_epochs"] == 1
    assert {int(layer): heads for layer, heads in summary["selection"].items()} == ranking.within_layers().top_k(3)
    printed = " ".join(capsys.readouterr().out.split())  # the table's title may wrap
    assert "top 3 of 2 x 4 heads, ranked within layers" in printed
    main(args)
    assert json.loads((out / "summary.json").read_text())["cached"]
    main([*args, "--rank", "global", "--probe-epochs", "0"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ranked"] == "globally" and summary["meta"]["probe_epochs"] == 0
    assert {int(layer): heads for layer, heads in summary["selection"].items()} == HeadRanking.load(
        out / "ranking.json").top_k(3)

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--l1", "-0.5"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error == "error: l1 must be a finite number >= 0, got -0.5"


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

    ranking, meta = select_heads(base, load_task(str(tmp_path / "qa")), l1=0.0, lr=1e-2, epochs=2, batch_size=4,
                                 max_length=32)
    assert (ranking.num_layers, ranking.num_heads) == (2, 4)
    assert meta["trained_task_head"] == []  # the pretrained LM head stays frozen
    assert meta["steps"] == 6 and meta["head"] == "causal_lm"
    assert all(score > meta["initial_mean_norm"] for row in ranking.scores for score in row)
    assert torch.isfinite(torch.tensor(meta["final_task_loss"]))


def test_search_with_the_heads_prior_trains_lofit_points_from_the_cached_ranking(tmp_path, monkeypatch):
    import optuna

    from autopeft.search import records as R
    from autopeft.search.run import read_run_info, run_search
    from autopeft.search.settings import merge_settings

    monkeypatch.setenv("AUTOPEFT_CACHE", str(tmp_path / "cache"))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    (tmp_path / "space.yaml").write_text("name: tiny-lofit\nmodules:\n  lofit:\n    size: {grid: [1, 2, 3]}\n")
    # a trivial trial is on no front, so the LoFiT points must beat the majority class to be exported: at BERT's
    # usual 0.02 init the tiny model's [CLS] features barely depend on the input and a few scalars per head cannot
    # move them in seconds; at 0.2, one rung of 8 epochs at lr 0.05 reaches ~0.8 accuracy
    model = write_tiny_model(tmp_path / "model", initializer_range=0.2)
    settings = merge_settings({}, dict(
        model=model, dataset=write_tiny_task(tmp_path / "task"),
        space=str(tmp_path / "space.yaml"), trials=2, sampler="random", baselines=False, quasi_random=0,
        final_seeds=1, max_length=16, batch_size=16, prior=["heads"], out=str(tmp_path / "run"),
        fidelity=[1.0], lr=5e-2, epochs=8))
    run_search(settings)
    info = read_run_info(tmp_path / "run")
    trials = optuna.load_study(study_name=R.rung_study_name(info.study_name, 0), storage=info.open_storage()).trials
    assert len(trials) == 2 and all(t.user_attrs[R.STATUS] == "ok" for t in trials), \
        [t.user_attrs.get(R.REASON) for t in trials]
    assert all(t.user_attrs[R.RESULT]["adapter_params"] == t.user_attrs[R.ADAPTER_PARAMS] for t in trials)
    assert list((tmp_path / "cache" / "heads").iterdir())  # the ranking was learned once and cached

    # exported offsets, and the folded form (W_o·v in the output projection's bias) giving the same outputs
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from autopeft.export import export_run

    folder, _ = export_run(tmp_path / "run", merged=True)
    exported = sorted(p.parent for p in folder.glob("*/adapter_config.json"))
    assert exported and all((p / "merged" / "config.json").is_file() for p in exported)
    inputs = {"input_ids": torch.randint(5, VOCAB, (3, 10), generator=torch.Generator().manual_seed(0))}
    for adapter in exported:
        merged = AutoModelForSequenceClassification.from_pretrained(adapter / "merged").eval()
        peft_model = PeftModel.from_pretrained(
            AutoModelForSequenceClassification.from_pretrained(settings.model), str(adapter)).eval()
        with torch.no_grad():
            assert torch.allclose(merged(**inputs).logits, peft_model(**inputs).logits, atol=1e-5)

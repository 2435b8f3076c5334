"""Data selection: every strategy's ranking, GOT-D's preference on a toy pool, sizes, the caches and select-data."""

import json

import numpy as np
import pytest
import torch

from autopeft.data import load_task
from autopeft.errors import AutopeftError
from autopeft.priors.selection import (
    STRATEGIES,
    SelectionInputs,
    cached_embeddings,
    embedding_plot,
    get_strategy,
    label_balance,
    load_or_compute_order,
    mean_pooled_embeddings,
    parse_size,
    pool_from_datasets,
    select,
    selection_fingerprint,
    task_labels,
    task_texts,
)
from autopeft.priors.selection import embeddings as embeddings_module
from autopeft.priors.selection.el2n import NOISE_FRACTION
from tests.search_helpers import write_tiny_model, write_tiny_task

DIM = 16
SEEDED = {"random", "stratified", "kcenter", "dsir", "el2n"}  # their order changes with the seed
SCORED = {"similarity", "ot"}  # deterministic scores: the seed only breaks exact ties


def vector_inputs(pool: np.ndarray, target: np.ndarray | None = None, labels=None, calls=None) -> SelectionInputs:
    """Inputs whose texts are keys of the given vectors; ``calls`` (a list) records each embed call."""
    table = {f"p{i}": row for i, row in enumerate(pool)}
    pool_texts = list(table)
    target_texts = None
    if target is not None:
        table.update({f"t{i}": row for i, row in enumerate(target)})
        target_texts = [f"t{i}" for i in range(len(target))]

    def embed(texts):
        if calls is not None:
            calls.append(len(texts))
        return np.stack([table[text] for text in texts]).astype(np.float32)

    return SelectionInputs(pool_texts, labels, target_texts, embed=embed)


def cluster(rng, axis: int, count: int, spread: float = 0.1) -> np.ndarray:
    centre = np.zeros(DIM)
    centre[axis] = 1.0
    points = centre + spread * rng.standard_normal((count, DIM))
    return points / np.linalg.norm(points, axis=1, keepdims=True)


@pytest.fixture
def toy():
    """120 pool points in three clusters labelled 0/1/2 (60/40/20); 30 target points near cluster 1.

    Texts carry words too (for DSIR): cluster 0 is about cats, clusters 1 and 2 and the target about stocks.
    """
    rng = np.random.default_rng(0)
    pool = np.vstack([cluster(rng, 0, 60, 0.15), cluster(rng, 1, 40, 0.15), cluster(rng, 2, 20, 0.15)])
    target = cluster(rng, 1, 30, 0.15)
    pool_texts = [f"the cat sat {i}" if i < 60 else f"stock prices rose {i}" for i in range(120)]
    target_texts = [f"stock markets rose {i}" for i in range(30)]
    table = {**dict(zip(pool_texts, pool)), **dict(zip(target_texts, target))}
    return SelectionInputs(pool_texts, np.repeat([0, 1, 2], [60, 40, 20]), target_texts,
                           embed=lambda texts: np.stack([table[text] for text in texts]).astype(np.float32))


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_ranks_the_whole_pool_reproducibly(name, toy):
    order = get_strategy(name).order(toy, seed=0)
    assert order.dtype == np.int64 and np.array_equal(np.sort(order), np.arange(120))
    for size in (1, 7, 50, 120):
        chosen = select(order, size)
        assert len(chosen) == size == len(set(chosen.tolist()))
        assert np.array_equal(chosen, np.sort(order[:size])) and chosen.min() >= 0 and chosen.max() < 120
    assert np.array_equal(get_strategy(name).order(toy, seed=0), order)
    other = get_strategy(name).order(toy, seed=1)
    if name in SEEDED:
        assert not np.array_equal(other, order)
    else:
        assert name in SCORED and np.array_equal(other, order)


def test_embeddings_are_computed_once_per_side_and_shared_when_the_target_is_the_pool():
    rng = np.random.default_rng(0)
    calls = []
    inputs = vector_inputs(cluster(rng, 0, 10), cluster(rng, 1, 4), calls=calls)
    for name in ("similarity", "ot", "kcenter"):
        get_strategy(name).order(inputs, 0)
    assert calls == [10, 4]
    same = vector_inputs(cluster(rng, 0, 10), calls=(calls := []))
    same.target_texts = same.pool_texts
    get_strategy("ot").order(same, 0)
    assert calls == [10] and same.target_embeddings is same.pool_embeddings


def test_stratified_prefixes_keep_the_label_proportions(toy):
    order = get_strategy("stratified").order(toy, seed=3)
    shares = np.bincount(toy.pool_labels) / 120
    for size in range(1, 121):
        counts = np.bincount(toy.pool_labels[order[:size]], minlength=3)
        assert np.abs(counts - size * shares).max() <= 1.0, size


def test_stratified_bins_regression_targets():
    values = np.linspace(0, 5, 100).astype(np.float32)
    inputs = SelectionInputs([str(v) for v in values], values)
    order = get_strategy("stratified").order(inputs, seed=0)
    first_ten = values[order[:10]]
    assert len(np.unique(np.floor(first_ten / 0.5 - 1e-6).clip(0))) == 10  # one from each decile


def test_kcenter_is_the_greedy_farthest_point_traversal(toy):
    order = get_strategy("kcenter").order(toy, seed=0)
    points = toy.pool_embeddings.astype(np.float64)  # 16 dims: no projection
    distances = np.linalg.norm(points[:, None] - points[None], axis=2)
    for k in range(1, 40):
        nearest_chosen = distances[:, order[:k]].min(axis=1)
        remaining = order[k:]
        assert nearest_chosen[order[k]] == pytest.approx(nearest_chosen[remaining].max(), abs=1e-5)
    # a k-center set covers all three clusters with its first three points
    assert set(toy.pool_labels[order[:3]]) == {0, 1, 2}


def test_kcenter_beyond_the_greedy_limit_ranks_by_distance_and_projects_wide_embeddings():
    from autopeft.priors.selection.kcenter import KCenterStrategy

    rng = np.random.default_rng(1)
    inputs = vector_inputs(rng.standard_normal((60, 80)).astype(np.float32))
    strategy = KCenterStrategy(projection_dims=8, greedy_limit=10)
    order = strategy.order(inputs, 0)
    assert strategy.info["dims"] == 8 and strategy.info["greedy_steps"] == 10
    assert 0 < strategy.info["explained_variance"] < 1
    full = KCenterStrategy(projection_dims=8, greedy_limit=60).order(inputs, 0)
    assert np.array_equal(order[:10], full[:10])


def test_similarity_orders_by_cosine_to_the_target_centroid(toy):
    order = get_strategy("similarity").order(toy, seed=0)
    pool = toy.pool_embeddings / np.linalg.norm(toy.pool_embeddings, axis=1, keepdims=True)
    centroid = (toy.target_embeddings / np.linalg.norm(toy.target_embeddings, axis=1, keepdims=True)).mean(axis=0)
    scores = pool @ centroid
    assert np.all(np.diff(scores[order]) <= 1e-6)
    assert set(toy.pool_labels[order[:40]]) == {1}  # the target sits on cluster 1


def test_dsir_prefers_pool_texts_whose_ngrams_the_target_has_and_is_flat_for_its_own_pool():
    rng = np.random.default_rng(0)
    cats = [f"the cat {w} on the mat" for w in rng.choice(["sat", "slept", "purred", "lay"], 100)]
    money = [f"stock prices {w} sharply today" for w in rng.choice(["rose", "fell", "moved", "dipped"], 100)]
    target = [f"the cat {w} on the mat" for w in ("sat", "slept", "napped")] * 10
    inputs = SelectionInputs(cats + money, None, target)
    strategy = get_strategy("dsir")
    order = strategy.order(inputs, seed=0)
    assert (order[:100] < 100).all()  # every cat sentence before any stock sentence
    first_sat = next(i for i, text in enumerate(cats) if "sat" in text)
    first_purred = next(i for i, text in enumerate(cats) if "purred" in text)
    assert list(order).index(first_sat) < list(order).index(first_purred)  # "sat" is in the target, "purred" is not
    assert strategy.info["log_weight_max"] > 0 > strategy.info["log_weight_min"]
    own = SelectionInputs(cats + money)
    own.target_texts = own.pool_texts
    strategy.order(own, seed=0)
    assert strategy.info["log_weight_min"] == pytest.approx(0, abs=1e-9) == strategy.info["log_weight_max"]


def test_el2n_keeps_hard_examples_first_and_puts_likely_label_noise_last():
    """Two classes split by the sign of coordinate 0; |coordinate 0| is the margin. Four labels are flipped."""
    rng = np.random.default_rng(0)
    n = 200
    margin = rng.uniform(0.05, 2.0, n) * rng.choice([-1, 1], n)
    points = np.hstack([margin[:, None], 0.1 * rng.standard_normal((n, 3))]).astype(np.float32)
    labels = (margin > 0).astype(np.int64)
    easy = np.argsort(-np.abs(margin))[:4]  # confidently placed: a flipped label there is surely noise
    labels[easy] = 1 - labels[easy]
    strategy = get_strategy("el2n")
    order = strategy.order(vector_inputs(points, labels=labels), seed=0)
    noisy = int(np.ceil(NOISE_FRACTION * n))
    assert strategy.info["ranked_last_as_noise"] == noisy == 10
    assert set(easy) <= set(order[-noisy:].tolist())
    kept = [i for i in order[:-noisy]]
    assert np.abs(margin[kept[:30]]).mean() < 0.5 * np.abs(margin[kept[-30:]]).mean()  # informative first


def test_el2n_on_regression_targets():
    rng = np.random.default_rng(0)
    points = rng.standard_normal((50, 4)).astype(np.float32)
    targets = (points[:, 0] * 2).astype(np.float32)
    targets[7] = 40.0  # an outlier
    strategy = get_strategy("el2n")
    order = strategy.order(vector_inputs(points, labels=targets), seed=0)
    assert strategy.info["regression"] and order[-1] == 7


@pytest.mark.parametrize("pool_a, pool_b, first", [(90, 10, "B"), (10, 90, "A")])
def test_ot_prefers_the_cluster_the_pretraining_proxy_lacks(pool_a, pool_b, first):
    """GOT-D on two well-separated clusters A and B.

    The target is an even mixture of A and B. The pool stands in for the pre-training distribution (as in
    GOT-D, which approximates P_pre by the candidate pool) and is skewed: 90 % A, 10 % B (or the mirror).
    The target has both clusters, so a plain nearest-to-target rule has no reason to prefer either; GOT-D's
    calibrated gradient of OT(pool, target) w.r.t. the pool masses must be most negative on the cluster the
    pool under-represents relative to the target (adding mass there moves the distribution toward the target
    most), so every point of that cluster is ranked before every point of the other. Mirroring the skew
    mirrors the preference, so the result is about the mass imbalance, not about where the clusters lie.
    """
    rng = np.random.default_rng(0)
    pool = np.vstack([cluster(rng, 0, pool_a), cluster(rng, 1, pool_b)])
    target = np.vstack([cluster(rng, 0, 50), cluster(rng, 1, 50)])
    in_b = np.arange(len(pool)) >= pool_a
    strategy = get_strategy("ot")
    order = strategy.order(vector_inputs(pool, target), seed=0)
    scarce = in_b if first == "B" else ~in_b
    assert scarce[order[: scarce.sum()]].all()
    info = strategy.info
    assert info["converged"] and info["iterations"] < 2000 and info["method"] == "sinkhorn"
    assert info["gradient_min"] < 0 < info["gradient_max"]


def test_ot_matches_the_calibrated_gradient_of_pots_dual_potential():
    import ot as pot

    rng = np.random.default_rng(2)
    pool, target = cluster(rng, 0, 30, 0.5), cluster(rng, 1, 12, 0.5)
    strategy = get_strategy("ot")
    order = strategy.order(vector_inputs(pool, target), seed=0)
    cost = 1 - pool @ target.T
    cost = cost / cost.mean()
    _, log = pot.sinkhorn(np.full(30, 1 / 30), np.full(12, 1 / 12), cost, 0.1, log=True, stopThr=1e-12,
                          numItermax=20000)
    f = 0.1 * np.log(log["u"])
    gradient = f - (f.sum() - f) / 29
    assert np.array_equal(order, np.argsort(gradient, kind="stable"))


def test_ot_subsamples_a_target_too_large_for_the_cost_budget():
    from autopeft.priors.selection.ot import OTStrategy

    rng = np.random.default_rng(0)
    strategy = OTStrategy(max_cost_entries=20 * 10)
    order = strategy.order(vector_inputs(cluster(rng, 0, 20), cluster(rng, 1, 50)), seed=0)
    assert len(order) == 20 and strategy.info["target_points"] == 50 and strategy.info["target_used"] == 10


@pytest.mark.parametrize("name, missing", [
    ("stratified", "labels"), ("el2n", "labels"), ("similarity", "target"), ("dsir", "target"), ("ot", "target"),
    ("kcenter", "embeddings"),
])
def test_missing_requirements_are_one_line_errors(name, missing):
    inputs = SelectionInputs(["a", "b", "c"], np.array([0, 1, 0]) if missing != "labels" else None,
                             ["x"] if missing != "target" else None,
                             embed=(lambda t: np.ones((len(t), 2), np.float32)) if missing != "embeddings" else None)
    with pytest.raises(AutopeftError, match=f"strategy '{name}' needs") as error:
        get_strategy(name).order(inputs, 0)
    assert missing.rstrip("s") in str(error.value) and "\n" not in str(error.value)


def test_bad_inputs_are_user_errors():
    with pytest.raises(AutopeftError, match=r"unknown selection strategy 'nope' \(known: dsir, el2n, kcenter, ot, "
                                            r"random, similarity, stratified\)"):
        get_strategy("nope")
    assert get_strategy(" OT ").name == "ot"
    with pytest.raises(AutopeftError, match="one label per pool text"):
        SelectionInputs(["a", "b"], np.array([0, 1, 1]))
    bad = SelectionInputs(["a", "b"], embed=lambda t: np.ones(3))
    with pytest.raises(AutopeftError, match="returned shape"):
        get_strategy("kcenter").order(bad, 0)
    with pytest.raises(AutopeftError, match="empty pool"):
        get_strategy("random").order(SelectionInputs([]), 0)


@pytest.mark.parametrize("size, pool, expected", [
    ("500", 1000, 500), (500, 1000, 500), ("5%", 1000, 50), ("2.5%", 1000, 25), ("100%", 7, 7), (0.1, 1000, 100),
    ("0.25", 8, 2), (1.0, 9, 9), ("1", 9, 1), (np.int64(3), 9, 3), (12.0, 20, 12),
])
def test_parse_size(size, pool, expected):
    assert parse_size(size, pool) == expected


@pytest.mark.parametrize("size, message", [
    ("0", "at least one example"), (-3, "at least one example"), ("0.0001", "at least one example"),
    ("2000", r"larger than the pool \(1000 examples\)"), ("0%", r"percentage in \(0, 100\]"),
    ("150%", "percentage"), ("lots", "a count, a percentage"), ("", "a count"), ("2.5", "whole count"),
    ("nan", "finite"), (True, "a count"),
])
def test_parse_size_errors(size, message):
    with pytest.raises(AutopeftError, match=message):
        parse_size(size, 1000)


def test_select_is_the_sorted_prefix():
    assert select(np.array([5, 2, 9, 0]), 3).tolist() == [2, 5, 9]
    with pytest.raises(AutopeftError):
        select(np.array([1, 0]), 3)


def test_the_order_cache_is_hit_for_every_later_size(toy, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOPEFT_CACHE", str(tmp_path))
    fingerprint = selection_fingerprint(toy, {"model": "toy"})
    order, meta, hit = load_or_compute_order("ot", toy, 0, fingerprint=fingerprint)
    assert not hit and meta["strategy"] == "ot" and meta["seconds"] >= 0 and meta["info"]["converged"]
    assert len(list((tmp_path / "selection").iterdir())) == 1

    def must_not_rank(self, inputs, seed):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(STRATEGIES["ot"], "_order", must_not_rank)
    again, again_meta, hit = load_or_compute_order("ot", toy, 0, fingerprint=fingerprint)
    assert hit and np.array_equal(again, order) and again_meta == meta
    for changed in ({"seed": 1}, {"fingerprint": {**fingerprint, "target": "other"}}):
        with pytest.raises(AssertionError, match="cache was not used"):
            load_or_compute_order("ot", toy, **{"seed": 0, "fingerprint": fingerprint, **changed})
    toy.target_texts = None  # requirements are checked before the cache is read
    with pytest.raises(AutopeftError, match="needs a target"):
        load_or_compute_order("ot", toy, 0, fingerprint=fingerprint)


def test_the_fingerprint_tracks_texts_labels_and_target(toy):
    base = selection_fingerprint(toy)
    changed = SelectionInputs(list(toy.pool_texts), toy.pool_labels.copy(), list(toy.target_texts))
    assert selection_fingerprint(changed) == base
    changed.pool_labels[0] = 2
    assert selection_fingerprint(changed)["labels"] != base["labels"]
    changed.target_texts = changed.target_texts[:-1]
    assert selection_fingerprint(changed)["target"] != base["target"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("model"))


def test_mean_pooled_embeddings_ignore_padding_and_are_unit_norm(tiny_model):
    from transformers import AutoModel, AutoTokenizer

    texts = ["a short one", "a much longer sentence about the movie and its plot, which was long", "", "ok"]
    vectors = mean_pooled_embeddings(tiny_model, texts, max_length=32, batch_size=3, bf16=False)
    assert vectors.shape == (4, 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    tokenizer, encoder = AutoTokenizer.from_pretrained(tiny_model), AutoModel.from_pretrained(tiny_model).eval()
    for text, vector in zip(texts, vectors):
        with torch.inference_mode():
            hidden = encoder(**tokenizer(text, return_tensors="pt")).last_hidden_state[0]
        expected = torch.nn.functional.normalize(hidden.mean(dim=0), dim=0).numpy()
        np.testing.assert_allclose(vector, expected, atol=1e-5)
    rounded = mean_pooled_embeddings(tiny_model, texts, max_length=32, batch_size=3, bf16=True)
    assert rounded.dtype == np.float32 and not np.array_equal(rounded, vectors)
    assert (rounded * vectors).sum(axis=1).min() > 0.99


def test_embeddings_of_a_loaded_base_model_and_the_disk_cache(tiny_model, tmp_path, monkeypatch):
    from autopeft.models import get_base_model

    monkeypatch.setenv("AUTOPEFT_CACHE", str(tmp_path))
    texts = ["good movie", "bad plot", "fine"]
    base = get_base_model(tiny_model, "classification")
    first = cached_embeddings(base, texts, max_length=16)
    np.testing.assert_allclose(first, mean_pooled_embeddings(tiny_model, texts, max_length=16), atol=1e-6)
    [entry] = (tmp_path / "embeddings").iterdir()
    assert sorted(p.name for p in entry.iterdir()) == ["embeddings.safetensors", "meta.json"]

    def must_not_embed(*args, **kwargs):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(embeddings_module, "mean_pooled_embeddings", must_not_embed)
    np.testing.assert_array_equal(cached_embeddings(tiny_model, texts, max_length=16), first)  # name or base: one entry
    with pytest.raises(AssertionError, match="cache was not used"):
        cached_embeddings(tiny_model, texts[:2], max_length=16)
    with pytest.raises(AssertionError, match="cache was not used"):
        cached_embeddings(tiny_model, texts, max_length=8)


def test_task_texts_labels_and_a_pool_of_datasets(tmp_path):
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    (pairs / "train.tsv").write_text("sentence1\tsentence2\tlabel\n" + "".join(
        f"first {i}\tsecond {i}\t{i % 2}\n" for i in range(30)))
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps({"question": f"what is {i}?", "answer": f"#### {i}"}) + "\n" for i in range(30)))
    pair_task, qa_task = load_task(pairs), load_task(qa)
    texts = task_texts(pair_task)
    rows = pair_task.train.to_list()
    assert texts == [f"{row['sentence1']} {row['sentence2']}" for row in rows]
    assert task_labels(pair_task).tolist() == [row["label"] for row in rows]
    assert task_texts(qa_task)[0] == f"Question: {qa_task.train[0]['question']}\nAnswer: {qa_task.train[0]['answer']}"
    assert task_labels(qa_task) is None
    pool, sources = pool_from_datasets([str(pairs), str(qa)])
    assert len(pool) == len(sources) == len(pair_task.train) + len(qa_task.train)
    assert sources[0] == ("pairs", 0) and sources[-1] == ("qa", len(qa_task.train) - 1)
    assert pool[len(pair_task.train)] == task_texts(qa_task)[0]
    with pytest.raises(AutopeftError, match="no split"):
        task_texts(pair_task, "dev")


def test_label_balance_and_the_embedding_plot(tmp_path, monkeypatch):
    import sys

    rows = label_balance(np.array([0, 0, 0, 1]), np.array([0, 3]), np.array([1, 1]), ("neg", "pos"))
    assert rows == [
        {"label": "neg", "pool": 3, "pool_share": 0.75, "selected": 1, "selected_share": 0.5, "target": 0,
         "target_share": 0.0},
        {"label": "pos", "pool": 1, "pool_share": 0.25, "selected": 1, "selected_share": 0.5, "target": 2,
         "target_share": 1.0},
    ]
    rng = np.random.default_rng(0)
    embedding_plot(rng.standard_normal((50, 8)), np.arange(5), rng.standard_normal((10, 8)), tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(AutopeftError, match=r"pip install 'autopeft\[report\]'"):
        embedding_plot(rng.standard_normal((5, 3)), np.arange(2), None, tmp_path / "again.png")


@pytest.fixture
def cli(capsys):
    from autopeft.cli import main

    def run(*args):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def test_select_data_command(cli, tiny_model, tmp_path, monkeypatch, shared_datasets):
    monkeypatch.setenv("AUTOPEFT_CACHE", str(tmp_path / "cache"))
    data = write_tiny_task(tmp_path / "task", rows=48)
    task = load_task(data)
    out = tmp_path / "out"
    common = ["select-data", "--model", tiny_model, "--dataset", data, "--max-length", "16"]
    code, printed, _ = cli(*common, "--strategy", "kcenter", "--size", "25%", "--out", out)
    assert code == 0 and "select-data: kcenter" in printed and "12 of 48" in printed
    assert sorted(p.name for p in out.iterdir()) == ["embedding_plot.png", "report.md", "selection.json"]
    saved = json.loads((out / "selection.json").read_text())
    assert saved["strategy"] == "kcenter" and saved["size"] == 12 and saved["target_is_pool"] and not saved["cached"]
    assert len(set(saved["selected"])) == 12 and saved["selected"] == sorted(saved["selected"])
    assert max(saved["selected"]) < len(task.train) and saved["meta"]["info"]["greedy_steps"] == 48
    report = (out / "report.md").read_text()
    assert "## Label balance" in report and "| 0 |" in report and "| 1 |" in report

    # another size reuses the ranking; the folder is replaced whole; no stray staging folders
    code, _, _ = cli(*common, "--strategy", "kcenter", "--size", "6", "--out", out)
    again = json.loads((out / "selection.json").read_text())
    assert code == 0 and again["cached"] and set(again["selected"]) <= set(saved["selected"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "out", "task"]

    # a pool of another dataset (a slice of TREC's training file) with the task as the target
    trec = tmp_path / "trec.tsv"
    trec.write_text("".join((shared_datasets / "trec" / "train.tsv").read_text().splitlines(keepends=True)[:41]))
    pooled = tmp_path / "pooled"
    code, _, _ = cli(*common, "--strategy", "ot", "--size", "10", "--pool", trec, "--pool", data, "--out", pooled)
    assert code == 0
    saved = json.loads((pooled / "selection.json").read_text())
    trec_rows = len(load_task(trec).train)  # a single file: its held-out splits are carved off its train split
    assert saved["pool_size"] == trec_rows + len(task.train) and not saved["target_is_pool"]
    assert [part["name"] for part in saved["pool"]] == ["trec", "task"] and saved["pool"][1]["offset"] == trec_rows
    assert [src[0] == "trec" for src in saved["selected_sources"]] == [i < trec_rows for i in saved["selected"]]
    assert saved["meta"]["info"]["converged"]
    assert "## Pool datasets" in (pooled / "report.md").read_text()
    assert (pooled / "embedding_plot.png").is_file()

    # no embeddings needed: no plot, no model loaded
    plain = tmp_path / "plain"
    code, _, _ = cli(*common[:2], "no-such-model", *common[3:], "--strategy", "stratified", "--size", "0.5",
                     "--out", plain)
    assert code == 0 and sorted(p.name for p in plain.iterdir()) == ["report.md", "selection.json"]

    for args, message in [
        (["--strategy", "best", "--size", "5"], "error: unknown selection strategy 'best' (known: dsir, el2n, "
                                                 "kcenter, ot, random, similarity, stratified)"),
        (["--strategy", "random", "--size", "500"], "error: size 500 is larger than the pool (48 examples)"),
        (["--strategy", "random", "--size", "many"], "error: size must be a count, a percentage (5%) or a "
                                                     "fraction <= 1, got 'many'"),
        (["--strategy", "el2n", "--size", "5", "--pool", str(trec)],
         "error: strategy 'el2n' needs pool labels, but the pool is unlabelled"),
    ]:
        code, _, err = cli(*common, *args, "--out", tmp_path / "bad")
        assert code == 2 and err.strip() == message
        assert not (tmp_path / "bad").exists()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    code, _, err = cli(*common, "--strategy", "random", "--size", "5", "--out", tmp_path / "other")
    assert code == 2 and "other content" in err and (tmp_path / "other" / "keep.txt").is_file()


def test_select_data_with_tuned_embeddings_says_so(cli, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOPEFT_CACHE", str(tmp_path / "cache"))
    data = write_tiny_task(tmp_path / "task", rows=48)
    code, _, err = cli("select-data", "--model", tiny_model, "--dataset", data, "--max-length", "16", "--strategy",
                       "kcenter", "--size", "8", "--embedding-model", "tuned", "--out", tmp_path / "out")
    assert code == 0, err
    saved = json.loads((tmp_path / "out" / "selection.json").read_text())
    assert saved["embedding_model"].startswith(f"tuned: {tiny_model} fitted on task (")
    assert len(list((tmp_path / "cache" / "tuned-encoder").iterdir())) == 1
    assert "tuned" in (tmp_path / "out" / "report.md").read_text()

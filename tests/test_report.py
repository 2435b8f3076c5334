"""`autopeft report`'s pictures from hand-made records: the data behind each plot, and the files written."""

from __future__ import annotations

import math

import numpy as np
import pytest

from autopeft.report import (
    attainment_staircase,
    hypervolume_history,
    layer_sizes,
    origin_markers,
    short_description,
    trivial_score,
    write_report,
)
from autopeft.search import parse_objectives
from autopeft.search import records as R
from autopeft.search.records import TrialRecord, pareto_records
from autopeft.search.results import RunResults
from autopeft.search.run import RunInfo

OBJECTIVES = parse_objectives(["metric", "params"], "accuracy", True)


def record(number: int, accuracy: float, params: float, origin: str = "sampler:tpe", modules: dict | None = None,
           stage: str = "rung-0") -> TrialRecord:
    point = {"modules": modules if modules is not None else {"lora": {"layers": [0, 1, 2, 3], "size": 8}}}
    return TrialRecord(stage, number, "complete", {"x": number}, {"accuracy": accuracy, "params": params},
                       {R.KEY: f"point-{number}", R.TRAINED: True, R.ORIGIN: origin, R.POINT: point,
                        R.DESCRIPTION: f"point {number}", R.RESULT: {R.TRIVIAL_METRIC: 0.5}})


def test_attainment_staircase_steps_up_to_each_point_then_on_to_the_edge():
    # maximise y, minimise x: (500, 0.6) is dominated by (100, 0.7) and shapes nothing
    points = [(1000, 0.8), (500, 0.6), (100, 0.7), (10, 0.65)]
    assert attainment_staircase(points) == ([10, 100, 100, 1000, 1000], [0.65, 0.65, 0.7, 0.7, 0.8])
    xs, ys = attainment_staircase(points, x_edge=1e4, y_edge=0.5)
    assert xs == [10, 10, 100, 100, 1000, 1000, 1e4] and ys == [0.5, 0.65, 0.65, 0.7, 0.7, 0.8, 0.8]
    # a loss (minimised): down to each point, the edge above the first
    assert attainment_staircase([(100, 1.5), (10, 2.0)], y_maximize=False, x_edge=1000, y_edge=3.0) == (
        [10, 10, 100, 100, 1000], [3.0, 2.0, 2.0, 1.5, 1.5])
    # one point: a corner; none: nothing
    assert attainment_staircase([(5, 0.9)], x_edge=50, y_edge=0.1) == ([5, 5, 50], [0.1, 0.9, 0.9])
    assert attainment_staircase([]) == ([], [])


def test_layer_sizes_give_each_front_module_its_size_per_layer():
    per_layer = {"layers": [0, 2, 3], "size": {"0": 2, "2": 32, "3": 0}, "targets": ["query"]}   # keys: strings once
    # stored; size 0: not in that layer
    front = [record(3, 0.8, 900, modules={"lora": per_layer, "serial_adapter": {"layers": [1, 2, 3, 9], "size": 24}}),
             record(5, 0.7, 100, modules={"bitfit": {"layers": [0, 1, 2, 3], "size": 1}}),
             record(6, 0.6, 50, modules={})]   # head only: no row
    labels, sizes = layer_sizes(front, 4)
    assert labels == ["rung-0#3 lora", "rung-0#3 serial_adapter", "rung-0#5 bitfit"]
    expected = np.array([[2, np.nan, 32, np.nan], [np.nan, 24, 24, 24], [1, 1, 1, 1]])   # layer 9 is past the model
    np.testing.assert_array_equal(sizes, expected)
    # every point in every layer at one size each: still one cell per layer and module, not one flat colour
    labels, sizes = layer_sizes([record(1, 0.8, 10), record(2, 0.9, 20, modules={"lora": {"layers": [0, 1, 2, 3],
                                                                                             "size": 16}})], 4)
    assert labels == ["rung-0#1 lora", "rung-0#2 lora"] and sizes[:, 0].tolist() == [8, 16]
    assert layer_sizes([], 4)[1].shape == (0, 4)


def test_origin_markers_place_each_finished_trial_on_the_curve_by_origin():
    records = [record(0, 0.7, 1000, "baseline:lora"), record(1, 0.6, 500, "quasi-random"),
               record(2, 0.8, 2000, "sampler:tpe"), record(3, 0.75, 100, "prior:oneshot"),
               record(4, 0.9, 50, "retry of #2")]
    failed = TrialRecord("rung-0", 5, "fail", {}, None, {R.ORIGIN: "sampler:tpe"})
    history = hypervolume_history([*records, failed], OBJECTIVES)
    assert [n for n, _ in history] == [0, 1, 2, 3, 4]
    markers = origin_markers([*records, failed], history)
    assert list(markers) == ["baseline", "prior", "quasi-random", "sampler", "retry"]   # ORIGIN_GROUPS order
    assert markers["baseline"] == [(1, history[0][1])] and markers["sampler"] == [(3, history[2][1])]
    assert markers["retry"] == [(5, history[4][1])] and origin_markers(records, []) == {}


def test_short_description_and_trivial_score():
    modules = {"lora": {"layers": [0, 2], "size": {"0": 2, "2": 8}}, "parallel_adapter": {"layers": [0, 1, 2, 3],
                                                                                          "size": 24},
               "ia3": {"layers": [0, 1, 2, 3], "size": 1}}
    assert short_description(record(0, 0.7, 10, modules=modules), 4) == "LoRA 2-8 x2L + PA 24 + IA3"
    assert short_description(record(0, 0.7, 10, modules={}), 4) == "head only"
    shared = {"serial_adapter": {"layers": [1, 2], "size": 6}, "prefix": {"layers": [1, 2], "size": 2}}
    assert short_description(record(0, 0.7, 10, modules=shared), 4) == "SA 6 + PT 2 x2L"   # the layers once
    info = RunInfo(None, "s", "sqlite://", False, True, OBJECTIVES, "accuracy", 4, {})
    results = RunResults(info, {"rung-0": [record(0, 0.7, 10)]}, "rung-0", [], "rung-0")
    assert trivial_score(results) == 0.5
    results.stages["rung-0"][0].attrs[R.RESULT] = {}
    assert trivial_score(results) is None


def test_write_report_draws_every_plot_from_hand_made_records(tmp_path, monkeypatch):
    pytest.importorskip("plotly")   # the [report] extra
    pytest.importorskip("matplotlib")
    rung0 = [record(0, 0.62, 70_000, "baseline:lora"), record(1, 0.66, 110_000, "baseline:parallel_adapter"),
             record(2, 0.55, 20_000, "quasi-random"), record(3, 0.71, 300_000, "quasi-random",
                                                           {"lora": {"layers": [1, 3], "size": {"1": 4, "3": 32}}}),
             record(4, 0.69, 45_000, "sampler:tpe", {"prefix": {"layers": [2], "size": 12}}),
             record(5, 0.60, 35_000, "sampler:tpe")]
    info = RunInfo(tmp_path, "hand-made", "sqlite://", False, True, OBJECTIVES, "accuracy", 4, {})
    front = pareto_records(rung0, OBJECTIVES)
    assert len(front) >= 3
    results = RunResults(info, {"rung-0": rung0}, "rung-0", front, "rung-0")
    monkeypatch.setattr("autopeft.report.load_results", lambda run_dir, storage=None: results)
    out, finished = write_report(tmp_path, tmp_path / "report")
    assert finished
    for name in ("pareto.png", "pareto.html", "hypervolume.png", "heatmap.png", "summary.md"):
        assert (out / name).stat().st_size > 0
    html = (out / "pareto.html").read_text()
    assert "front's attainment curve" in html and "trivial score" in html
    summary = (out / "summary.md").read_text()
    assert all(f"({name})" in summary for name in ("pareto.png", "hypervolume.png", "heatmap.png"))
    assert not math.isnan(hypervolume_history(rung0, OBJECTIVES)[-1][1])

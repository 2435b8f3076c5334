"""Crash consistency and truthful outputs: stale temp folders are cleaned, unreadable cache entries are
recomputed, `sensitivity` is all-or-nothing, and export/report of a run where nothing finished."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autopeft import atomic
from tests.cli_helpers import assert_one_line_error
from tests.search_helpers import LORA_SPACE, lora_builder, write_tiny_model, write_tiny_task


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def temp_name(target: str, pid: int, host: str | None = None) -> str:
    return f".{target}.{host or atomic._host()}~{pid}~abc123.tmp"


def make_temp(folder: Path, name: str, age: float = 0.0) -> Path:
    path = folder / name
    path.mkdir(parents=True)
    (path / "half.bin").write_bytes(b"\0" * 10)
    if age:
        past = time.time() - age
        for item in (path / "half.bin", path):
            os.utime(item, (past, past))
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    base = tmp_path_factory.mktemp("hardening-inputs")
    (base / "space.yaml").write_text(LORA_SPACE)
    return {"model": write_tiny_model(base / "model"), "dataset": write_tiny_task(base / "task"),
            "space": str(base / "space.yaml")}


def search_args(inputs, out, *extra):
    return ["search", "--model", inputs["model"], "--dataset", inputs["dataset"], "--space", inputs["space"],
            "--max-length", "16", "--batch-size", "16", "--lr", "5e-3", "--sampler", "random", "--out", str(out),
            *extra]


# ------------------------------------------------------------------ stale temps


def test_only_stale_temps_are_removed(tmp_path):
    dead, alive = dead_pid(), os.getppid()
    stale = make_temp(tmp_path, temp_name("export", dead))
    running = make_temp(tmp_path, temp_name("export", alive))
    other_host_fresh = make_temp(tmp_path, temp_name("export", dead, host="elsewhere"))
    other_host_old = make_temp(tmp_path, temp_name("export", 12345, host="elsewhere2"), age=2 * atomic.STALE_SECONDS)
    legacy_old = make_temp(tmp_path, ".export.k3j4h5g6.tmp", age=2 * atomic.STALE_SECONDS)
    legacy_fresh = make_temp(tmp_path, ".export.a1b2c3d4.tmp")
    other_target = make_temp(tmp_path, temp_name("report", dead))
    not_ours = make_temp(tmp_path, "export.backup")

    removed = atomic.remove_stale_temps(tmp_path, "export")
    assert set(removed) == {stale, other_host_old, legacy_old}
    for kept in (running, other_host_fresh, legacy_fresh, other_target, not_ours):
        assert kept.is_dir()
    assert atomic.remove_stale_temps(tmp_path) == [other_target]  # without a target: every stale temp


def test_a_temp_of_this_process_survives_unless_a_dead_namesake_made_it(tmp_path):
    mine = atomic.temp_dir_beside(tmp_path / "out")
    namesake = make_temp(tmp_path, temp_name("out", os.getpid()))  # same pid, not made by this process
    atomic.remove_stale_temps(tmp_path)
    assert mine.is_dir() and not namesake.exists()


def test_write_dir_is_all_or_nothing_and_cleans_earlier_leftovers(tmp_path):
    out = tmp_path / "new" / "deeper" / "out"

    def fail(folder: Path) -> None:
        (folder / "part.txt").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic.write_dir(out, fail)
    assert list(tmp_path.iterdir()) == []  # not even the parent folders it made

    out.parent.mkdir(parents=True)
    leftover = make_temp(out.parent, temp_name("out", dead_pid()))
    atomic.write_dir(out, lambda folder: (folder / "whole.txt").write_text("ok"))
    assert not leftover.exists() and [p.name for p in out.parent.iterdir()] == ["out"]
    atomic.write_dir(out, lambda folder: (folder / "again.txt").write_text("ok"))
    assert [p.name for p in out.iterdir()] == ["again.txt"] and [p.name for p in out.parent.iterdir()] == ["out"]


def test_a_killed_cache_write_is_cleaned_by_the_next_write_of_that_kind(tmp_path, monkeypatch):
    from autopeft.priors import atomic_folder, cached_path

    monkeypatch.setenv("AUTOPEFT_CACHE", str(tmp_path))
    entry = cached_path("sensitivity", seed=0)
    killed = make_temp(entry.parent, temp_name("0123456789abcdef", dead_pid()))
    writing = make_temp(entry.parent, temp_name("fedcba9876543210", os.getppid()))
    with atomic_folder(entry) as staging:
        (staging / "whole.json").write_text("{}")
    assert not killed.exists() and writing.is_dir() and entry.is_dir()


def test_an_unreadable_entry_is_a_miss_and_is_deleted(tmp_path, caplog):
    from autopeft.priors import read_entry

    entry = tmp_path / "kind" / "0123456789abcdef"
    entry.mkdir(parents=True)
    (entry / "meta.json").write_text("{trunc")
    assert read_entry(entry, lambda folder: json.loads((folder / "meta.json").read_text())) is None
    assert not entry.exists() and list(entry.parent.iterdir()) == []
    assert "discarding the unreadable cache entry" in caplog.text
    assert read_entry(entry, lambda folder: 1 / 0) is None  # no entry: a plain miss


# ------------------------------------------------------------------ corrupt cache entries, per reader


def test_sensitivity_with_a_corrupt_cached_map_recomputes_it(autopeft, inputs, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("AUTOPEFT_CACHE", str(tmp_path / "cache"))
    args = ["sensitivity", "--model", inputs["model"], "--dataset", inputs["dataset"], "--batches", "1",
            "--batch-size", "8", "--max-length", "16", "--budgets", "400"]
    assert autopeft(*args, "--out", tmp_path / "first").returncode == 0
    (entry,) = (tmp_path / "cache" / "sensitivity").iterdir()
    scores = entry / "scores.safetensors"
    scores.write_bytes(scores.read_bytes()[:100])  # truncated, as by a full disk
    done = autopeft(*args, "--out", tmp_path / "second")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "discarding the unreadable cache entry" in caplog.text
    assert not json.loads((tmp_path / "second" / "summary.json").read_text())["cached"]
    assert autopeft(*args, "--out", tmp_path / "third").returncode == 0  # the recomputed entry is whole again
    assert json.loads((tmp_path / "third" / "summary.json").read_text())["cached"]


def test_heads_order_and_embeddings_readers_recompute_corrupt_entries(inputs, tmp_path, monkeypatch):
    from autopeft.data import load_task
    from autopeft.models import get_base_model
    from autopeft.priors import load_or_select_heads
    from autopeft.priors.selection import SelectionInputs, cached_embeddings, load_or_compute_order

    monkeypatch.setenv("AUTOPEFT_CACHE", str(tmp_path))
    task = load_task(inputs["dataset"])
    base = get_base_model(inputs["model"], "classification")
    settings = dict(epochs=1, train_examples=16, batch_size=8, max_length=16)
    first, _, hit = load_or_select_heads(base, task, **settings)
    (entry,) = (tmp_path / "heads").iterdir()
    (entry / "ranking.json").write_text('{"scores": [[')
    again, _, hit = load_or_select_heads(base, task, **settings)
    assert not hit and again.scores == first.scores

    texts = [f"text number {i}" for i in range(10)]
    pool = SelectionInputs(texts, None, None)
    order, _, _ = load_or_compute_order("random", pool, 0, fingerprint={"pool": "p"})
    (entry,) = (tmp_path / "selection").iterdir()
    (entry / "order.safetensors").write_bytes(b"not safetensors")
    again, _, hit = load_or_compute_order("random", pool, 0, fingerprint={"pool": "p"})
    assert not hit and list(again) == list(order)

    vectors = cached_embeddings(inputs["model"], texts, max_length=16, bf16=False)
    (entry,) = (tmp_path / "embeddings").iterdir()
    (entry / "embeddings.safetensors").unlink()
    again = cached_embeddings(inputs["model"], texts, max_length=16, bf16=False)
    assert again.shape == vectors.shape and (again == vectors).all()


# ------------------------------------------------------------------ sensitivity: all or nothing


@pytest.mark.parametrize("extra, message", [
    (["--budgets", "150%"], "--budgets entry '150%' is "),
    (["--budgets", "1e9"], "more than SPT can allocate on this model"),
    (["--budgets", "lots"], "--budgets entry 'lots' is not a positive count or percentage"),
    (["--budgets", "400,400"], "--budgets lists '400' twice"),
    (["--budgets", " , "], "--budgets needs at least one budget"),
    (["--batches", "0"], "--batches and --batch-size must be at least 1"),
    (["--batch-size", "0"], "--batches and --batch-size must be at least 1"),
])
def test_bad_sensitivity_input_fails_before_loading_and_writes_nothing(autopeft, inputs, tmp_path, monkeypatch,
                                                                        extra, message):
    import autopeft.models as models

    monkeypatch.setenv("AUTOPEFT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(models, "get_base_model", lambda *a, **k: pytest.fail("the model was loaded"))
    out = tmp_path / "new" / "out"
    done = autopeft("sensitivity", "--model", inputs["model"], "--dataset", inputs["dataset"], "--out", out,
                    "--max-length", "16", *extra)
    assert_one_line_error(done, message)
    assert list(tmp_path.iterdir()) == []


def test_a_sensitivity_run_that_fails_while_writing_leaves_the_earlier_output(autopeft, inputs, tmp_path, monkeypatch):
    from autopeft.errors import AutopeftError
    from autopeft.priors.sensitivity import SensitivityMap

    monkeypatch.setenv("AUTOPEFT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    args = ["sensitivity", "--model", inputs["model"], "--dataset", inputs["dataset"], "--out", out, "--batches", "1",
            "--batch-size", "8", "--max-length", "16"]
    assert autopeft(*args, "--budgets", "400").returncode == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*"))

    def no_matplotlib(self, path):
        raise AutopeftError("the sensitivity heatmap needs matplotlib: pip install 'autopeft[report]'")

    monkeypatch.setattr(SensitivityMap, "heatmap", no_matplotlib)
    done = autopeft(*args, "--budgets", "400,1500")
    assert_one_line_error(done, "needs matplotlib")
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # no spt-1500, nothing half-written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "out"]  # no temp folder beside it


def test_sensitivity_refuses_an_out_folder_with_other_content(autopeft, inputs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    done = autopeft("sensitivity", "--model", inputs["model"], "--dataset", inputs["dataset"], "--out", out)
    assert_one_line_error(done, "is a folder with other content")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


# ------------------------------------------------------------------ export / report with nothing finished


@pytest.fixture(scope="module")
def nothing_finished(inputs, tmp_path_factory):
    """A run where no trial finished: every one over --max-params (rejected). `search` now refuses a budget no
    random point fits before it starts; a tight budget that few points fit can still end like this."""
    from autopeft.cli import main

    run = tmp_path_factory.mktemp("runs") / "nothing"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("autopeft.search.run._check_budget_reachable", lambda *a: None)
        main(search_args(inputs, run, "--trials", "3", "--max-params", "1", "--final-seeds", "0"))
    return run


@pytest.fixture(scope="module")
def all_failed(inputs, tmp_path_factory):
    from autopeft.cli import main

    def failing_builder(model_config, kind, context=None):
        def build(point):
            raise RuntimeError("CUDA out of memory (simulated)")
        return build

    run = tmp_path_factory.mktemp("runs") / "failed"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("autopeft.search.evaluator.builders_adapter_builder", failing_builder)
        main(search_args(inputs, run, "--trials", "3", "--final-seeds", "0"))
    return run


@pytest.mark.parametrize("which", ["nothing_finished", "all_failed"])
@pytest.mark.parametrize("merged", [False, True])
def test_export_of_a_run_without_a_finished_trial_says_so_and_writes_nothing(autopeft, request, which, merged):
    run = request.getfixturevalue(which)
    before = sorted(p.name for p in run.iterdir())
    done = autopeft("export", run, *(["--merged"] if merged else []))
    assert_one_line_error(done, "nothing to export: no trial of study")
    assert ("over --max-params" if which == "nothing_finished" else "CUDA out of memory (simulated)") in done.stderr
    assert sorted(p.name for p in run.iterdir()) == before


def test_report_of_a_run_where_every_trial_was_rejected_is_truthful(autopeft, nothing_finished, tmp_path):
    out = tmp_path / "report"
    done = autopeft("report", nothing_finished, "--out", out)
    assert done.returncode == 0, done.stderr
    assert [p.name for p in out.iterdir()] == ["summary.md"]  # no empty plots
    summary = (out / "summary.md").read_text()
    assert ".png" not in summary and ".html" not in summary
    assert "0 finished" in summary and "rejected before training (over --max-params)" in summary
    assert "most common reasons" in summary and "over --max-params" in summary
    assert "baselines evaluated: none" in summary


def test_report_of_a_run_where_every_trial_failed_names_the_reasons(autopeft, all_failed, tmp_path):
    from autopeft.search import records as R
    from autopeft.search.run import read_run_info

    out = tmp_path / "report"
    assert autopeft("report", all_failed, "--out", out).returncode == 0
    summary = (out / "summary.md").read_text()
    info = read_run_info(all_failed)
    records = R.load_records(info.open_storage(), info.study_name, info.objectives)["rung-0"]
    failed = [r for r in records if r.state == "fail" and R.DUPLICATE_OF not in r.attrs]
    assert failed and f"- failed: {len(failed)}" in summary
    assert f"{len(failed)} x error: building the adapter: RuntimeError: CUDA out of memory (simulated)" in summary
    assert "baselines evaluated: none" in summary
    baselines = {str(r.attrs[R.ORIGIN]).split(":", 1)[1] for r in records
                 if str(r.attrs.get(R.ORIGIN, "")).startswith("baseline:")}
    assert baselines  # the LoRA baseline: enqueued, failed, so listed as such and never as evaluated
    assert "baselines enqueued but without a result: " in summary and all(name in summary for name in baselines)
    assert "rung 0: 3 trained (0 finished)" in summary
    assert ".png" not in summary and [p.name for p in out.iterdir()] == ["summary.md"]


def test_report_and_export_of_a_finished_run_link_only_written_plots(autopeft, inputs, tmp_path, monkeypatch):
    pytest.importorskip("plotly")
    monkeypatch.setattr("autopeft.search.evaluator.builders_adapter_builder", lora_builder)
    run = tmp_path / "run"
    # one rung, 16 epochs at lr 0.05: the tiny model leaves the majority class, so the run has a front to export
    learns = ("--fidelity", "1", "--lr", "5e-2", "--epochs", "16")
    assert autopeft(*search_args(inputs, run, "--trials", "2", "--final-seeds", "0", *learns)).returncode == 0
    stale = make_temp(run, temp_name("export", dead_pid()))  # an export killed mid-copy
    assert autopeft("export", run).returncode == 0
    assert not stale.exists() and json.loads((run / "export" / "pareto.json").read_text())["points"]
    assert autopeft("report", run).returncode == 0
    summary = (run / "report" / "summary.md").read_text()
    written = {p.name for p in (run / "report").iterdir()}
    assert {"pareto.png", "pareto.html", "hypervolume.png", "heatmap.png", "summary.md"} <= written
    for name in ("pareto.png", "pareto.html", "hypervolume.png", "heatmap.png"):
        assert f"({name})" in summary
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]

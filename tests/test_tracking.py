"""Experiment tracking (issue 19, item 9): each trial as an MLflow or W&B run, written offline to a local store.

The backends are optional ([mlflow], [wandb] extras): their tests are skipped when the package is missing. The
search runs on the synthetic evaluator of test_search_engine (no training)."""

from __future__ import annotations

import functools
import os
import struct
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from autopeft.errors import AutopeftError
from autopeft.search import SearchEngine, SearchPlan
from autopeft.search.tracking import LOSS, TrackingContext, check_trackers, context_tags, create_trackers
from autopeft.trial.fidelity import Fidelity
from tests.test_search_engine import OBJECTIVES, FakeEvaluator, lora_space

SECRET_SETTINGS = {"model": "minilm", "dataset": "https://alice:hunter2@data.example/task.csv", "space": "lora",
                   "seed": 0, "storage": "postgresql://alice:hunter2@db.example/optuna"}


CHILD = "AUTOPEFT_TRACKING_TEST_CHILD"


def in_child_process(test):
    """Run ``test`` in a pytest process of its own: W&B starts a service process and background threads and MLflow
    opens its database engine, and none of that should live on in the suite's process (a later test of a
    fresh-venv CI run segfaulted after these had run in it)."""

    @functools.wraps(test)
    def run(*args, **kwargs):
        if os.environ.get(CHILD):
            return test(*args, **kwargs)
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               f"{__file__}::{test.__name__}"], env={**os.environ, CHILD: "1"},
                              capture_output=True, text=True, timeout=600)
        if done.returncode == 5 or " skipped" in done.stdout and " passed" not in done.stdout:
            pytest.skip(done.stdout.strip().splitlines()[-1])
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]

    return run


def run_search(tmp_path: Path, names: list[str], uri: str | None = None) -> tuple[list, object]:
    """A 3-trial search, the best point re-trained with 2 seeds, logged to the ``names`` trackers."""
    space = lora_space()
    context = TrackingContext(tmp_path, "s", uri, context_tags(SECRET_SETTINGS, "random"))
    plan = SearchPlan(objectives=OBJECTIVES, rungs=[Fidelity()], trials=3, sampler="random", final_seeds=2)
    engine = SearchEngine(space, FakeEvaluator(space), plan, optuna.storages.InMemoryStorage(), "s", tmp_path,
                          trackers=create_trackers(names, context))
    outcome = engine.run()
    assert not any(n.startswith("tracking with") for n in outcome.notes), outcome.notes
    return outcome.front, outcome


@in_child_process
def test_mlflow_logs_each_trial_to_a_local_store_read_back_with_its_client(tmp_path):
    pytest.importorskip("mlflow", reason="MLflow is not installed (pip install 'autopeft[mlflow]')")
    from mlflow.tracking import MlflowClient

    front, _ = run_search(tmp_path, ["mlflow"])
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")   # the default store
    experiment = client.get_experiment_by_name("s")
    runs = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"s/rung-0#0", "s/rung-0#1", "s/rung-0#2", *(f"s/final#{i}" for i in range(len(front)))}
    first = runs["s/rung-0#0"]
    assert first.info.status == "FINISHED"
    assert first.data.params["description"] == "lora size 8 on query/value of 2 layer(s)"
    assert first.data.params["origin"] == "baseline:lora" and "lora.targets" in first.data.params
    assert {"accuracy", "params", "val_accuracy", "test_accuracy"} <= set(first.data.metrics)
    assert first.data.tags["autopeft.stage"] == "rung-0" and first.data.tags["autopeft.sampler"] == "random"
    history = client.get_metric_history(first.info.run_id, LOSS)
    assert [(m.step, m.value) for m in history] == [(1, 0.7), (2, 0.6)]
    final = runs["s/final#0"]
    assert {m.step for m in client.get_metric_history(final.info.run_id, f"{LOSS}_seed_1")} == {1, 2}
    assert final.data.metrics["accuracy"] == pytest.approx(front[0].values["accuracy"])
    logged = str([(r.data.params, r.data.tags) for r in runs.values()])
    assert "hunter2" not in logged and "db.example" not in logged   # no credential, no storage URL


def wandb_records(path: Path) -> list:
    """The records of an offline run's ``.wandb`` file: a 7-byte header, then LevelDB-log blocks of 32 KiB whose
    chunks (CRC 4, length 2, type 1: full 1, first 2, middle 3, last 4) hold serialised ``Record`` messages."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, records, pending, position = path.read_bytes(), [], b"", 7
    while position + 7 <= len(data):
        if 32768 - position % 32768 < 7:   # a block's tail too short for a chunk header is padding
            position += 32768 - position % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
        elif kind == 0:
            break
    return records


@in_child_process
def test_wandb_logs_each_trial_offline_under_the_run_folder(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="Weights & Biases is not installed (pip install 'autopeft[wandb]')")
    import json

    for name in ("WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT", "WANDB_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    front, _ = run_search(tmp_path, ["wandb"])
    files = sorted((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 3 + len(front)
    runs = {}
    for path in files:
        records = wandb_records(path)
        run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
        history = [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
                   for r in records if r.WhichOneof("record_type") == "history"]
        summary = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                   for r in records if r.WhichOneof("record_type") == "summary" for item in r.summary.update}
        config = {item.key: json.loads(item.value_json) for item in run.config.update}
        runs[run.display_name] = (run, history, summary, config)
    run, history, summary, config = runs["s/rung-0#0"]
    assert run.project == "autopeft" and run.run_group == "s" and run.job_type == "rung-0"
    assert [(h["_step"], h[LOSS]) for h in history] == [(1, 0.7), (2, 0.6)]
    assert {"accuracy", "params", "val_accuracy"} <= set(summary)
    assert config["description"] == "lora size 8 on query/value of 2 layer(s)" and config["origin"] == "baseline:lora"
    _, history, _, _ = runs["s/final#0"]
    assert {f"{LOSS}_seed_0", f"{LOSS}_seed_1"} <= set(history[0])
    logged = b"".join(path.read_bytes() for path in files)
    assert b"hunter2" not in logged and b"db.example" not in logged


def test_tracking_settings_flags_and_install_hints(monkeypatch):
    import importlib.util

    from autopeft.search.settings import merge_settings

    settings = merge_settings({}, {"model": "m", "dataset": "d", "tracking": "MLflow, wandb",
                                   "tracking_uri": "https://alice:hunter2@mlflow.example"})
    assert settings.tracking == ["mlflow", "wandb"]
    assert "hunter2" not in str(settings.public_dict(None)) and "tracking_uri" not in settings.for_workers()
    with pytest.raises(AutopeftError, match="setting 'tracking': unknown tracker 'neptune'"):
        merge_settings({}, {"model": "m", "dataset": "d", "tracking": "neptune"})
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("mlflow", "wandb")
                        else real(name, *a))
    with pytest.raises(AutopeftError, match=r"--tracking wandb needs Weights & Biases: pip install 'autopeft\[wandb"):
        check_trackers(["wandb"])
    with pytest.raises(AutopeftError, match=r"pip install 'autopeft\[mlflow\]'"):
        check_trackers(["mlflow"])

"""Two ``autopeft search`` processes on one storage cooperate: started together or one after the
other, on SQLite and on a journal file, they share the trial budget, train no point twice, crash
neither, and re-train each front point once in the final stage."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from autopeft.search import records as R
from autopeft.search.run import read_run_info
from tests.search_helpers import LORA_SPACE, write_tiny_model, write_tiny_task

pytestmark = pytest.mark.timeout(300)
TRIALS = 8


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("workers")
    (root / "space.yaml").write_text(LORA_SPACE)
    return {"model": write_tiny_model(root / "model"), "dataset": write_tiny_task(root / "task", rows=96),
            "space": str(root / "space.yaml")}


def _start(inputs, run: Path, storage: str | None) -> subprocess.Popen:
    command = [sys.executable, "-m", "autopeft.cli", "search", "--model", inputs["model"], "--dataset",
               inputs["dataset"], "--space", inputs["space"], "--out", str(run), "--study-name", "shared",
               "--trials", str(TRIALS), "--sampler", "random", "--final-seeds", "1", "--max-length", "16",
               "--batch-size", "16", "--fidelity", "1", "--lr", "5e-2", "--epochs", "8"]
    # one rung (no promotions: every trial trains once); 8 epochs at lr 0.05 leave the majority class, so there is a
    # front (a trivial trial is on none) for the final stage
    if storage is not None:
        command += ["--storage", storage]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _trained_count(storage_url: str) -> int:
    from autopeft.search.storage import local_storage_path, open_storage

    if not local_storage_path(storage_url).exists():
        return 0
    try:
        study = optuna.load_study(study_name="shared", storage=open_storage(storage_url))
    except Exception:  # the study is not created yet
        return 0
    return sum(1 for t in study.get_trials(deepcopy=False) if t.user_attrs.get(R.TRAINED))


# each case starts two processes (~35 s on 2 cores): the suite runs one per storage kind and start mode;
# AUTOPEFT_ALL_WORKER_CASES=1 runs all four (the 10-in-a-row check in docs/reliability.md)
CASES = [("sqlite", "together"), ("journal", "staggered")]
if os.environ.get("AUTOPEFT_ALL_WORKER_CASES"):
    CASES += [("sqlite", "staggered"), ("journal", "together")]


@pytest.mark.parametrize("kind, start", CASES)
def test_two_searches_on_one_storage_share_the_budget_and_train_no_point_twice(inputs, tmp_path, kind, start):
    run = tmp_path / "run"
    storage = None if kind == "sqlite" else str(tmp_path / "study.log")  # sqlite: the run folder's default
    url = f"sqlite:///{run / 'study.db'}" if kind == "sqlite" else storage
    first = _start(inputs, run, storage)
    if start == "staggered":  # the second joins while the first is mid-search
        deadline = time.monotonic() + 120
        while _trained_count(url) < 2 and time.monotonic() < deadline:
            assert first.poll() is None, first.communicate()[1]
            time.sleep(0.3)
    second = _start(inputs, run, storage)
    outputs = [p.communicate(timeout=240) for p in (first, second)]
    for process, (_, err) in zip((first, second), outputs):
        assert process.returncode == 0, err
        assert "Traceback" not in err, err

    info = read_run_info(run)
    stages = R.load_records(info.open_storage(storage), "shared", info.objectives)
    trained = [r for r in stages["rung-0"] if r.trained]
    keys = [r.key for r in trained]
    assert len(trained) == TRIALS, [(r.number, r.state, r.attrs.get(R.REASON)) for r in stages["rung-0"]]
    assert len(set(keys)) == len(keys), "a point was trained twice"
    assert all(r.state == "complete" for r in trained)
    assert not [r for r in stages["rung-0"] if str(r.attrs.get(R.REASON, "")).startswith("interrupted")]
    final = [r for r in stages["final"] if r.trained]
    assert final and len({r.key for r in final}) == len(final), "a front point was re-trained twice"
    for record in final:
        assert (run / record.attrs[R.ADAPTER_DIR] / "adapter_model.safetensors").is_file()

"""Bad input through the real entry point: one line on stderr, exit 2, nothing written, nothing loaded.

Usage errors go through ``python -m autopeft.cli`` (the exit code and the absence of a traceback are
what matters); the rest through the same ``main()`` in-process, which is faster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from autopeft.cli import main
from autopeft.search import records as R
from autopeft.search.evaluator import RunnerEvaluator
from autopeft.search.run import read_run_info
from tests.cli_helpers import one_line_error
from tests.search_helpers import LORA_SPACE, interrupt_on_call, lora_builder, write_tiny_model, write_tiny_task


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    base = tmp_path_factory.mktemp("hardening-inputs")
    (base / "space.yaml").write_text(LORA_SPACE)
    return {"model": write_tiny_model(base / "model"), "dataset": write_tiny_task(base / "task"),
            "space": str(base / "space.yaml"), "base": base}


@pytest.fixture(autouse=True)
def lora_only_builders(monkeypatch):
    monkeypatch.setattr("autopeft.search.evaluator.builders_adapter_builder", lora_builder)


def run_cli(*args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "autopeft.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_usage_errors_are_one_line_with_a_suggestion_and_exit_2(capsys):
    done = run_cli("search", "--trails", "3")  # the installed entry point: exit code, no traceback
    assert done.returncode == 2
    assert "No such option: --trails. Did you mean --trials?" in one_line_error(done.stderr)
    done = run_cli("--version")
    assert done.returncode == 0 and done.stdout.strip().startswith("autopeft 0.")
    for args, message in (  # the same main(), in-process
        (("trial", "--model", "m", "--dataset", "d", "--epochs", "abc"), "Invalid value for '--epochs'"),
        (("trial", "--dataset", "d"), "Missing option '--model'"),
        (("trial", "--model", "m", "--dataset", "d", "--lora-r", "0"), "'--lora-r'"),
        (("no-such-command",), "No such command"),
    ):
        assert call(*args) == 2
        assert message in one_line_error(capsys.readouterr().err)


def search_args(inputs, out, *extra):
    return ["search", "--model", inputs["model"], "--dataset", inputs["dataset"], "--space", inputs["space"],
            "--max-length", "16", "--batch-size", "16", "--lr", "5e-3", "--out", str(out), *extra]


def call(*args):
    try:
        main(list(args))
    except SystemExit as exc:
        return exc.code
    return 0


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("name, text, message", [
    ("one_class.tsv", "sentence\tlabel\n" + "".join(f"row {i}\t1\n" for i in range(40)), "has a single class"),
    ("empty_text.csv", "sentence,label\n" + "".join(f",{i % 2}\n" for i in range(40)), "is empty in every train row"),
])
def test_degenerate_data_is_refused(inputs, tmp_path, capsys, name, text, message):
    dataset = _write(tmp_path / name, text)
    args = search_args(inputs, tmp_path / "run", "--trials", "1")
    args[args.index("--dataset") + 1] = dataset
    assert call(*args) == 2
    assert message in one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()
    assert call("trial", "--model", inputs["model"], "--dataset", dataset, "--max-steps", "1") == 2
    assert message in one_line_error(capsys.readouterr().err)


def test_failed_trials_and_bad_points_are_one_line(inputs, tmp_path, capsys):
    trial = ["trial", "--model", inputs["model"], "--dataset", inputs["dataset"], "--max-steps", "1",
             "--max-length", "16"]
    assert call(*trial, "--lora-targets", "nope", "--json", str(tmp_path / "never.json")) == 2
    assert "the adapter does not fit the model" in one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "never.json").exists()  # found on a weightless copy, before anything is written
    point = _write(tmp_path / "far.yaml", "modules:\n  lora:\n    type: lora\n    layers: [0, 42]\n    size: 4\n"
                                           "    targets: [query, value]\n")
    assert call(*trial, "--point", point) == 2
    assert "placed on layer(s) [42]" in one_line_error(capsys.readouterr().err)
    assert call(*trial, "--batch-size", "0") == 2
    assert "--batch-size must be at least 1" in one_line_error(capsys.readouterr().err)
    point = _write(tmp_path / "point.yaml", "modules:\n  lora: [unclosed\n    size: 2\n")
    assert call(*trial, "--point", point) == 2
    assert "is not a point file" in one_line_error(capsys.readouterr().err)
    record = tmp_path / "r.json"
    assert call(*trial, "--lr", "1000", "--max-steps", "6", "--json", str(record)) == 2
    err = capsys.readouterr().err  # a trial that trained says what it did (loading, training), then why it failed
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("error: the trial did not finish")
    assert json.loads(record.read_text())["status"] in ("diverged", "nan_loss")


def test_ctrl_c_says_what_was_saved_and_how_to_resume(inputs, tmp_path, capsys, monkeypatch):
    interrupt_on_call(monkeypatch, 3)
    monkeypatch.setattr(sys, "argv", ["autopeft", *search_args(inputs, tmp_path / "run", "--trials", "4")])
    assert call(*sys.argv[1:]) == 130
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the trial lines
    assert last.startswith("interrupted: ")
    line = last
    assert "2 finished trial(s) are saved" in line and "resume with the same command: autopeft search" in line


def test_an_interrupted_final_stage_keeps_its_finished_seeds(inputs, tmp_path, monkeypatch):
    """Killed after seed 0 of a final trial: the resumed search trains only the seeds still missing."""
    real_call = RunnerEvaluator.__call__
    seen = []

    def interrupt_second_final_seed(self, point, fidelity, seed, *a, evaluate_test=False, **k):
        if evaluate_test:  # final-stage jobs evaluate the test split
            seen.append(seed)
            if len(seen) == 2:
                raise KeyboardInterrupt
        return real_call(self, point, fidelity, seed, *a, evaluate_test=evaluate_test, **k)

    monkeypatch.setattr(RunnerEvaluator, "__call__", interrupt_second_final_seed)
    # one rung, 16 epochs at lr 0.05: the one point under 700 params leaves the majority class, so it is on the front
    # the final stage re-trains (a trivial trial is on no front: no final stage to interrupt)
    args = search_args(inputs, tmp_path / "run", "--trials", "2", "--final-seeds", "2", "--max-params", "700",
                       "--fidelity", "1", "--lr", "5e-2", "--epochs", "16")
    assert call(*args) == 130
    seen.clear()
    monkeypatch.setattr(RunnerEvaluator, "__call__", lambda self, point, fidelity, seed, *a, evaluate_test=False, **k: (
        seen.append(seed) if evaluate_test else None) or real_call(self, point, fidelity, seed, *a,
                                                                   evaluate_test=evaluate_test, **k))
    assert call(*args) == 0
    info = read_run_info(tmp_path / "run")
    final = R.load_records(info.open_storage(), info.study_name, info.objectives)["final"]
    done = [r for r in final if r.trained and r.state == "complete"]
    interrupted = [r for r in final if r.state == "fail"]
    assert interrupted and interrupted[0].attrs[R.REASON].startswith("interrupted")
    assert seen[0] == 1  # the kept seed 0 of the interrupted point was not trained again
    assert all(len(r.attrs[R.SEEDS]) == 2 for r in done)
    assert all((tmp_path / "run" / r.attrs[R.ADAPTER_DIR]).is_dir() for r in done)
    assert not any((tmp_path / "run" / "adapters" / ".seeds").glob("*"))  # other seeds' adapters cleaned up

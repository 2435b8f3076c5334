"""What a new user meets first (issue 19): the demo search's defaults, dataset aliases, packaged spaces, grouped
help, logging (terminal, --quiet, the run's log file), the progress ETA, and the Python API."""

from __future__ import annotations

import json
import logging

import pytest

from autopeft.cli import main
from tests.cli_helpers import run_main
from tests.search_helpers import lora_only_builders, write_search_inputs, write_tiny_task  # noqa: F401


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return write_search_inputs(tmp_path_factory.mktemp("first-hour-inputs"))


pytestmark = pytest.mark.usefixtures("lora_only_builders")


def tiny_search(inputs, out, *extra):
    return ["search", "--model", inputs["model"], "--dataset", inputs["dataset"], "--space", inputs["space"],
            "--max-length", "16", "--batch-size", "16", "--lr", "5e-2", "--epochs", "16", "--sampler", "random",
            "--fidelity", "1", "--out", str(out), *extra]


# --- the demo search and dataset aliases -------------------------------------------------------------------------


def test_no_model_and_no_dataset_is_the_demo_search_and_flags_still_win(monkeypatch, tmp_path):
    from autopeft.errors import AutopeftError
    from autopeft.search.settings import DEMO_SEARCH, merge_settings

    monkeypatch.chdir(tmp_path)
    demo = merge_settings({}, {})
    assert demo.model == "minilm" and demo.task.dataset == "sst2" and demo.trials == DEMO_SEARCH["trials"]
    assert demo.fidelity.train_examples == 2000 and demo.out == "runs/demo"
    assert merge_settings({}, {"trials": 3}).trials == 3
    monkeypatch.setattr("autopeft.models.alias_installed", lambda name: False)  # no packaged MiniLM: the Hub's
    assert merge_settings({}, {}).model == "sentence-transformers/all-MiniLM-L6-v2"
    with pytest.raises(AutopeftError, match="--dataset is required"):  # half a demo is a mistake, not a demo
        merge_settings({}, {"model": "minilm"})


def test_dataset_alias_is_the_local_copy_else_the_hubs(monkeypatch, tmp_path):
    from autopeft.data.aliases import DATASETS_ENV, resolve_dataset_alias
    from autopeft.search.settings import merge_settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(DATASETS_ENV, raising=False)
    hub = resolve_dataset_alias("sst2")
    assert (hub.dataset, hub.dataset_config, hub.local) == ("nyu-mll/glue", "sst2", False)
    assert hub.columns["text_column"] == "sentence"
    workers = merge_settings({}, {"model": "minilm", "dataset": "sst2"}).for_workers()
    assert (workers["dataset"], workers["dataset_config"]) == ("nyu-mll/glue", "sst2")
    assert workers["text_column"] == "sentence"

    copies = tmp_path / "copies"
    write_tiny_task(copies / "glue_sst2")
    monkeypatch.setenv(DATASETS_ENV, str(copies))
    local = resolve_dataset_alias("SST2")
    assert local.local and local.dataset == str((copies / "glue_sst2").resolve())
    workers = merge_settings({}, {"model": "minilm", "dataset": "sst2"}).for_workers()
    assert workers["dataset"] == local.dataset and workers["dataset_config"] is None  # absolute: workers run elsewhere
    pooled = merge_settings({}, {"model": "minilm", "dataset": "sst2", "warmup_pool": ["sst2", "cola"],
                             "warmup_size": "100"}).for_workers()
    assert pooled["warmup_pool"] == [local.dataset, "cola"]  # cola has no local copy here: the worker's Hub copy
    (tmp_path / "sst2").mkdir()  # a folder of that name here wins over the alias
    assert resolve_dataset_alias("sst2") is None


def test_alias_loads_the_local_copy(monkeypatch, tmp_path):
    from autopeft.data import load_task
    from autopeft.data.aliases import DATASETS_ENV

    write_tiny_task(tmp_path / "glue_sst2")
    monkeypatch.setenv(DATASETS_ENV, str(tmp_path))
    data = load_task("sst2")
    assert data.name == "glue_sst2" and data.spec.num_labels == 2


# --- spaces and help -----------------------------------------------------------------------------------------------


def test_space_list_names_the_packaged_spaces_and_show_takes_a_name(capfd):
    done = run_main(["space", "list"], capfd)
    assert done.returncode == 0
    for name in ("default", "unified", "autopeft", "lora"):
        assert name in done.stdout
    done = run_main(["space", "show", "lora", "--model", "minilm", "--samples", "20"], capfd)
    assert done.returncode == 0 and "lora" in done.stdout


def test_every_search_option_has_help_and_a_panel():
    import typer

    from autopeft.cli.app import app

    command = typer.main.get_command(app).commands["search"]
    options = [p for p in command.params if p.name != "help"]
    assert len(options) > 60
    assert not [p.name for p in options if not (p.help or "").strip()]
    panels = {p.rich_help_panel for p in options}
    assert None not in panels and "Other" not in panels
    assert {"Model, data and space", "Task and data", "Fidelity (how much a trial trains)"} <= panels
    assert {p.name for p in options if p.rich_help_panel == "Model, data and space"} >= {"model", "dataset", "space"}


# --- logging -------------------------------------------------------------------------------------------------------


def test_search_logs_to_the_terminal_and_its_run_folder_and_quiet_keeps_to_warnings(inputs, tmp_path, capfd):
    run = tmp_path / "run"
    done = run_main(tiny_search(inputs, run, "--trials", "2", "--final-seeds", "0"), capfd)
    assert done.returncode == 0, done.stderr
    assert "rung-0#0" in done.stderr and "note:" in done.stderr
    log = (run / "autopeft.log").read_text()
    assert "rung-0#0" in log and "rung-0#1" in log and " INFO " in log

    quiet = tmp_path / "quiet"
    done = run_main(tiny_search(inputs, quiet, "--trials", "2", "--final-seeds", "0", "--quiet"), capfd)
    assert done.returncode == 0, done.stderr
    assert "rung-0#" not in done.stderr and "note:" not in done.stderr
    assert "Pareto front" in done.stdout  # the result still prints
    assert "rung-0#1" in (quiet / "autopeft.log").read_text()  # the log file keeps everything


def test_a_refused_search_leaves_no_log_file(inputs, tmp_path, capfd):
    run = tmp_path / "run"
    done = run_main(tiny_search(inputs, run, "--trials", "1", "--max-params", "1"), capfd)
    assert done.returncode == 2 and not run.exists()


def test_verbose_and_quiet_together_is_a_one_line_error(inputs, tmp_path, capfd):
    from tests.cli_helpers import assert_one_line_error

    done = run_main(tiny_search(inputs, tmp_path / "run", "--trials", "1", "-v", "-q"), capfd)
    assert_one_line_error(done, "give --verbose or --quiet, not both")


def test_log_file_masks_credentials(tmp_path):
    from autopeft.logs import log_file

    path = tmp_path / "x.log"
    with log_file(path):
        logging.getLogger("autopeft.test").info("storage postgresql://user:hunter2@db/optuna")
    text = path.read_text()
    assert "hunter2" not in text and "postgresql://" in text


# --- progress ------------------------------------------------------------------------------------------------------


def test_eta_counts_promotions_and_the_final_stage():
    from autopeft.search.progress import FINAL, SearchProgress

    def progress(**kw):
        base = dict(new_trials=9, target_trials=27, elapsed_seconds=100.0, time_budget=None, front=[],
                    front_stage=None, median_trial_seconds=1.0, objectives=[], rungs=4, eta=3,
                    rung_seconds={0: 1.0}, rung_counts={0: 9}, final_seeds=2)
        return SearchProgress(**{**base, **kw})

    # 18 new at 1 s; promotions 9 + 3 + 1 at 3, 9, 27 s; the final stage 1 point x 2 seeds x 27 s
    assert progress().eta_seconds == pytest.approx(18 + 9 * 3 + 3 * 9 + 1 * 27 + 2 * 27)
    # measured rungs replace the estimates; done promotions are not counted again
    assert progress(rung_seconds={0: 1.0, 1: 2.0}, rung_counts={0: 9, 1: 4}).eta_seconds == \
        pytest.approx(18 + 5 * 2 + 3 * 6 + 1 * 18 + 2 * 18)
    assert progress(stage=FINAL, final_done=1, final_total=4).eta_seconds == pytest.approx(3 * 27)
    assert progress(rung_seconds={}).eta_seconds is None


def test_step_listener_hears_training(inputs, tmp_path):
    from autopeft.trial.loop import listen_to_steps

    heard = []
    with listen_to_steps(lambda step, total, loss: heard.append((step, total, loss))):
        main(tiny_search(inputs, tmp_path / "run", "--trials", "1", "--final-seeds", "0", "--quiet"))
    assert heard and heard[-1][0] == heard[-1][1] and all(loss == loss for _, _, loss in heard)


# --- Python API ----------------------------------------------------------------------------------------------------


def test_python_api_search_best_and_load_quietly(inputs, tmp_path, capfd):
    import torch
    from peft import PeftModel

    import autopeft

    result = autopeft.search(model=inputs["model"], dataset=inputs["dataset"], space=inputs["space"], trials=3,
                             max_length=16, batch_size=16, lr=5e-2, epochs=16, sampler="random", fidelity="1",
                             final_seeds=1, out=tmp_path / "run")
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # quiet by default
    assert result.front and result.front_stage == "final" and result.metric == "accuracy"
    metrics = [p.values["accuracy"] for p in result.front]
    assert metrics == sorted(metrics, reverse=True)
    smallest = min(result.front, key=lambda p: p.params)
    assert result.best(max_params=smallest.params) == smallest
    assert result.best() == result.front[0]
    with pytest.raises(autopeft.errors.AutopeftError, match="no Pareto point within"):
        result.best(max_params=smallest.params - 1)
    model = result.load()
    assert isinstance(model, PeftModel)
    with torch.no_grad():
        assert model(input_ids=torch.tensor([[101, 2204, 102]])).logits.shape == (1, 2)
    again = autopeft.load_run(tmp_path / "run")
    assert [p.label for p in again.front] == [p.label for p in result.front]
    assert json.dumps(again.table())  # plain rows for a DataFrame


def test_trial_says_what_it_does_outside_a_terminal(inputs, capfd):
    done = run_main(["trial", "--model", inputs["model"], "--dataset", inputs["dataset"], "--max-length", "16",
                     "--max-steps", "4"], capfd)
    assert done.returncode == 0, done.stderr
    assert "loading" in done.stderr and "trained " in done.stderr and "accuracy" in done.stdout
    done = run_main(["trial", "--model", inputs["model"], "--dataset", inputs["dataset"], "--max-length", "16",
                     "--max-steps", "4", "--quiet"], capfd)
    assert done.stderr == "" and "accuracy" in done.stdout

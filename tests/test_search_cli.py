"""`autopeft search` / `export` / `report` end to end: real training of a tiny BERT on a tiny synthetic task."""

from __future__ import annotations

import json

import optuna
import pytest
import torch

from autopeft.cli import main
from autopeft.search import records as R
from autopeft.search.evaluator import RunnerEvaluator
from autopeft.search.run import read_run_info
from autopeft.search.samplers import SAMPLERS
from tests.search_helpers import interrupt_on_call, lora_only_builders, write_search_inputs  # noqa: F401


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return write_search_inputs(tmp_path_factory.mktemp("search-inputs"))


pytestmark = pytest.mark.usefixtures("lora_only_builders")


def search_args(inputs, out, *extra):
    # 16 epochs at lr 0.05: the tiny model leaves the majority class (a trivial trial never reaches a front)
    return ["search", "--model", inputs["model"], "--dataset", inputs["dataset"], "--space", inputs["space"],
            "--max-length", "16", "--batch-size", "16", "--lr", "5e-2", "--epochs", "16", "--out", str(out), *extra]


def trained(run_dir, stage="rung-0"):
    info = read_run_info(run_dir)
    stages = R.load_records(info.open_storage(), info.study_name, info.objectives)
    return [r for r in stages.get(stage, []) if r.trained]


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_each_sampler_runs_the_whole_loop_and_exports_loadable_adapters(inputs, tmp_path, sampler):
    if sampler == "botorch":
        pytest.importorskip("botorch")
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    run = tmp_path / "run"
    main(search_args(inputs, run, "--trials", "6", "--sampler", sampler, "--final-seeds", "1"))
    assert len(trained(run)) == 6
    main(["export", str(run)])
    pareto = json.loads((run / "export" / "pareto.json").read_text())
    assert pareto["front_stage"] == "final" and pareto["points"]
    for point in pareto["points"]:
        folder = run / "export" / point["adapter"]
        assert (folder / "adapter_model.safetensors").is_file() and (folder / "point.yaml").is_file()
        base = AutoModelForSequenceClassification.from_pretrained(inputs["model"])
        model = PeftModel.from_pretrained(base, folder)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([[101, 2204, 102]])).logits
        assert logits.shape == (1, 2)
    rows = (run / "export" / "trials.csv").read_text().splitlines()
    assert rows[0].startswith("stage,number,state") and len(rows) > 6


def test_successive_halving_report_and_optuna_storage(inputs, tmp_path):
    pytest.importorskip("plotly")  # the [report] extra
    run = tmp_path / "run"
    main(search_args(inputs, run, "--trials", "6", "--sampler", "random", "--fidelity", "0.5,1", "--eta", "2",
                     "--final-seeds", "2", "--max-params", "2500"))
    assert trained(run, "rung-1")
    final = trained(run, "final")
    assert final and all(len(r.attrs[R.SEEDS]) == 2 and "accuracy" in r.attrs[R.TEST_METRICS] for r in final)
    run = run.rename(tmp_path / "moved")  # the default SQLite study moves with its run folder
    main(["report", str(run)])
    for name in ("pareto.png", "pareto.html", "hypervolume.png", "heatmap.png", "summary.md"):
        assert (run / "report" / name).stat().st_size > 0
    summary = (run / "report" / "summary.md").read_text()
    assert "## Pareto front (final" in summary and "test accuracy" in summary
    # a plain Optuna storage: optuna-dashboard lists these studies
    names = {s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{run / 'study.db'}")}
    assert names == {"tiny-lora-task", "tiny-lora-task/rung-1", "tiny-lora-task/final"}


def test_an_interrupted_search_resumes_with_the_same_command(inputs, tmp_path, monkeypatch):
    run = tmp_path / "run"
    args = search_args(inputs, run, "--trials", "5", "--sampler", "tpe", "--final-seeds", "0", "--fidelity", "1",
                       "--storage", str(tmp_path / "journal.log"), "--study-name", "resumable")
    real_call = RunnerEvaluator.__call__
    interrupt_on_call(monkeypatch, 3)
    try:  # typer turns Ctrl-C into exit code 130 (returned by app() in non-standalone mode)
        main(args)
    except SystemExit as exit_info:
        assert exit_info.code == 130
    assert len(trained(run)) == 2
    monkeypatch.setattr(RunnerEvaluator, "__call__", real_call)
    main(args)
    records = R.load_records(read_run_info(run).open_storage(), "resumable", read_run_info(run).objectives)["rung-0"]
    assert sum(r.trained for r in records) == 5
    failed = [r for r in records if r.state == "fail"]
    assert len(failed) == 1 and failed[0].attrs[R.REASON].startswith("interrupted")
    main(["export", str(run)])  # no final stage: points without adapter weights, said so
    pareto = json.loads((run / "export" / "pareto.json").read_text())
    assert pareto["front_stage"] == "rung-0" and all(p["adapter"] is None and "final stage" in p["note"]
                                                     for p in pareto["points"])


def test_config_file_with_flags_overriding_it(inputs, tmp_path):
    config = tmp_path / "search.toml"
    config.write_text(f'model = "{inputs["model"]}"\ndataset = "{inputs["dataset"]}"\nspace = "{inputs["space"]}"\n'
                      'trials = 99\nsampler = "random"\nfinal-seeds = 0\nmax-length = 16\nbatch-size = 16\n'
                      'objectives = "metric,params,memory"\nfidelity = "1"\n')
    run = tmp_path / "run"
    main(["search", "--config", str(config), "--trials", "2", "--out", str(run)])
    info = read_run_info(run)
    assert info.settings["trials"] == 2 and info.settings["sampler"] == "random"
    assert [o.name for o in info.objectives] == ["accuracy", "params", "memory"]
    assert len(trained(run)) == 2


@pytest.mark.parametrize("extra, message", [
    (["--sampler", "annealing"], "unknown sampler 'annealing'"),
    (["--max-params", "lots"], "cannot read --max-params 'lots'"),
    (["--fidelity", "0.5,0.25,1"], "fidelity rungs must increase"),
    (["--objectives", "params,metric"], "the first objective must be the task metric"),
    (["--time-budget", "soon"], "cannot read duration 'soon'"),
    (["--backend", "slurm"], "setting 'backend': Input should be 'local' or 'ray'"),
    (["--workers-per-trial", "2"], "--workers-per-trial > 1 needs --backend ray"),
    (["--backend", "ray", "--cpus-per-trial", "0"], "--cpus-per-trial must be positive"),
    (["--backend", "ray", "--max-concurrent", "0"], "--max-concurrent must be at least 1"),
    (["--batch-size", "0"], "setting 'batch-size': Input should be greater than or equal to 1"),
    (["--lr", "nan"], "setting 'lr': Input should be a finite number"),
    (["--lr", "-1"], "setting 'lr': Input should be greater than 0"),
    (["--eval-examples", "0"], "setting 'eval-examples'"),
    (["--trials", "0"], "setting 'trials'"),
    (["--seed", "-1"], "setting 'seed'"),
    (["--max-params", "200%"], "more than the whole model's"),
    (["--max-params", "1"], "no point of the space fits --max-params 1"),
    (["--storage", "results.txt"], "neither a URL"),
    (["--storage", "nosuchdb://x/y"], "cannot use storage"),
    (["--tracking", "neptune"], "setting 'tracking': unknown tracker 'neptune'"),
])
def test_bad_search_input_is_a_one_line_error(inputs, tmp_path, capsys, monkeypatch, extra, message):
    """One line, exit 2, before the model's weights load and before anything is written."""
    from tests.cli_helpers import one_line_error

    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the settings were checked")

    monkeypatch.setattr("autopeft.models.get_base_model", no_model)
    with pytest.raises(SystemExit) as exit_info:
        main(search_args(inputs, tmp_path / "run", "--trials", "1", *extra))
    assert exit_info.value.code == 2
    assert message in one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("url", ["postgresql://alice:hunter2@127.0.0.1:1/autopeft",
                                 "mysql+pymysql://alice:hunter2@ss:w/rd@127.0.0.1/autopeft"])  # '@' unencoded
def test_storage_credentials_never_reach_output_or_run_files(inputs, tmp_path, capsys, url):
    with pytest.raises(SystemExit):
        main(search_args(inputs, tmp_path / "run", "--trials", "1", "--storage", url))
    captured = capsys.readouterr()
    assert "hunter2" not in captured.err + captured.out and "alice" not in captured.err + captured.out
    for path in tmp_path.rglob("*.json"):
        assert "hunter2" not in path.read_text()


SECRET_URLS = [
    ("postgresql://dbuser7q:S3c/retPW@db.internal/optuna", ["S3c/retPW", "dbuser7q"]),
    ("postgresql://dbuser7q:S3c%2FretPW@db.internal:5432/optuna", ["S3c%2FretPW", "dbuser7q"]),
    ("postgresql://db.internal/optuna?user=dbuser7q&password=S3c/retPW", ["S3c/retPW"]),
    ("mysql+pymysql://dbuser7q:p%40ss:w/rd@db.internal/optuna", ["p%40ss:w/rd", "dbuser7q"]),
    ("postgresql://dbuser7q:S3cretPW@db.internal/optuna?sslmode=require&sslpassword=K3yPW",
     ["S3cretPW", "K3yPW", "dbuser7q"]),
]


@pytest.mark.parametrize("url, secrets", SECRET_URLS)
def test_no_url_secret_reaches_any_file_or_output_of_a_run(inputs, tmp_path, capsys, monkeypatch, url, secrets):
    """The search, export and report of a run on a credentialed storage (served here by a SQLite file: the
    URL's text takes every path the real one does) write no password or user name anywhere."""
    from autopeft.search import run as run_module
    from autopeft.search import storage as storage_module

    real_open = storage_module.open_storage
    local = f"sqlite:///{tmp_path / 'served.db'}"
    monkeypatch.setattr(run_module, "open_storage", lambda u: real_open(local if u == url else u))
    run = tmp_path / "run"
    main(search_args(inputs, run, "--trials", "2", "--final-seeds", "1", "--storage", url,
                     "--backend", "local", "--ray-address", url.replace("postgresql", "ray", 1)))
    main(["export", str(run), "--storage", url])
    main(["report", str(run), "--storage", url])
    captured = capsys.readouterr()
    texts = {"stdout+stderr": captured.out + captured.err}
    texts.update({str(p): p.read_bytes().decode("utf-8", "replace") for p in run.rglob("*") if p.is_file()})
    assert len(texts) > 8  # run.json, study files, adapters, export, report...
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"{secret!r} leaked into {where}"
    assert "***@db.internal" in (run / "run.json").read_text() or "password=***" in (run / "run.json").read_text()


def test_ray_address_and_storage_never_reach_run_json_or_workers():
    from autopeft.search.settings import merge_settings

    settings = merge_settings({}, {"model": "m", "dataset": "d", "space": "s", "backend": "ray",
                                   "ray_address": "ray://bob:s3cret@head:10001",
                                   "storage": "postgresql://alice:hunter2@db/optuna"})
    public = json.dumps(settings.public_dict("postgresql://***@db/optuna"))
    assert "s3cret" not in public and "bob" not in public and "hunter2" not in public
    workers = json.dumps(settings.for_workers())
    assert "s3cret" not in workers and "hunter2" not in workers and "ray_address" not in workers


def test_settings_are_grouped_in_memory_and_flat_on_disk():
    """Flags, config files, run.json and workers use the flat flag keys; code reads the groups."""
    from autopeft.search.settings import SearchSettings, merge_settings

    flat = {"model": "m", "dataset": "d", "space": "s", "task": "classification", "fidelity": "0.5,1",
            "backend": "ray", "lr": 1e-3, "prior": "heads", "prompt_column": "q,a", "seed": 2}
    settings = merge_settings({}, flat)
    assert settings.task.kind == "classification" and settings.task.prompt_column == ["q", "a"]
    assert settings.fidelity.rungs == [0.5, 1.0] and settings.backend.name == "ray"
    assert settings.training.lr == 1e-3 and settings.priors.prior == ["heads"] and settings.seed == 2
    stored = settings.flat_dict()
    assert stored["task"] == "classification" and stored["fidelity"] == [0.5, 1.0] and stored["backend"] == "ray"
    assert not {"training", "priors"} & set(stored)
    assert SearchSettings.model_validate(stored) == settings  # run.json and Ray workers read it back
    assert SearchSettings.model_validate(settings.for_workers()).backend.name == "ray"


@pytest.mark.parametrize("values, message", [
    # the registry's names
    ({"prior": "nope"}, "setting 'prior.0': Input should be 'sensitivity', 'heads' or 'oneshot'"),
    ({"priors": ["heads"]}, "setting 'priors': Extra inputs are not permitted"),          # a group is not a key
    ({"lr": 0}, "setting 'lr': Input should be greater than 0"),                         # inside a group: flat key
    ({"warmup_pool": "x"}, "--warmup-pool needs --warmup-size"),
    ({"inherit_weights": True, "prior": "heads"}, "--inherit-weights needs --prior oneshot"),
    ({"screen_examples": 0}, "setting 'screen-examples': Input should be greater than or equal to 1"),
])
def test_bad_settings_name_the_flat_key(values, message):
    from autopeft.errors import AutopeftError
    from autopeft.search.settings import merge_settings

    with pytest.raises(AutopeftError, match=f"^flags: {message}"):
        merge_settings({}, {"model": "m", "dataset": "d", "space": "s", **values})


def test_priors_prepare_in_registry_order_and_give_context_and_points(monkeypatch):
    from autopeft.search import priors
    from autopeft.search.settings import merge_settings

    class Fake(priors.SearchPrior):
        def prepare(self, base, task):
            return f"{self.name} ready for {task}"

        def build_context(self):
            return {"head_ranking": self.name}

        def starting_points(self, space, max_params, note):
            return [({"x": 1}, f"prior:{self.name}")]

    monkeypatch.setattr(priors.base, "PRIORS", {"first": type("First", (Fake,), {"name": "first"}),
                                                "second": type("Second", (Fake,), {"name": "second"})})
    settings = merge_settings({}, {"model": "m", "dataset": "d", "space": "s"})
    settings.priors.prior = ["second", "first"]  # past validation: these names exist only in this test
    notes = []
    prepared = priors.prepared_priors(settings, None, "t", notes.append)
    assert [p.name for p in prepared] == ["first", "second"] and notes == ["first ready for t", "second ready for t"]
    assert prepared[1].build_context() == {"head_ranking": "second"}
    assert prepared[0].starting_points(None, None, notes.append) == [({"x": 1}, "prior:first")]

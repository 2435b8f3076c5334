"""The CLI: one-line errors with exit code 2, and a real trial end to end."""

import json
import subprocess
import sys

import pytest

from tests.test_trial import tiny_bert_dir  # noqa: F401  (module-scoped fixture)


def test_console_script_entry_point():
    done = subprocess.run([sys.executable, "-m", "autopeft.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "trial" in done.stdout


@pytest.mark.parametrize("args, message", [
    (["trial", "--model", "./no/such/model", "--dataset", "x.tsv"], "error: dataset file or folder not found"),
    (["trial", "--model", "./no/such/model", "--dataset", "{data}/glue_rte"],
     "error: model path './no/such/model' does not exist"),
    (["trial", "--model", "minilm", "--dataset", "{data}/glue_rte", "--text-column", "nope"],
     "error: text column 'nope'"),
    (["space", "show", "missing.yaml", "--model", "minilm"], "error: search space file 'missing.yaml' does not exist"),
])
def test_bad_input_is_one_line_and_exit_2(autopeft, args, message, shared_datasets):
    done = autopeft(*[a.replace("{data}", str(shared_datasets)) for a in args])
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_trial_command_end_to_end(autopeft, tiny_bert_dir, shared_datasets, tmp_path):  # noqa: F811
    out = tmp_path / "result.json"
    done = autopeft("trial", "--model", tiny_bert_dir, "--dataset", str(shared_datasets / "glue_sst2"),
                    "--max-steps", "2", "--batch-size", "8", "--max-length", "32", "--eval-examples", "16",
                    "--json", str(out), "--save-dir", str(tmp_path / "adapter"))
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["status"] == "ok" and result["steps"] == 2 and "accuracy" in result["metrics"]
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()


def test_space_commands(autopeft):
    done = autopeft("space", "sample", "search_spaces/autopeft.yaml", "--model", "minilm", "-n", "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("# point") == 2 and "trainable parameters" in done.stdout
    done = autopeft("space", "show", "search_spaces/lora.yaml", "--model", "minilm", "--samples", "50")
    assert done.returncode == 0, done.stderr
    assert "lora.size_level.layer_5" in done.stdout and "space size" in done.stdout


def test_flag_group_adds_shared_options_in_place_and_hands_them_over_as_one_dict():
    from typing import Annotated, Any

    import typer
    from typer.testing import CliRunner

    from autopeft.cli.options import TASK_FLAGS, flag_group

    app = typer.Typer()
    seen = {}

    @app.command()
    @flag_group("task_flags", TASK_FLAGS)
    def command(dataset: Annotated[str, typer.Option()], task_flags: dict[str, Any],
                seed: Annotated[int, typer.Option()] = 0):
        seen.update(dataset=dataset, seed=seed, **task_flags)

    result = CliRunner().invoke(app, ["--dataset", "d", "--task", "regression", "--prompt-column", "q",
                                      "--prompt-column", "a", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert seen == {"dataset": "d", "seed": 3, "task": "regression", "prompt_column": ["q", "a"],
                    **{name: None for name in TASK_FLAGS if name not in ("task", "prompt_column")}}
    help_text = CliRunner().invoke(app, ["--help"], terminal_width=200).output
    # the command's own options first, then the shared ones under their panel, in their order
    assert help_text.index("--dataset ") < help_text.index("--seed") < help_text.index("Task and data") \
        < help_text.index("--dataset-config") < help_text.index("--metric")


def test_help_lists_what_the_registries_hold():
    import typer

    from autopeft.cli.app import app
    from autopeft.priors.selection import STRATEGIES
    from autopeft.search.priors import PRIORS
    from autopeft.search.samplers import SAMPLERS

    commands = typer.main.get_command(app).commands
    search_help = {param.name: param.help for param in commands["search"].params}
    assert search_help["sampler"].startswith("auto (default")
    assert search_help["sampler"].endswith(f"| {' | '.join(SAMPLERS)}.")
    assert " | ".join(STRATEGIES) in search_help["subset_strategy"]
    assert all(f"{name} ({prior.description})" in search_help["prior"] for name, prior in PRIORS.items())
    assert {param.name: param.help for param in commands["select-data"].params}["strategy"] == " | ".join(STRATEGIES)

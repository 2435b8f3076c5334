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
    (["trial", "--model", "./no/such/model", "--dataset", "{data}/glue_rte"], "error: model path './no/such/model' does not exist"),
    (["trial", "--model", "minilm", "--dataset", "{data}/glue_rte", "--text-column", "nope"], "error: text column 'nope'"),
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

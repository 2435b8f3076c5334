"""DeepSpeed ZeRO and data-parallel trials on CPU: real DeepSpeed, real gloo process groups.

Trials that make a process group run in child processes, so this pytest process stays a plain,
single-process one for the tests that follow.
"""

import json
import math
import multiprocessing
import socket
import sys
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel

from autopeft.data import load_task
from autopeft.errors import AutopeftError
from autopeft.models import get_base_model, resolve_model
from autopeft.trial import Fidelity, TrainingConfig, TrialRunner
from autopeft.trial.distributed import PRESETS, fill_deepspeed_config, resolve_deepspeed_config
from tests.conftest import tiny_bert_config
from tests.search_helpers import VOCAB, write_tiny_task

FIDELITY = Fidelity(max_length=32, batch_size=16)  # the 64-example train split: 4 global batches, none short
LORA = LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], lora_dropout=0.0, task_type="SEQ_CLS")
LEARNING_RATE = 1e-2
ZERO3_PARTITIONING_ALL = {"zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0}}
"""ZeRO-3 keeps parameters under 1e5 elements whole by default: that would be every parameter of the tiny model."""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A dropout-free tiny BERT (so ranks and runs are bit-comparable) and a tiny sentiment task."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("distributed")
    torch.manual_seed(0)
    config = tiny_bert_config(vocab_size=VOCAB, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    BertForSequenceClassification(config).save_pretrained(folder / "model")
    AutoTokenizer.from_pretrained(resolve_model("minilm").path).save_pretrained(folder / "model")
    write_tiny_task(folder / "task")
    (folder / "zero3.json").write_text(json.dumps(ZERO3_PARTITIONING_ALL))
    return folder


def _runner(folder: Path) -> TrialRunner:
    return TrialRunner(get_base_model(str(folder / "model"), "classification"), load_task(str(folder / "task")))


class RecordingLora:
    """The LoRA adapter factory, keeping the model it builds so the trained tensors can be read after the trial."""

    model = None

    def __call__(self, base):
        from peft import get_peft_model

        self.model = get_peft_model(base, LORA)
        return self.model


def _trained_state(model) -> tuple[dict[str, torch.Tensor], bool]:
    """The trainable tensors (gathered when ZeRO-3 partitioned them) and whether they were partitioned."""
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    partitioned = [p for p in trainable.values() if hasattr(p, "ds_id")]
    was_partitioned = bool(partitioned) and all(p.numel() == 0 for p in partitioned)
    if partitioned:
        import deepspeed

        gather = deepspeed.zero.GatheredParameters(partitioned)
    else:
        gather = nullcontext()
    with gather:
        return {name: p.detach().clone() for name, p in trainable.items()}, was_partitioned


def _run_trials(rank: int, world: int, data: Path, out: Path, port: int, trials: list[tuple[str, str | None]]):
    """A child process: each named trial's result, trained tensors and (rank 0's) saved adapter go to ``out``."""
    torch.set_num_threads(1)
    if world > 1:
        torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    runner = _runner(data)
    records = {}
    for name, deepspeed in trials:
        adapter = RecordingLora()
        training = TrainingConfig(learning_rate=LEARNING_RATE, deepspeed=deepspeed)
        result = runner.run(adapter, FIDELITY, seed=0, training=training, save_dir=out / f"{name}-rank{rank}")
        state, partitioned = _trained_state(adapter.model)
        torch.save(state, out / f"{name}-rank{rank}.pt")
        records[name] = {"result": result.to_dict(), "partitioned": partitioned}
    (out / f"rank{rank}.json").write_text(json.dumps(records))


def _spawn(world: int, data: Path, out: Path, trials: list[tuple[str, str | None]]) -> list[dict]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # children fork from a server that imported torch, transformers and peft once (spawn re-imports them: ~6 s each)
    multiprocessing.set_forkserver_preload([__name__])
    torch.multiprocessing.start_processes(_run_trials, args=(world, data, out, port, trials), nprocs=world,
                                          start_method="forkserver")
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(world)]


def _reloaded(folder: Path, adapter_dir: Path) -> dict[str, torch.Tensor]:
    base = get_base_model(str(folder / "model"), "classification").fresh_copy(0)
    loaded = PeftModel.from_pretrained(base, adapter_dir)
    return {name: p.detach() for name, p in loaded.named_parameters() if "lora_" in name or "modules_to_save" in name}


def _assert_close(actual: dict, expected: dict, atol: float) -> None:
    assert actual.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(actual[name], tensor, atol=atol, rtol=0, msg=name)


# ------------------------------------------------------------------ DeepSpeed
def test_deepspeed_zero2_and_zero3_train_save_and_match_a_plain_trial(workdir, tmp_path):
    pytest.importorskip("deepspeed")
    trials = [("plain", None), ("zero2", "zero2"), ("zero3", str(workdir / "zero3.json")), ("plain_after", None)]
    (records,) = _spawn(1, workdir, tmp_path, trials)

    plain = torch.load(tmp_path / "plain-rank0.pt")
    for name in ("zero2", "zero3"):
        result = records[name]["result"]
        assert result["status"] == "ok", result["reason"]
        assert result["steps"] == 4 and math.isfinite(result["final_train_loss"])
        assert {"accuracy", "macro_f1", "eval_loss"} <= set(result["metrics"])
        trained = torch.load(tmp_path / f"{name}-rank0.pt")
        assert all(trained[n].abs().sum() > 0 for n in trained if "lora_B" in n)  # B starts at zero
        reloaded = _reloaded(workdir, tmp_path / f"{name}-rank0")
        assert all(t.numel() > 0 for t in reloaded.values())
        _assert_close(reloaded, trained, atol=0)
        _assert_close(trained, plain, atol=1e-5)  # same AdamW, schedule and clipping as the plain loop
        assert result["metrics"] == pytest.approx(records["plain"]["result"]["metrics"], abs=1e-5)
    assert records["zero3"]["partitioned"]  # so saving had to gather them
    assert records["plain_after"]["result"]["metrics"] == records["plain"]["result"]["metrics"]


# ------------------------------------------------------------------ data parallel
def test_two_rank_ddp_trial_equals_the_one_process_trial(workdir, tmp_path):
    folder = tmp_path / "ddp"
    folder.mkdir()
    ranks = _spawn(2, workdir, folder, [("ddp", None)])

    adapter = RecordingLora()
    single = _runner(workdir).run(adapter, FIDELITY, seed=0, training=TrainingConfig(learning_rate=LEARNING_RATE),
                                  save_dir=tmp_path / "single")
    assert single.ok, single.reason
    expected, _ = _trained_state(adapter.model)

    results = [records["ddp"]["result"] for records in ranks]
    assert all(r["status"] == "ok" for r in results), [r["reason"] for r in results]
    assert results[0]["metrics"] == results[1]["metrics"]
    assert results[0]["final_train_loss"] == results[1]["final_train_loss"]
    assert results[0]["steps"] == single.steps == 4
    assert results[0]["metrics"] == pytest.approx(single.metrics, abs=1e-5)
    assert results[0]["final_train_loss"] == pytest.approx(single.final_train_loss, abs=1e-5)
    for rank in range(2):
        _assert_close(torch.load(folder / f"ddp-rank{rank}.pt"), expected, atol=1e-5)
    assert (folder / "ddp-rank0" / "adapter_model.safetensors").is_file()
    assert not (folder / "ddp-rank1").exists()  # only rank 0 saves
    _assert_close(_reloaded(workdir, folder / "ddp-rank0"), _reloaded(workdir, tmp_path / "single"), atol=1e-5)


# ------------------------------------------------------------------ config and CLI errors
def test_presets_and_filled_values():
    assert resolve_deepspeed_config("zero2")["zero_optimization"]["stage"] == 2
    assert resolve_deepspeed_config("zero3")["zero_optimization"]["stage"] == 3
    config = {"zero_optimization": {"stage": 3, "reduce_bucket_size": "auto"}, "gradient_clipping": "auto",
              "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "torch_adam": True}}}
    training = TrainingConfig(learning_rate=3e-4, max_grad_norm=0.5, bf16=True)
    filled = fill_deepspeed_config(config, training, batch_size=16, world=3, total_steps=10)
    assert filled["train_micro_batch_size_per_gpu"] == 6 and filled["train_batch_size"] == 18
    assert filled["gradient_accumulation_steps"] == 1 and filled["gradient_clipping"] == 0.5
    assert filled["bf16"] == {"enabled": True}
    assert filled["optimizer"]["params"] == {"lr": 3e-4, "torch_adam": True}  # unknown "auto"s: DeepSpeed's defaults
    assert filled["zero_optimization"] == {"stage": 3}
    assert PRESETS["zero2"] == {"zero_optimization": {"stage": 2}}  # filling copies, never edits a preset


@pytest.mark.parametrize("content, message", [
    (None, "unknown DeepSpeed preset 'zero9'"),
    ("missing", "does not exist"),
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "must hold a JSON object"),
    ('{"train_batch_size": 64}', "train_batch_size must be \"auto\""),
    ('{"gradient_accumulation_steps": 4}', "gradient_accumulation_steps must be 1"),
])
def test_bad_deepspeed_configs_are_one_line_errors(tmp_path, content, message):
    spec = "zero9"
    if content is not None:
        spec = str(tmp_path / "ds.json")
        if content != "missing":
            Path(spec).write_text(content)
    with pytest.raises(AutopeftError, match=message) as error:
        resolve_deepspeed_config(spec)
    assert "\n" not in str(error.value)


def test_missing_deepspeed_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "deepspeed", None)  # what an environment without DeepSpeed imports
    with pytest.raises(AutopeftError, match=r"pip install 'autopeft\[deepspeed\]'"):
        resolve_deepspeed_config("zero2")


def test_cli_trial_rejects_an_unknown_deepspeed_preset(capfd, tmp_path):
    from autopeft.cli import main

    with pytest.raises(SystemExit) as done:
        main(["trial", "-m", str(tmp_path / "no-model"), "-d", str(tmp_path / "no-data"), "--deepspeed", "nonsense"])
    assert done.value.code == 2
    err = capfd.readouterr().err
    assert err.startswith("error:") and "nonsense" in err and len(err.strip().splitlines()) == 1

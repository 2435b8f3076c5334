"""One trial over several processes: DeepSpeed ZeRO, or data parallelism with DDP.

A lone process runs DeepSpeed in a one-rank process group made here. Under a launcher that set up
torch.distributed (torchrun, Ray Train's TorchTrainer) every rank runs the same trial and takes its
contiguous shard of each global batch, so the optimisation is the one-process one.
"""

from __future__ import annotations

import copy
import json
import math
import os
import socket
from collections.abc import Callable
from pathlib import Path

import torch

from autopeft._imports import optional_dependency, require_installed
from autopeft.errors import AutopeftError

PRESETS: dict[str, dict] = {
    "zero2": {"zero_optimization": {"stage": 2}},
    "zero3": {"zero_optimization": {"stage": 3}},
}
"""No fp16 (no loss scaling to tune, and CPUs lack fast fp16); bf16 follows ``TrainingConfig.bf16``. With no
"optimizer" or "scheduler" section the trial's own torch AdamW and warmup schedule are passed in, so a
ZeRO trial optimises exactly like a plain one and DeepSpeed builds no fused-Adam op."""

BATCH_KEYS = ("train_batch_size", "train_micro_batch_size_per_gpu")

SHARED_MEMORY_OP = "deepspeed_shm_comm"
"""DeepSpeed's CPU allreduce between ranks on one host, JIT-compiled (~45 s, needs a C++ toolchain) at init."""


def is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def world_size() -> int:
    return torch.distributed.get_world_size() if is_distributed() else 1


def rank() -> int:
    return torch.distributed.get_rank() if is_distributed() else 0


def default_device() -> torch.device:
    """One GPU per rank under a launcher (LOCAL_RANK set), else the GPU or the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    local_rank = os.environ.get("LOCAL_RANK")
    if local_rank is None:
        return torch.device("cuda")
    return torch.device("cuda", int(local_rank) % torch.cuda.device_count())


def sum_over_ranks(value: torch.Tensor) -> float:
    total = value.detach().float().clone()
    torch.distributed.all_reduce(total)
    return total.item()


# ------------------------------------------------------------------ DeepSpeed config
def resolve_deepspeed_config(spec: str) -> dict:
    """A preset name or a JSON file, checked now: bad input is a one-line AutopeftError, not a failed trial."""
    if spec in PRESETS:
        config = copy.deepcopy(PRESETS[spec])
    else:
        config = _read_config_file(spec)
    require_installed("deepspeed", "--deepspeed")
    return config


def _read_config_file(spec: str) -> dict:
    path = Path(spec)
    if not path.is_file():
        if path.suffix or os.sep in spec:
            raise AutopeftError(f"DeepSpeed config file '{spec}' does not exist")
        raise AutopeftError(f"unknown DeepSpeed preset '{spec}': use {', '.join(PRESETS)} or a JSON config file")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AutopeftError(f"DeepSpeed config '{spec}' is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise AutopeftError(f"DeepSpeed config '{spec}' must hold a JSON object")
    for key in BATCH_KEYS:
        if config.get(key, "auto") != "auto":
            raise AutopeftError(f"DeepSpeed config '{spec}': {key} must be \"auto\" or left out, "
                                "the global batch is the trial's --batch-size")
    if config.get("gradient_accumulation_steps", "auto") not in ("auto", 1):
        raise AutopeftError(f"DeepSpeed config '{spec}': gradient_accumulation_steps must be 1 or \"auto\", "
                            "a trial step is one global batch")
    return config


def fill_deepspeed_config(config: dict, training, batch_size: int, world: int, total_steps: int) -> dict:
    """The trial's values wherever the config says "auto" or is silent; other "auto"s get DeepSpeed's defaults.

    DeepSpeed wants train_batch_size == micro batch x ranks; the micro batch is the largest shard of
    np.array_split, the size DeepSpeed only uses for its bookkeeping here.
    """
    from autopeft.trial.loop import warmup_steps  # loop imports this module

    config = copy.deepcopy(config)
    micro_batch = math.ceil(batch_size / world)
    config.update(train_micro_batch_size_per_gpu=micro_batch, train_batch_size=micro_batch * world,
                  gradient_accumulation_steps=1)
    config.setdefault("gradient_clipping", "auto")
    config.setdefault("bf16", {}).setdefault("enabled", "auto")
    trial_values = {
        ("gradient_clipping",): training.max_grad_norm,
        ("bf16", "enabled"): training.bf16,
        ("fp16", "enabled"): False,
        ("optimizer", "params", "lr"): training.learning_rate,
        ("optimizer", "params", "weight_decay"): training.weight_decay,
        ("scheduler", "params", "warmup_min_lr"): 0.0,
        ("scheduler", "params", "warmup_max_lr"): training.learning_rate,
        ("scheduler", "params", "warmup_num_steps"): warmup_steps(training, total_steps),
        ("scheduler", "params", "total_num_steps"): max(total_steps, 1),
    }
    for (*parents, key), value in trial_values.items():
        section = config
        for parent in parents:
            section = section.get(parent) if isinstance(section, dict) else None
        if isinstance(section, dict) and section.get(key) == "auto":
            section[key] = value
    return _without_auto(config)


def _without_auto(config: dict) -> dict:
    return {key: _without_auto(value) if isinstance(value, dict) else value
            for key, value in config.items() if value != "auto"}


# ------------------------------------------------------------------ DeepSpeed runtime
def import_deepspeed():
    with optional_dependency("deepspeed", "--deepspeed"):
        import deepspeed
    return deepspeed


def init_deepspeed_process_group() -> None:
    """DeepSpeed needs a process group even for one process; a launcher's (torchrun, Ray Train) is reused."""
    deepspeed = import_deepspeed()
    from deepspeed.accelerator import get_accelerator

    if is_distributed():  # DeepSpeed's engine reads these even when the group exists
        os.environ.setdefault("RANK", str(rank()))
        os.environ.setdefault("WORLD_SIZE", str(world_size()))
        os.environ.setdefault("LOCAL_RANK", os.environ["RANK"])
    elif "WORLD_SIZE" not in os.environ:  # a lone process: rank 0 of 1 on this host
        for name, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
            os.environ.setdefault(name, value)
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    accelerator = get_accelerator()
    if accelerator.device_name() == "cpu" and os.environ["WORLD_SIZE"] == "1":
        # one rank shares memory with nobody: skip the op's JIT build (DeepSpeed reads this dict at init)
        deepspeed.ops.__compatible_ops__[SHARED_MEMORY_OP] = False
    deepspeed.init_distributed(dist_backend=accelerator.communication_backend_name())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def deepspeed_engine(model: torch.nn.Module, config: dict, optimizer_factory: Callable, schedule: Callable,
                     parameters: list | None = None):
    """``deepspeed.initialize`` on the trainable parameters (or the given ``parameters``: Parameters or torch
    parameter groups with their own rates), with the trial's optimizer and schedule unless the config has its own."""
    deepspeed = import_deepspeed()
    if parameters is None:
        parameters = [p for p in model.parameters() if p.requires_grad]
    engine, *_ = deepspeed.initialize(
        model=model, model_parameters=parameters, config=config,
        optimizer=None if "optimizer" in config else optimizer_factory(parameters),
        lr_scheduler=None if "scheduler" in config else schedule,
    )
    return engine


# ------------------------------------------------------------------ saving
def save_adapter(model: torch.nn.Module, save_dir: str | Path) -> None:
    """Rank 0 writes the adapter; under ZeRO-3 every rank first joins the gather of its partitioned parameters."""
    partitioned = [p for p in _saved_parameters(model) if hasattr(p, "ds_id")]
    if not partitioned:
        if rank() == 0:
            model.save_pretrained(str(save_dir))
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(partitioned):  # modifier_rank=None: a read-only gather on every rank
        if rank() == 0:
            model.save_pretrained(str(save_dir))


def _saved_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """What save_pretrained reads: a PEFT model's trainable and adapter-named parameters, a plain model's all."""
    adapter_names = set(getattr(model, "peft_config", None) or ())
    if not adapter_names:
        return list(model.parameters())
    return [p for name, p in model.named_parameters() if p.requires_grad or adapter_names & set(name.split("."))]

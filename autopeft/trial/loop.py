"""The one training loop: its callers say what a batch's loss is, the loop does the rest.

AdamW on the trainable parameters, a linear schedule with warm-up, length-grouped batches, bf16
autocast, a stop on a non-finite loss, gradient clipping and the step: plainly, data-parallel (DDP)
when torch.distributed has several ranks, or through a DeepSpeed engine the caller made. The trial
runner (the task loss), the warm-up (masked or causal LM, or the task loss) and LoFiT's head selection
(task loss + L1 penalty) all train through :func:`train`.

The schedule is transformers' ``get_linear_schedule_with_warmup``. Accelerate's ``Accelerator`` does not
carry the rest: its state is one per process and refuses a second mixed-precision setting, while a search
runs trials with and without bf16 or DeepSpeed in one process, and it fills DeepSpeed's "auto" values its
own way. Trainer's ``group_by_length`` draws its batches with another generator (other batches for a
seed), and ``DataCollatorWithPadding`` leaves causal-LM labels unpadded and pads through the tokenizer
(6x slower per batch than :func:`autopeft.data.collate` on the pre-tokenised arrays).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from autopeft.data import length_grouped_batches
from autopeft.errors import AutopeftError
from autopeft.trial import distributed


@dataclass(frozen=True)
class TrainingConfig:
    """How a trial optimises: AdamW's learning rate and weight decay, the share of warm-up steps in the linear
    schedule, gradient clipping (0: none), bf16 autocast, and DeepSpeed (the runner makes the engine)."""

    learning_rate: float = 5e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.06
    max_grad_norm: float = 1.0
    bf16: bool = False  # bf16 autocast: 1.2x (MiniLM) to 1.66x (SmolLM2) faster per step on recent CPUs
    deepspeed: str | None = None  # zero2 | zero3 | path to a DeepSpeed JSON config

    def __post_init__(self):
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise AutopeftError(f"learning rate must be a positive number, got {self.learning_rate}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise AutopeftError(f"weight decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.warmup_ratio < 1:
            raise AutopeftError(f"warm-up ratio must be in [0, 1), got {self.warmup_ratio}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Shard:
    """This rank's ``rows`` of the global batch ``batch`` (positions into the loop's ``lengths``).

    In one process the shard is the whole batch."""

    rows: np.ndarray
    batch: np.ndarray


LossFunction = Callable[[torch.nn.Module, Shard], torch.Tensor]
"""``loss(model, shard)``: this rank's part of the global batch's loss, run forward through ``model`` (the DDP
wrapper or DeepSpeed engine when there is one). The parts of all ranks must sum to the batch's loss; in one
process that is the batch's loss."""


@dataclass(frozen=True)
class TrainingRun:
    """What :func:`train` did."""

    steps: int
    examples: int             # summed over the global batches
    seconds: float
    final_loss: float | None  # the last step's loss (summed over ranks)


class NonFiniteLoss(FloatingPointError):
    """The loss became NaN or infinite; ``loss`` and the 1-based ``step`` say when."""

    def __init__(self, loss: float, step: int):
        super().__init__(f"loss became {loss} at step {step}")
        self.loss, self.step = loss, step


def adamw(parameters, training: TrainingConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(parameters, lr=training.learning_rate, weight_decay=training.weight_decay)


def linear_schedule(optimizer, training: TrainingConfig, total_steps: int):
    """Linear warm-up over ``warmup_ratio`` of the steps, then linear decay to 0 at ``total_steps``."""
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(optimizer, int(training.warmup_ratio * total_steps), max(total_steps, 1))


def autocast(device: torch.device, training: TrainingConfig):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=training.bf16)


def train(
    model: torch.nn.Module,
    loss: LossFunction,
    lengths: np.ndarray,
    *,
    training: TrainingConfig,
    batch_size: int,
    total_steps: int,
    seed: int,
    device: torch.device,
    parameters: list[torch.nn.Parameter] | None = None,
    engine=None,
) -> TrainingRun:
    """Train ``total_steps`` steps on batches of the examples whose token ``lengths`` are given, epoch after epoch.

    Epoch ``e`` draws its length-grouped batches with seed ``seed + e``; the torch generator is seeded with
    ``seed`` first (dropout, masking). ``parameters`` (default: the model's trainable ones) are what AdamW
    updates and clipping measures (an engine has its own). With several ranks each takes its contiguous shard
    of every global batch of ``batch_size`` and the model is wrapped in DDP; a DeepSpeed ``engine`` runs forward
    and makes the update itself (its config carries the clipping, the optimizer and the schedule). Raises
    :class:`NonFiniteLoss` before stepping on a NaN or infinite loss.
    """
    world, rank = distributed.world_size(), distributed.rank()
    if min(batch_size, len(lengths)) < world:
        raise ValueError(f"a trial over {world} ranks needs batches of at least {world} examples")
    if engine is None:
        parameters = parameters if parameters is not None else [p for p in model.parameters() if p.requires_grad]
        forward, update = _torch_update(model, parameters, training, total_steps, world)
    else:
        forward = engine

        def update(loss_tensor):
            engine.backward(loss_tensor)
            engine.step()  # clips, steps the optimizer and the schedule, zeroes the gradients
    torch.manual_seed(seed)
    forward.train()
    step = examples = 0
    loss_value = None
    start = time.perf_counter()
    epoch = 0
    while step < total_steps:
        for batch in length_grouped_batches(lengths, batch_size, seed=seed + epoch):
            if step >= total_steps:
                break
            if len(batch) < world:  # an epoch's last batch, too short to give every rank an example
                continue
            shard = Shard(np.array_split(batch, world)[rank] if world > 1 else batch, batch)
            with autocast(device, training):
                loss_tensor = loss(forward, shard)
            if world > 1:
                loss_value = distributed.sum_over_ranks(loss_tensor)
                loss_tensor = loss_tensor * world  # DDP and DeepSpeed average the gradients over ranks
            else:
                loss_value = loss_tensor.item()
            if not math.isfinite(loss_value):
                raise NonFiniteLoss(loss_value, step + 1)
            update(loss_tensor)
            step += 1
            examples += len(batch)
        epoch += 1
    return TrainingRun(step, examples, time.perf_counter() - start, loss_value)


def _torch_update(model, parameters, training: TrainingConfig, total_steps: int, world: int):
    """The module to run forward (DDP-wrapped over several ranks) and the update that follows a loss."""
    optimizer = adamw(parameters, training)
    scheduler = linear_schedule(optimizer, training, total_steps)

    def update(loss_tensor):
        loss_tensor.backward()
        if training.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(parameters, training.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return (torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model), update

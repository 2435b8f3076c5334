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

import io
import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

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
    resumed_steps: int = 0    # of ``steps``, done before (by the checkpoint resumed from)
    state: TrainState | None = None  # where training stands (not with a DeepSpeed engine or several ranks)
    losses: tuple[tuple[int, float], ...] = ()  # (step, mean loss of the steps since the previous entry), thinned


class CheckpointMismatch(ValueError):
    """A training checkpoint does not fit the model or the training it is to continue."""


CHECKPOINT_FORMAT = 1
MAX_LOSS_POINTS = 100
"""Training-loss entries a run reports at most (:attr:`TrainingRun.losses`): longer runs average windows of steps,
so that a trial's loss curve stays a hundred intermediate values, whatever its length."""
_PARAMETERS_FILE, _RNG_FILE, _OPTIMIZER_FILE, _META_FILE = ("parameters.safetensors", "rng.safetensors",
                                                            "optimizer.pt", "checkpoint.json")


@dataclass
class TrainState:
    """Where a :func:`train` stands after ``steps`` optimiser steps: enough to continue it exactly.

    The trainable parameters by name, AdamW's and the LR schedule's state, and the torch RNG states (dropout);
    the batch order is not stored, since :func:`train` regenerates it from the seed. ``meta`` is the caller's
    (what the batches depend on: seed, data, schedule), checked by the caller on resume. The tensors are the live
    ones of the trained model: save the state before that model trains further.
    """

    steps: int
    parameters: dict[str, torch.Tensor]
    optimizer: dict
    scheduler: dict
    rng: dict[str, torch.Tensor]
    final_loss: float | None = None
    meta: dict = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        """Write the checkpoint folder ``path`` all or nothing (a reader sees the old folder or the new one).

        Tensors go to safetensors; the optimizer and scheduler state dicts (nested dicts of tensors and numbers)
        to ``torch.save``, which :meth:`load` reads back with ``weights_only=True``."""
        from safetensors.torch import save_file

        from autopeft.atomic import write_dir

        def write(folder: Path) -> None:
            save_file({name: t.detach().contiguous().cpu() for name, t in self.parameters.items()},
                      str(folder / _PARAMETERS_FILE))
            save_file({name: t.contiguous().cpu() for name, t in self.rng.items()}, str(folder / _RNG_FILE))
            buffer = io.BytesIO()
            torch.save({"optimizer": self.optimizer, "scheduler": self.scheduler}, buffer)
            (folder / _OPTIMIZER_FILE).write_bytes(buffer.getvalue())
            (folder / _META_FILE).write_text(json.dumps({
                "format": CHECKPOINT_FORMAT, "steps": self.steps, "final_loss": self.final_loss, "meta": self.meta,
            }, indent=1))
        return write_dir(path, write)

    @classmethod
    def load(cls, path: str | Path) -> TrainState:
        """Read a folder :meth:`save` wrote (tensors on the CPU).

        The optimizer state is read with ``torch.load(weights_only=True)``: tensors, numbers, strings and
        containers only, never an arbitrary pickle, so a checkpoint someone else wrote cannot run code here."""
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / _META_FILE).is_file():
            raise CheckpointMismatch(f"no training checkpoint in '{path}'")
        header = json.loads((path / _META_FILE).read_text())
        if header.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointMismatch(f"checkpoint '{path}' has format {header.get('format')}, not {CHECKPOINT_FORMAT}")
        states = torch.load(path / _OPTIMIZER_FILE, map_location="cpu", weights_only=True)
        return cls(int(header["steps"]), load_file(str(path / _PARAMETERS_FILE)), states["optimizer"],
                   states["scheduler"], load_file(str(path / _RNG_FILE)), header.get("final_loss"),
                   header.get("meta", {}))


class NonFiniteLoss(FloatingPointError):
    """The loss became NaN or infinite; ``loss`` and the 1-based ``step`` say when."""

    def __init__(self, loss: float, step: int):
        super().__init__(f"loss became {loss} at step {step}")
        self.loss, self.step = loss, step


def adamw(parameters, training: TrainingConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(parameters, lr=training.learning_rate, weight_decay=training.weight_decay)


MAX_WARMUP_STEPS = 10
"""Warm-up never takes more steps than this: half of the shortest step rung (``fidelity.MIN_RUNG_STEPS``). A rung
trains the beginning of the full training's schedule, so a warm-up of 6 % of a long full training would cover a
low rung entirely (its rate still ramping up when it is scored). Adam's own bias correction makes a long warm-up
unneeded for the small updates of PEFT modules."""


def warmup_steps(training: TrainingConfig, total_steps: int) -> int:
    return min(int(training.warmup_ratio * total_steps), MAX_WARMUP_STEPS)


def linear_schedule(optimizer, training: TrainingConfig, total_steps: int):
    """Linear warm-up over ``warmup_ratio`` of the steps (at most :data:`MAX_WARMUP_STEPS`), then linear decay to 0
    at ``total_steps`` (a step rung passes the full training's steps here and stops early: its schedule is the full
    one's beginning)."""
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(optimizer, warmup_steps(training, total_steps), max(total_steps, 1))


def autocast(device: torch.device, training: TrainingConfig):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=training.bf16)


StepListener = Callable[[int, int, float], None]
"""Told ``(step, total_steps, loss)`` as training goes (at most every :data:`STEP_REPORT_SECONDS`, and at the end)."""
_step_listeners: list[StepListener] = []
STEP_REPORT_SECONDS = 0.5


@contextmanager
def listen_to_steps(listener: StepListener) -> Iterator[None]:
    """While inside, ``listener`` hears every training run of this process (rank 0): a progress display's hook
    that needs no plumbing through the search, the backend and the trial runner."""
    _step_listeners.append(listener)
    try:
        yield
    finally:
        _step_listeners.remove(listener)


def _tell_listeners(step: int, total_steps: int, loss: float) -> None:
    for listener in list(_step_listeners):
        try:
            listener(step, total_steps, loss)
        except Exception:  # a display must never fail a trial
            pass


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
    parameters: list[torch.nn.Parameter] | list[dict] | None = None,
    engine=None,
    schedule_steps: int | None = None,
    resume: TrainState | None = None,
) -> TrainingRun:
    """Train ``total_steps`` steps on batches of the examples whose token ``lengths`` are given, epoch after epoch.

    Epoch ``e`` draws its length-grouped batches with seed ``seed + e``; the torch generator is seeded with
    ``seed`` first (dropout, masking). ``parameters`` (default: the model's trainable ones) are what AdamW
    updates and clipping measures (an engine has its own): Parameters, or torch parameter groups
    (``{"params": [...], "lr": rate, ...}``, e.g. one per module type) that AdamW steps at their own rates under
    the one schedule, clipping measuring them all together. With several ranks each takes its contiguous shard
    of every global batch of ``batch_size`` and the model is wrapped in DDP; a DeepSpeed ``engine`` runs forward
    and makes the update itself (its config carries the clipping, the optimizer and the schedule). Raises
    :class:`NonFiniteLoss` before stepping on a NaN or infinite loss.

    The LR schedule spans ``schedule_steps`` (default ``total_steps``). ``resume`` continues a run from its
    :class:`TrainState` (plain torch in one process only): its parameters, optimizer, schedule and RNG are
    restored and the batches it trained are skipped, so training N steps, saving, and resuming to M gives what M
    steps in one go give. It raises :class:`CheckpointMismatch` when the state's parameters are not the trainable
    ones. The returned run's ``state`` (plain torch in one process) is where training stands.
    """
    world, rank = distributed.world_size(), distributed.rank()
    if min(batch_size, len(lengths)) < world:
        raise ValueError(f"a trial over {world} ranks needs batches of at least {world} examples")
    if resume is not None and (engine is not None or world > 1):
        raise ValueError("resuming a training run needs plain torch in one process (not DeepSpeed or several ranks)")
    schedule_steps = schedule_steps or total_steps
    optimizer = scheduler = None
    if engine is None:
        parameters = parameters if parameters is not None else [p for p in model.parameters() if p.requires_grad]
        forward, update, optimizer, scheduler = _torch_update(model, parameters, training, schedule_steps, world)
    else:
        forward = engine

        def update(loss_tensor):
            engine.backward(loss_tensor)
            engine.step()  # clips, steps the optimizer and the schedule, zeroes the gradients
    torch.manual_seed(seed)
    names = _trainable_names(model, optimizer)
    step = examples = 0
    loss_value = None
    if resume is not None:
        _restore(resume, model, names, optimizer, scheduler, device)
        step, loss_value = resume.steps, resume.final_loss
    resumed = step
    every = max(1, math.ceil((total_steps - resumed) / MAX_LOSS_POINTS))  # thinned: the mean loss of each window
    losses: list[tuple[int, float]] = []
    window: list[float] = []
    forward.train()
    start = told = time.perf_counter()
    batches = _batches(lengths, batch_size, seed, world)
    for _ in range(min(resumed, total_steps)):  # the batches the resumed run trained: same order, skipped
        next(batches)
    while step < total_steps:
        batch = next(batches)
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
        window.append(loss_value)
        if (step - resumed) % every == 0 or step == total_steps:
            losses.append((step, sum(window) / len(window)))
            window = []
        if _step_listeners and rank == 0 and (time.perf_counter() - told >= STEP_REPORT_SECONDS
                                              or step == total_steps):
            _tell_listeners(step, total_steps, loss_value)
            told = time.perf_counter()
    state = None
    if optimizer is not None and world == 1:
        state = TrainState(step, {name: p for p, name in names.items()}, optimizer.state_dict(),
                           scheduler.state_dict(), _rng_states(device), loss_value)
    return TrainingRun(step, examples, time.perf_counter() - start, loss_value, resumed, state, tuple(losses))


def _batches(lengths: np.ndarray, batch_size: int, seed: int, world: int) -> Iterator[np.ndarray]:
    """The global batches of the run, epoch after epoch: epoch ``e`` draws its length-grouped batches with seed
    ``seed + e``; an epoch's last batch too short to give every rank an example is left out."""
    epoch = 0
    while True:
        for batch in length_grouped_batches(lengths, batch_size, seed=seed + epoch):
            if len(batch) >= world:
                yield batch
        epoch += 1


def _trainable_names(model: torch.nn.Module, optimizer) -> dict[torch.nn.Parameter, str]:
    """The optimizer's parameters (in its order) with their names in ``model``."""
    if optimizer is None:
        return {}
    by_id = {id(p): name for name, p in model.named_parameters()}
    return {p: by_id.get(id(p), f"unnamed.{i}")
            for i, p in enumerate(p for group in optimizer.param_groups for p in group["params"])}


def _rng_states(device: torch.device) -> dict[str, torch.Tensor]:
    states = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def _restore(state: TrainState, model, names: dict[torch.nn.Parameter, str], optimizer, scheduler,
             device: torch.device) -> None:
    """Load ``state`` into the parameters, optimizer, schedule and RNG; a state of other parameters raises."""
    expected = {name: tuple(p.shape) for p, name in names.items()}
    stored = {name: tuple(t.shape) for name, t in state.parameters.items()}
    if expected != stored:
        missing, extra = sorted(set(expected) - set(stored)), sorted(set(stored) - set(expected))
        shapes = sorted(n for n in set(expected) & set(stored) if expected[n] != stored[n])
        detail = "; ".join(part for part in (
            f"{len(missing)} trainable parameter(s) not in it (e.g. {missing[0]})" if missing else "",
            f"{len(extra)} parameter(s) the model does not train (e.g. {extra[0]})" if extra else "",
            f"other shapes for {len(shapes)} (e.g. {shapes[0]}: {stored[shapes[0]]} vs {expected[shapes[0]]})"
            if shapes else "") if part)
        raise CheckpointMismatch(f"the checkpoint is of another model: {detail}")
    with torch.no_grad():
        for parameter, name in names.items():
            parameter.copy_(state.parameters[name])
    try:
        optimizer.load_state_dict(state.optimizer)
        scheduler.load_state_dict(state.scheduler)
    except (KeyError, ValueError) as exc:
        raise CheckpointMismatch(f"the checkpoint's optimizer state does not fit: {exc}") from None
    torch.set_rng_state(state.rng["cpu"])
    if device.type == "cuda" and "cuda" in state.rng:
        torch.cuda.set_rng_state(state.rng["cuda"], device)


def _torch_update(model, parameters, training: TrainingConfig, schedule_steps: int, world: int):
    """The module to run forward (DDP-wrapped over several ranks), the update that follows a loss, and the
    optimizer and schedule it steps."""
    optimizer = adamw(parameters, training)
    scheduler = linear_schedule(optimizer, training, schedule_steps)
    clipped = [p for group in optimizer.param_groups for p in group["params"]]  # one norm over every group

    def update(loss_tensor):
        loss_tensor.backward()
        if training.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(clipped, training.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return (torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model), update, optimizer, scheduler

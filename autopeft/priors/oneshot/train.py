"""Training a super-adapter (cached on disk like the other priors) and scoring configurations with it.

The super-adapter trains through the trial runner like any trial (same data, batches, schedule, divergence checks,
checkpoints), with one difference: every training forward first draws the configuration it trains
(:meth:`SuperAdapter.train_sampling`). Each module type trains in its own parameter group at the rate of its
largest size (:func:`autopeft.builders.parameter_groups_for` of the largest configuration): the rates fall with size
(:meth:`autopeft.modules.ModuleType.default_rate`), and the largest configuration is the one a too-high rate would
collapse, while every smaller one is a slice of the same weights.

A one-shot score is the trial runner's evaluation of the activated configuration on the same validation examples a
trial at that fidelity is scored on: no training.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from autopeft.builders import parameter_groups_for
from autopeft.errors import AutopeftError
from autopeft.priors.cache import atomic_folder, cached_path, read_entry
from autopeft.priors.oneshot.supernet import SuperAdapter
from autopeft.priors.sensitivity import model_signature
from autopeft.space import SearchSpace
from autopeft.space.point import PeftPoint
from autopeft.trial.fidelity import Fidelity
from autopeft.trial.loop import TrainingConfig
from autopeft.trial.runner import TrialRunner

ONESHOT_VERSION = 1     # bump when what a cached super-adapter holds changes
WEIGHTS_FILE = "super_adapter.safetensors"
META_FILE = "meta.json"


@dataclass
class OneShot:
    """A trained super-adapter, ready to score configurations of its space."""

    super_adapter: SuperAdapter
    runner: TrialRunner
    fidelity: Fidelity                      # the training's (its eval examples are what scores use)
    training: TrainingConfig
    meta: dict = field(default_factory=dict)  # how it trained: steps, seconds, its largest configuration's metrics
    cached: bool = False
    folder: Path | None = None              # its cache entry (load_or_train_super_adapter), which trials inherit from

    @property
    def metric(self) -> str:
        return self.runner.task.spec.metric

    @property
    def higher_is_better(self) -> bool:
        from autopeft.data.metrics import is_higher_better

        return is_higher_better(self.metric)

    def score(self, point: PeftPoint, fidelity: Fidelity | None = None) -> dict[str, float]:
        """``point``'s validation metrics as a slice of the super-adapter (modules it leaves out are off)."""
        self.super_adapter.pin(point)
        try:
            return self.runner.evaluate(self.super_adapter.model, fidelity or self.fidelity, self.training)
        finally:
            self.super_adapter.pin(None)


def _space_key(space: SearchSpace) -> dict:
    return {"spec": space.spec.model_dump(mode="json"), "layers": space.layers, "grids": space.grids}


def train_super_adapter(runner: TrialRunner, space: SearchSpace, fidelity: Fidelity,
                        training: TrainingConfig = TrainingConfig(), seed: int = 0, *,
                        learning_rate: float | None = None, resume_from: str | Path | None = None,
                        checkpoint_to: str | Path | None = None) -> OneShot:
    """Train the super-adapter of ``space`` at ``fidelity`` (``resume_from`` / ``checkpoint_to`` as for a trial: a
    longer training continues a shorter one's checkpoint; ``learning_rate``: one rate for everything, as ``--lr``).
    Raises AutopeftError when it does not train."""
    super_adapter = SuperAdapter(space, runner.base.kind)

    def factory(model: torch.nn.Module) -> torch.nn.Module:
        built = super_adapter.build(model)
        super_adapter.train_sampling(True)
        return built

    result = runner.run(factory, fidelity, seed, training,
                        parameter_groups=parameter_groups_for(super_adapter.largest, learning_rate),
                        resume_from=resume_from, checkpoint_to=checkpoint_to)
    if not result.ok or super_adapter.model is None:
        raise AutopeftError(f"the super-adapter did not train: {result.reason or result.status}")
    super_adapter.train_sampling(False)
    super_adapter.model.eval()
    meta = {"seed": seed, "steps": result.steps, "train_seconds": result.train_seconds,
            "wall_seconds": result.wall_seconds, "train_examples": result.train_examples,
            "largest_metrics": result.metrics, "trainable_params": result.trainable_params,
            "largest": super_adapter.largest.describe(), "smallest": super_adapter.smallest.describe(),
            "left_out": super_adapter.left_out}
    return OneShot(super_adapter, runner, fidelity, training, meta)


def save_super_adapter(oneshot: OneShot, folder: str | Path) -> None:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.contiguous().cpu() for name, tensor in oneshot.super_adapter.trainable_state().items()}
    save_file(state, str(folder / WEIGHTS_FILE))
    (folder / META_FILE).write_text(json.dumps(oneshot.meta, indent=2, default=str))


def load_super_adapter(runner: TrialRunner, space: SearchSpace, folder: str | Path, fidelity: Fidelity,
                       training: TrainingConfig = TrainingConfig()) -> OneShot:
    """A saved super-adapter of ``space`` (safetensors; its trainable tensors must be exactly the space's)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    meta = json.loads((folder / META_FILE).read_text())
    super_adapter = SuperAdapter(space, runner.base.kind)
    model = super_adapter.build(runner.base.fresh_copy(int(meta["seed"])))
    saved = load_file(str(folder / WEIGHTS_FILE))
    own = dict(model.named_parameters())
    trainable = {name for name, p in own.items() if p.requires_grad}
    if set(saved) != trainable:
        raise ValueError(f"'{folder}' holds other tensors than this space's super-adapter "
                         f"({len(set(saved) ^ trainable)} differ)")
    with torch.no_grad():
        for name, tensor in saved.items():
            own[name].copy_(tensor)
    model.to(runner.device).eval()
    return OneShot(super_adapter, runner, fidelity, training, meta)


def load_or_train_super_adapter(runner: TrialRunner, space: SearchSpace, fidelity: Fidelity,
                                training: TrainingConfig = TrainingConfig(), seed: int = 0, *,
                                learning_rate: float | None = None) -> OneShot:
    """The cached super-adapter for (model, task, space, fidelity, training, rate, seed), else a new one, cached."""
    folder = cached_path("super_adapter", version=ONESHOT_VERSION, model=model_signature(runner.base),
                         task=runner.task.fingerprint, space=_space_key(space), fidelity=fidelity.to_dict(),
                         training=training.to_dict(), learning_rate=learning_rate, seed=seed)
    loaded = read_entry(folder, lambda f: load_super_adapter(runner, space, f, fidelity, training))
    if loaded is not None:
        loaded.cached, loaded.folder = True, folder
        return loaded
    start = time.perf_counter()
    oneshot = train_super_adapter(runner, space, fidelity, training, seed, learning_rate=learning_rate)
    oneshot.meta["total_seconds"] = time.perf_counter() - start
    with atomic_folder(folder) as staging:
        save_super_adapter(oneshot, staging)
    oneshot.folder = folder
    return oneshot

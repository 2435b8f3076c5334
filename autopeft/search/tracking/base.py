"""The one interface every experiment tracker implements, what it is given of a trial, and the tracker registry.

A tracker logs each trial of a search where users already look (an MLflow store, a Weights & Biases project): one
run per trial, with its point and hyperparameters as params, its objectives and metrics, and its training loss per
step. Trackers are optional dependencies, imported only when chosen (``--tracking mlflow,wandb``); the search
never logs a storage URL or any other credential to them, and a tracker that fails stops with a note while the
search goes on.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from autopeft._imports import require_installed
from autopeft.errors import AutopeftError
from autopeft.redact import mask_text, mask_values
from autopeft.search import records as R
from autopeft.search.records import TrialRecord
from autopeft.trial.result import TrialResult

LOSS = "train_loss"   # the per-step series of a trial (a final trial: one per seed, "train_loss_seed_<seed>")


@dataclass(frozen=True)
class TrackingContext:
    """What a tracker knows of the search: where to write, and what names its runs."""

    run_dir: Path
    study_name: str
    uri: str | None = None                                # --tracking-uri (MLflow's); None: a store in run_dir
    tags: dict[str, str] = field(default_factory=dict)    # search-wide facts on every run (masked: no credentials)


@dataclass(frozen=True)
class TrackedTrial:
    """One trial as a tracker logs it (:func:`tracked_trial`)."""

    name: str                                  # "<study>/rung-0#3"
    stage: str                                 # rung-<k> | final
    number: int
    state: str                                 # complete | fail | pruned
    params: dict[str, Any]                     # hyperparameters (the Optuna params) and what the point is
    metrics: dict[str, float]                  # objectives, validation and test metrics, costs
    losses: dict[str, list[tuple[int, float]]] = field(default_factory=dict)   # series -> (step, loss)
    tags: dict[str, str] = field(default_factory=dict)


def _finite(values: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def tracked_trial(study_name: str, record: TrialRecord, results: Sequence[TrialResult],
                  seeds: Sequence[int] = ()) -> TrackedTrial:
    """A told trial (``record``) and what training it gave: one result (a search trial) or one per seed (a final
    trial, ``seeds`` naming them). Params are the point's Optuna params plus its description, origin and size;
    metrics the objectives (as told: a final trial's mean over its seeds), validation metrics (``val_``), test
    metrics (``test_``) and costs."""
    attrs = record.attrs
    params: dict[str, Any] = dict(record.params)
    params.update({"description": attrs.get(R.DESCRIPTION, ""), "origin": record.origin,
                   "adapter_params": attrs.get(R.ADAPTER_PARAMS)})
    metrics = _finite(record.values or {})
    result = results[0] if len(results) == 1 else None
    if result is not None:
        metrics.update({f"val_{k}": v for k, v in _finite(result.metrics).items()})
        metrics.update({f"test_{k}": v for k, v in _finite(result.test_metrics).items()})
        metrics.update(_finite({"steps": result.steps, "train_seconds": result.train_seconds,
                                "wall_seconds": result.wall_seconds, "peak_memory_mb": result.peak_memory_mb,
                                "final_train_loss": result.final_train_loss}))
    metrics.update({f"test_{k}": v for k, v in _finite(attrs.get(R.TEST_METRICS) or {}).items()})
    if result is not None:
        losses = {LOSS: [(int(s), float(v)) for s, v in result.train_losses]}
    else:
        losses = {f"{LOSS}_seed_{seed}": [(int(s), float(v)) for s, v in r.train_losses]
                  for seed, r in zip(seeds, results)}
    tags = {"study": study_name, "stage": record.stage, "origin": record.origin, "state": record.state,
            "status": str(attrs.get(R.STATUS, ""))}
    if attrs.get(R.REASON):
        tags["reason"] = mask_text(str(attrs[R.REASON]))[:500]
    return TrackedTrial(f"{study_name}/{record.label}", record.stage, record.number, record.state,
                        params={k: v for k, v in params.items() if v is not None}, metrics=metrics,
                        losses={k: v for k, v in losses.items() if v}, tags=tags)


_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-/ ]")


def safe_key(name: str) -> str:
    """A param or metric name both MLflow and W&B accept (letters, digits, ``_ - . / space``)."""
    return _UNSAFE.sub("_", str(name))


class Tracker(ABC):
    """Logs trials to one tracking backend. ``name`` is what ``--tracking`` takes, ``package`` the import that
    backs it (its extra is in :data:`autopeft._imports.EXTRAS`)."""

    name: ClassVar[str] = ""
    package: ClassVar[str] = ""
    description: ClassVar[str] = ""    # the backend's name in notes: "MLflow"

    def __init__(self, context: TrackingContext):
        self.context = context

    @abstractmethod
    def log_trial(self, trial: TrackedTrial) -> None:
        """One run for the trial: params, final metrics, the loss series; finished before returning."""

    def where(self) -> str:
        """Where the runs go, as a note shows it (no credentials)."""
        return str(self.context.run_dir)

    def close(self) -> None:  # noqa: B027  (optional: most trackers finish each run as they log it)
        """Flush and release what the tracker holds (called once, at the end of the search)."""


TRACKERS: dict[str, type[Tracker]] = {}


def register(cls: type[Tracker]) -> type[Tracker]:
    """Class decorator: make a tracker available by its ``name``."""
    if not cls.name or not cls.package:
        raise ValueError(f"{cls.__name__} needs a name and a package")
    TRACKERS[cls.name] = cls
    return cls


def get_tracker(name: str) -> type[Tracker]:
    key = str(name).strip().lower()
    if key not in TRACKERS:
        raise AutopeftError(f"unknown tracker '{name}' (choose from: {', '.join(TRACKERS)})")
    return TRACKERS[key]


def check_trackers(names: Iterable[str]) -> None:
    """Every tracker named is known and its package installed (checked without importing it)."""
    for name in names:
        tracker = get_tracker(name)
        require_installed(tracker.package, f"--tracking {tracker.name}")


def create_trackers(names: Iterable[str], context: TrackingContext) -> list[Tracker]:
    """The trackers named, opened on ``context`` (a store that cannot be opened is an AutopeftError)."""
    trackers = []
    for name in dict.fromkeys(str(n).strip().lower() for n in names):
        cls = get_tracker(name)
        try:
            trackers.append(cls(context))
        except AutopeftError:
            raise
        except Exception as exc:  # a bad URI or an unreachable server: the message may hold the URI
            detail = mask_text(str(exc).splitlines()[0]) if str(exc) else type(exc).__name__
            raise AutopeftError(f"--tracking {name}: cannot open its store: {detail}") from None
    return trackers


def context_tags(settings: dict[str, Any], sampler: str) -> dict[str, str]:
    """The search-wide facts every run carries, from the public settings (masked again: never a credential)."""
    tags = {key: settings.get(key) for key in ("model", "dataset", "space", "seed")}
    tags["sampler"] = sampler
    return {k: str(v) for k, v in mask_values(tags).items() if v is not None}


class Tracking:
    """The search's trackers together: each trial goes to every one; one that fails is dropped with a note."""

    def __init__(self, trackers: Sequence[Tracker], note: Callable[[str], None]):
        self.trackers = list(trackers)
        self.note = note

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def log(self, study_name: str, record: TrialRecord, results: Sequence[TrialResult],
            seeds: Sequence[int] = ()) -> None:
        if not self.trackers:
            return
        trial = tracked_trial(study_name, record, results, seeds)
        for tracker in list(self.trackers):
            try:
                tracker.log_trial(trial)
            except Exception as exc:  # tracking never ends a search
                self.trackers.remove(tracker)
                detail = mask_text(str(exc).splitlines()[0]) if str(exc) else type(exc).__name__
                self.note(f"tracking with {tracker.name} stopped ({type(exc).__name__}: {detail[:300]}); "
                          "the search goes on without it")

    def close(self) -> None:
        for tracker in self.trackers:
            try:
                tracker.close()
            except Exception:  # closing must not hide the search's outcome
                pass
        self.trackers = []

"""What a backend runs (a :class:`TrialJob`) and the two ways it is asked to run them.

The search hands out jobs one at a time (:class:`JobSource`) and a backend decides where and how
many at once they train; the final stage hands over a fixed list (:meth:`Backend.run_all`).
Backends know nothing of samplers, rungs or storages.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Union

from autopeft.space import PeftPoint
from autopeft.trial.fidelity import Fidelity
from autopeft.trial.result import TrialResult


@dataclass(frozen=True)
class TrialJob:
    id: str                        # unique within a search, e.g. "rung-0-12" or "final-3-seed-1"
    point: PeftPoint
    fidelity: Fidelity
    seed: int
    evaluate_test: bool = False
    save_adapter: bool = False     # the trained adapter is wanted (final stage)
    resume_from: str | None = None   # a training checkpoint to continue (a lower step rung of the same point)
    checkpoint_to: str | None = None  # where the trial's training checkpoint goes (the driver's disk)

    def checkpoint_kwargs(self, evaluator=None) -> dict[str, str]:
        """The evaluator's checkpoint arguments: only those set, and none for an ``evaluator`` whose signature
        takes none (a plain callable of the older signature): it trains from scratch and leaves no checkpoint."""
        if evaluator is not None and not takes_checkpoints(evaluator):
            return {}
        return {k: v for k, v in (("resume_from", self.resume_from), ("checkpoint_to", self.checkpoint_to)) if v}


def takes_checkpoints(evaluator) -> bool:
    import inspect

    try:
        parameters = inspect.signature(evaluator).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.kind is p.VAR_KEYWORD or p.name == "checkpoint_to" for p in parameters)


class Finished:
    """Returned by :meth:`JobSource.next_job` when the search needs no more trials."""


FINISHED = Finished()

NextJob = Union[TrialJob, None, Finished]   # None: nothing to start until a running job finishes


class JobSource(Protocol):
    def next_job(self) -> NextJob: ...
    def finish_job(self, job_id: str, result: TrialResult) -> None: ...
    def abandon_jobs(self) -> None:
        """The backend stopped (Ctrl-C, lost cluster) with jobs running: record them as interrupted."""


class Evaluator(Protocol):
    """Trains one point at one fidelity and seed; a failing trial is a result, not an exception."""

    def __call__(self, point: PeftPoint, fidelity: Fidelity, seed: int, *, evaluate_test: bool = False,
                 save_dir: Path | None = None, resume_from: str | None = None,
                 checkpoint_to: str | None = None) -> TrialResult:
        """``resume_from``/``checkpoint_to``: see :meth:`autopeft.trial.TrialRunner.run`. Backends pass them only
        when the job has them, so an evaluator that keeps no checkpoints may leave them out."""


class EvaluatorFactory(Protocol):
    """Builds the evaluator inside the process that runs the trials (a Ray worker): picklable, called once
    per process; ``cache_key`` names what it builds, so a worker reuses the evaluator across trials."""

    @property
    def cache_key(self) -> str: ...

    def __call__(self) -> Evaluator: ...


class Backend(abc.ABC):
    """Where trials run. ``max_concurrent`` jobs may be running at once."""

    name: str = "backend"
    max_concurrent: int = 1

    @abc.abstractmethod
    def drive(self, source: JobSource) -> None:
        """Run the source's jobs until it returns FINISHED and nothing is running."""

    @abc.abstractmethod
    def run_all(self, jobs: list[TrialJob], adapter_root: Path,
                on_result: Callable[[TrialJob, TrialResult], None] | None = None) -> dict[str, TrialResult]:
        """Run a fixed list of jobs; a job with ``save_adapter`` leaves its adapter in ``adapter_root/<job.id>``.

        ``on_result(job, result)`` is called for each job once its result (and adapter) is in place, so the
        caller can store it before the next one ends: an interrupted list keeps what finished."""

    def close(self) -> None:  # noqa: B027  (a hook: a backend that starts nothing has nothing to release)
        """Release what the backend started (a local Ray instance)."""

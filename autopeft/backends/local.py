"""Trials one after another in this process: a trial already uses every core of the machine."""

from __future__ import annotations

from pathlib import Path

from autopeft.backends.base import FINISHED, Backend, Evaluator, JobSource, TrialJob
from autopeft.errors import AutopeftError
from autopeft.trial.result import TrialResult


class LocalBackend(Backend):
    name = "local"
    max_concurrent = 1

    def __init__(self, evaluator: Evaluator):
        self.evaluator = evaluator

    def _run(self, job: TrialJob, save_dir: Path | None) -> TrialResult:
        return self.evaluator(job.point, job.fidelity, job.seed, evaluate_test=job.evaluate_test, save_dir=save_dir,
                              **job.checkpoint_kwargs(self.evaluator))

    def drive(self, source: JobSource) -> None:
        while True:
            job = source.next_job()
            if job is FINISHED:
                return
            if job is None:  # only possible with a job running, and here none ever is
                raise AutopeftError("internal error: the search waited on a running trial in the local backend")
            try:
                result = self._run(job, None)
            except BaseException:  # Ctrl-C or a crash: the running trial is recorded, then the search stops
                source.abandon_jobs()
                raise
            source.finish_job(job.id, result)

    def run_all(self, jobs: list[TrialJob], adapter_root: Path, on_result=None) -> dict[str, TrialResult]:
        results = {}
        for job in jobs:
            results[job.id] = self._run(job, adapter_root / job.id if job.save_adapter else None)
            if on_result is not None:
                on_result(job, results[job.id])
        return results

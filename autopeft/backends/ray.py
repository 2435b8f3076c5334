"""Trials on a Ray cluster, run by Ray Tune.

The search engine stays the driver's: a Tune :class:`~ray.tune.search.Searcher` asks it for the
next job whenever Tune has a free slot and tells it each result, so samplers, MO-ASHA, the Optuna
storage and resuming behave exactly as with the local backend. Tune places the trials, restarts a
trial whose worker died (``FailureConfig``) and, for ``workers_per_trial > 1``, each trial trains
data-parallel on a Ray Train ``TorchTrainer``. A trial that fails for its own reasons (NaN loss,
an unbuildable point) reports that status and is not retried.

Each worker process builds the evaluator (model, tokenised task) once from a picklable factory and
reuses it for every trial it runs (``reuse_actors``). Adapters of the final stage and the training
checkpoints of step rungs come back as Tune checkpoints, so they reach the driver from any node
(``storage_path`` must then be shared); the driver copies each into place (``save_dir``, the job's
``checkpoint_to``) before the engine is told the result. A checkpoint a trial continues travels the
other way through ``storage_path``: the driver stages a copy there and the worker reads it, so on a
multi-node cluster ``storage_path`` must be a folder every node mounts (a cloud URI is not staged:
its workers must then see the driver's run folder). Data-parallel trials (``workers_per_trial > 1``)
neither continue nor write training checkpoints: they train from scratch, as the result's
``resume_note`` says.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from autopeft._imports import optional_dependency
from autopeft.backends.base import FINISHED, Backend, Evaluator, EvaluatorFactory, JobSource, TrialJob
from autopeft.errors import AutopeftError
from autopeft.redact import mask_url
from autopeft.trial.result import ERROR, TrialResult

RESULT_KEY = "autopeft_result"        # the TrialResult, as JSON (Tune flattens nested dicts)
NODE_KEY = "autopeft_node_id"         # the Ray node that ran the trial (node_ip cannot tell apart nodes of one host)
RESULT_FILE = "autopeft_result.json"
ADAPTER_DIR, TRAINING_DIR = "adapter", "training"   # in a trial's Tune checkpoint


def import_ray():
    with optional_dependency("ray", "--backend ray"):
        import ray
        from ray import tune  # noqa: F401  (Tune and Train are extras of the ray package)
    return ray


@dataclass(frozen=True)
class RayOptions:
    address: str = "local"              # local: start Ray in this process; auto or host:port / ray://...: join
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    workers_per_trial: int = 1          # > 1: data-parallel trials on Ray Train (resources are per worker)
    max_concurrent: int | None = None   # None: as many as the cluster's resources allow
    max_failures: int = 1               # restarts of a trial whose worker died
    storage_path: str | None = None     # Tune's trial folders and checkpoints; shared disk or cloud for multi-node

    def __post_init__(self):
        if self.cpus_per_trial <= 0:
            raise AutopeftError("--cpus-per-trial must be positive")
        if self.gpus_per_trial < 0:
            raise AutopeftError("--gpus-per-trial must be >= 0")
        if self.workers_per_trial < 1:
            raise AutopeftError("--workers-per-trial must be at least 1")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise AutopeftError("--max-concurrent must be at least 1")
        if self.max_failures < 0:
            raise AutopeftError("--trial-retries must be >= 0")


# ------------------------------------------------------------------ worker side
_EVALUATORS: dict[str, Evaluator] = {}


def _evaluator(factory: EvaluatorFactory) -> Evaluator:
    key = factory.cache_key
    if key not in _EVALUATORS:
        _EVALUATORS.clear()  # one search per worker process at a time: free the previous model
        _EVALUATORS[key] = factory()
    return _EVALUATORS[key]


def _run_job(job: TrialJob, factory: EvaluatorFactory, save_dir: Path | None,
             checkpoint_to: Path | None = None) -> TrialResult:
    """The job on this worker; its training checkpoint goes to ``checkpoint_to`` (a folder of the trial's report),
    never to the driver's path in the job."""
    evaluator = _evaluator(factory)
    kwargs = replace(job, checkpoint_to=str(checkpoint_to) if checkpoint_to else None).checkpoint_kwargs(evaluator)
    return evaluator(job.point, job.fidelity, job.seed, evaluate_test=job.evaluate_test, save_dir=save_dir, **kwargs)


def _data_parallel_worker(config: dict[str, Any]) -> None:
    """One rank of a data-parallel trial; the runner sees torch.distributed set up by Ray Train."""
    import ray.train

    job: TrialJob = config["job"]
    with tempfile.TemporaryDirectory() as tmp:
        save_dir = Path(tmp) / "adapter" if job.save_adapter else None  # every rank: ZeRO-3 saving is collective
        # with several ranks the runner neither continues nor writes a checkpoint (resume_note says so)
        result = _run_job(job, config["factory"], save_dir, Path(tmp) / "unused" if job.checkpoint_to else None)
        checkpoint = None
        if ray.train.get_context().get_world_rank() == 0:
            # Ray Train keeps only metrics that come with a checkpoint: the result travels inside it
            (Path(tmp) / RESULT_FILE).write_text(json.dumps(result.to_dict()))
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report({}, checkpoint=checkpoint)


def _train_data_parallel(job: TrialJob, factory: EvaluatorFactory, options: RayOptions, storage_path: str,
                         save_dir: Path) -> TrialResult:
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    resources = {"CPU": options.cpus_per_trial}
    if options.gpus_per_trial:
        resources["GPU"] = options.gpus_per_trial
    trainer = TorchTrainer(
        _data_parallel_worker,
        train_loop_config={"job": job, "factory": factory},
        scaling_config=ScalingConfig(num_workers=options.workers_per_trial, use_gpu=options.gpus_per_trial > 0,
                                     resources_per_worker=resources),
        run_config=RunConfig(name=f"{job.id}-{time.time_ns()}", storage_path=storage_path,
                             failure_config=FailureConfig(max_failures=0)),  # Tune retries the whole trial
    )
    outcome = trainer.fit()
    if outcome.checkpoint is None:
        return TrialResult(status=ERROR, reason="error: the data-parallel workers reported no result")
    with tempfile.TemporaryDirectory() as tmp:
        outcome.checkpoint.to_directory(tmp)
        if (Path(tmp) / "adapter").is_dir():
            shutil.copytree(Path(tmp) / "adapter", save_dir)
        return TrialResult(**json.loads((Path(tmp) / RESULT_FILE).read_text()))


def run_trial(config: dict[str, Any], factory: EvaluatorFactory, options: RayOptions, storage_path: str) -> None:
    """The Tune trainable: one job, reported once (with the adapter as a checkpoint when asked)."""
    import ray
    from ray import tune

    job: TrialJob = config["job"]
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report"
        save_dir = report / ADAPTER_DIR if job.save_adapter else None
        if options.workers_per_trial > 1:
            result = _train_data_parallel(job, factory, options, storage_path, save_dir or Path(tmp) / "unused")
        else:
            result = _run_job(job, factory, save_dir, report / TRAINING_DIR if job.checkpoint_to else None)
        checkpoint = None
        if report.is_dir() and any(report.iterdir()):
            checkpoint = tune.Checkpoint.from_directory(str(report))
        # the node id lands in Tune's result.json next to node_ip/hostname/pid; the TrialResult (and so the Optuna
        # record) stays the same as the local backend's
        tune.report({RESULT_KEY: json.dumps(result.to_dict()), NODE_KEY: ray.get_runtime_context().get_node_id()},
                    checkpoint=checkpoint)


# ------------------------------------------------------------------ driver side
def _stage_resume(job: TrialJob, storage_path: str) -> TrialJob:
    """The job with its resume checkpoint copied under ``storage_path`` (the folder workers of every node see);
    a checkpoint that is gone is no checkpoint (the trial trains from scratch)."""
    if not job.resume_from:
        return job
    if not Path(job.resume_from).is_dir():
        return replace(job, resume_from=None)
    if "://" in storage_path:  # cloud storage: not a folder to copy into; the workers read the driver's path
        return job
    staged = Path(storage_path) / "resume" / f"{job.id}-{time.time_ns()}"
    shutil.copytree(job.resume_from, staged)
    return replace(job, resume_from=str(staged))


def _unstage_resume(job: TrialJob, storage_path: str) -> None:
    if job.resume_from and Path(job.resume_from).parent == Path(storage_path) / "resume":
        shutil.rmtree(job.resume_from, ignore_errors=True)


def _collect(job: TrialJob, checkpoint, adapter_root: Path | None = None) -> None:
    """Copy what a trial's Tune checkpoint brought back into place: its training checkpoint to ``checkpoint_to``
    (all or nothing) and, when asked for, its adapter to ``adapter_root/<job.id>``."""
    from autopeft.atomic import write_dir

    if checkpoint is None:
        return
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint.to_directory(tmp)
        if job.checkpoint_to and (Path(tmp) / TRAINING_DIR).is_dir():
            write_dir(job.checkpoint_to, lambda folder: shutil.copytree(Path(tmp) / TRAINING_DIR, folder,
                                                                        dirs_exist_ok=True))
        if adapter_root is not None and job.save_adapter and (Path(tmp) / ADAPTER_DIR).is_dir():
            shutil.copytree(Path(tmp) / ADAPTER_DIR, adapter_root / job.id, dirs_exist_ok=True)


def _checkpoint_collector():
    """A Tune callback that copies each search trial's training checkpoint to its ``checkpoint_to`` as it arrives:
    Tune reports a checkpoint before it tells the searcher the trial completed, so the checkpoint is in place by
    the time the engine can promote the point."""
    from ray.tune import Callback

    class CheckpointCollector(Callback):
        def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
            _collect(trial.config["job"], checkpoint)

    return CheckpointCollector()


def _result_of(metrics: dict[str, Any] | None, error: Any = None) -> TrialResult:
    if metrics and RESULT_KEY in metrics:
        return TrialResult(**json.loads(metrics[RESULT_KEY]))
    detail = str(error).strip().splitlines()[-1] if error else "the trial reported no result"
    return TrialResult(status=ERROR, reason=f"error: the Ray trial failed (worker lost or crashed, after retries): "
                                            f"{mask_url(detail)[:300]}")


def _engine_searcher(source: JobSource, storage_path: str):
    """A Tune Searcher over the engine (built lazily: Ray is an optional dependency)."""
    from ray.tune.search import Searcher

    class EngineSearcher(Searcher):
        def __init__(self, source: JobSource, storage_path: str):  # arguments, not closures: cloudpickle would
            super().__init__()                                      # take them along
            self.source = source
            self.storage_path = storage_path
            self.jobs: dict[str, TrialJob] = {}   # Tune trial id -> job (as staged)

        def __getstate__(self):
            # Tune pickles its experiment state; the engine (storage, progress display) stays in this process,
            # and a search resumes from its Optuna storage, not from Tune's state
            return {k: v for k, v in self.__dict__.items() if k != "source"}

        def suggest(self, trial_id: str):
            job = self.source.next_job()
            if job is FINISHED:
                return Searcher.FINISHED
            if job is None:
                return None
            job = _stage_resume(job, self.storage_path)
            self.jobs[trial_id] = job
            return {"job": job}

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            job = self.jobs.pop(trial_id, None)
            if job is not None:
                _unstage_resume(job, self.storage_path)
                self.source.finish_job(job.id, _result_of(None if error else result))

        @property
        def running(self) -> int:
            return len(self.jobs)

        def save(self, checkpoint_path: str) -> None:
            pass

        def restore(self, checkpoint_path: str) -> None:
            pass

    return EngineSearcher(source, storage_path)


class RayBackend(Backend):
    name = "ray"

    def __init__(self, factory: EvaluatorFactory, options: RayOptions, run_dir: Path):
        self.factory = factory
        self.options = options
        self.storage_path = options.storage_path or str((Path(run_dir) / "ray").resolve())
        self._connected_here = False
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no Tune tables among our progress lines
        self._connect()

    # ------------------------------------------------------------ cluster
    def _connect(self) -> None:
        ray = import_ray()
        if ray.is_initialized():
            return
        address = self.options.address
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING, configure_logging=False)
        except Exception as exc:  # ConnectionError, ValueError, ...; messages may echo the address
            message = mask_url(str(exc).strip().splitlines()[0]) if str(exc).strip() else type(exc).__name__
            if address != "local" and "RAY_AUTH_MODE" not in os.environ:
                message += (" (a cluster with token authentication also needs RAY_AUTH_MODE=token and its token in "
                            "RAY_AUTH_TOKEN or ~/.ray/auth_token)")
            raise AutopeftError(f"cannot reach Ray at '{mask_url(address)}': {message}") from None
        self._connected_here = True

    def close(self) -> None:
        """Disconnect (and stop a Ray started by ``address=local``) unless the caller had connected already."""
        if self._connected_here:
            import ray

            ray.shutdown()
            self._connected_here = False

    @property
    def max_concurrent(self) -> int:  # type: ignore[override]
        import ray

        if self.options.max_concurrent is not None:
            return self.options.max_concurrent
        cpus = ray.cluster_resources().get("CPU", 1)
        return max(1, int(cpus // (self.options.cpus_per_trial * self.options.workers_per_trial)))

    # ------------------------------------------------------------ Tune
    def _trainable(self):
        from ray import tune

        if self.options.workers_per_trial > 1:
            # the Tune trial only drives the TorchTrainer, whose workers hold the CPUs/GPUs; Tune refuses an
            # empty request, so the driver reserves a little memory instead of a CPU the workers would miss
            resources = {"cpu": 0, "memory": 256 * 2**20}
        else:
            resources = {"cpu": self.options.cpus_per_trial, "gpu": self.options.gpus_per_trial}
        trainable = tune.with_parameters(run_trial, factory=self.factory, options=self.options,
                                         storage_path=self.storage_path)
        return tune.with_resources(trainable, resources)

    def _tuner(self, name: str, search_alg=None, param_space=None, callbacks=None):
        from ray import tune

        return tune.Tuner(
            self._trainable(),
            param_space=param_space,
            tune_config=tune.TuneConfig(search_alg=search_alg, num_samples=-1 if search_alg else 1,
                                        max_concurrent_trials=self.max_concurrent, reuse_actors=True),
            run_config=tune.RunConfig(name=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 10**6}",
                                      storage_path=self.storage_path, verbose=0, callbacks=callbacks,
                                      failure_config=tune.FailureConfig(max_failures=self.options.max_failures)),
        )

    def drive(self, source: JobSource) -> None:
        searcher = _engine_searcher(source, self.storage_path)
        try:
            self._tuner("search", search_alg=searcher, callbacks=[_checkpoint_collector()]).fit()
        except BaseException:
            source.abandon_jobs()
            raise
        if searcher.running:  # Tune stopped early (Ctrl-C, lost cluster): what ran is stored, the rest resumes
            source.abandon_jobs()
            raise AutopeftError(f"Ray Tune stopped with {searcher.running} trial(s) unfinished; they are recorded as "
                                "interrupted and running the same command again resumes the search")

    def run_all(self, jobs: list[TrialJob], adapter_root: Path, on_result=None) -> dict[str, TrialResult]:
        """The jobs as one Tune grid; ``on_result`` is called for each once the grid has run (Tune returns
        the results together)."""
        from ray import tune

        if not jobs:
            return {}
        staged = [_stage_resume(job, self.storage_path) for job in jobs]
        try:
            grid = self._tuner("final", param_space={"job": tune.grid_search(staged)}).fit()
        finally:
            for job in staged:
                _unstage_resume(job, self.storage_path)
        results: dict[str, TrialResult] = {}
        for outcome in grid:
            job: TrialJob = outcome.config["job"]
            results[job.id] = _result_of(outcome.metrics, outcome.error)
            if results[job.id].ok:
                _collect(job, outcome.checkpoint, adapter_root)
            if on_result is not None:
                on_result(job, results[job.id])
        missing = [job.id for job in jobs if job.id not in results]
        if missing:
            raise AutopeftError(f"Ray Tune returned no result for {len(missing)} final-stage trial(s)")
        return results

"""``mlflow``: one MLflow run per trial, in an experiment named after the study.

The store is ``--tracking-uri`` (any MLflow tracking URI: a database, a tracking server), by default a SQLite file
in the run folder (``RUN/mlflow.db``; MLflow 3 keeps its ``./mlruns`` file store in maintenance mode), which
``mlflow ui --backend-store-uri sqlite:///RUN/mlflow.db`` shows. Works with ``mlflow-skinny`` (the ``[mlflow]``
extra): its SQLite store uses SQLAlchemy and Alembic, which Optuna installs.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from autopeft._imports import optional_dependency
from autopeft.redact import mask_url
from autopeft.search.tracking.base import TrackedTrial, Tracker, TrackingContext, register, safe_key

DEFAULT_DB = "mlflow.db"
MAX_PARAM_CHARS = 500      # MLflow refuses longer param values (6,000 in MLflow 3; 500 in older stores)
PARAMS_PER_BATCH, METRICS_PER_BATCH = 100, 1000   # MLflow's log_batch limits


def default_uri(run_dir: Path) -> str:
    return f"sqlite:///{(Path(run_dir) / DEFAULT_DB).resolve()}"


@register
class MlflowTracker(Tracker):
    name = "mlflow"
    package = "mlflow"
    description = "MLflow"

    def __init__(self, context: TrackingContext):
        super().__init__(context)
        with optional_dependency("mlflow", "--tracking mlflow"):
            from mlflow.exceptions import MlflowException
            from mlflow.tracking import MlflowClient
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating initial MLflow database..."
        self.uri = context.uri or default_uri(context.run_dir)
        if context.uri is None:
            Path(context.run_dir).mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=self.uri)
        self.experiment_id = self._experiment(MlflowException)

    def _experiment(self, mlflow_exception) -> str:
        name = self.context.study_name
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        artifacts = (Path(self.context.run_dir) / "mlartifacts").resolve().as_uri() if self.context.uri is None \
            else None
        try:
            return self.client.create_experiment(name, artifact_location=artifacts)
        except mlflow_exception:  # another worker of this search created it first
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def where(self) -> str:
        return mask_url(self.uri)

    def log_trial(self, trial: TrackedTrial) -> None:
        from mlflow.entities import Metric, Param

        tags = {f"autopeft.{key}": value for key, value in {**self.context.tags, **trial.tags}.items()}
        tags["mlflow.note.content"] = str(trial.params.get("description", ""))   # the run's description in the UI
        run = self.client.create_run(self.experiment_id, run_name=trial.name, tags=tags)
        run_id = run.info.run_id
        now = int(time.time() * 1000)
        params = [Param(safe_key(k), str(v)[:MAX_PARAM_CHARS]) for k, v in trial.params.items()]
        metrics = [Metric(safe_key(k), v, now, 0) for k, v in trial.metrics.items()]
        metrics += [Metric(safe_key(series), loss, now, step)
                    for series, points in trial.losses.items() for step, loss in points]
        for start in range(0, len(params), PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=params[start:start + PARAMS_PER_BATCH])
        for start in range(0, len(metrics), METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=metrics[start:start + METRICS_PER_BATCH])
        self.client.set_terminated(run_id, "FINISHED" if trial.state == "complete" else "FAILED")

"""``wandb``: one Weights & Biases run per trial, grouped by study.

Offline by default: runs are written under ``RUN/wandb/`` (``wandb sync RUN/wandb/offline-run-*`` uploads them
later); ``WANDB_MODE=online`` (with your own ``wandb login``) logs live. ``WANDB_PROJECT`` (default ``autopeft``)
and ``WANDB_DIR`` (default: the run folder) are honoured; ``--tracking-uri`` is MLflow's and not used here.
"""

from __future__ import annotations

import os
from pathlib import Path

from autopeft._imports import optional_dependency
from autopeft.search.tracking.base import TrackedTrial, Tracker, TrackingContext, register, safe_key

DEFAULT_PROJECT = "autopeft"


@register
class WandbTracker(Tracker):
    name = "wandb"
    package = "wandb"
    description = "Weights & Biases"

    def __init__(self, context: TrackingContext):
        super().__init__(context)
        with optional_dependency("wandb", "--tracking wandb"):
            import wandb
        self.wandb = wandb
        self.dir = Path(os.environ.get("WANDB_DIR") or context.run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.mode = os.environ.get("WANDB_MODE") or "offline"
        self.project = os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT
        self.settings = wandb.Settings(console="off", silent=True, save_code=False, disable_git=True,
                                       x_disable_stats=True, x_save_requirements=False)

    def where(self) -> str:
        return f"{self.dir / 'wandb'} ({self.mode})"

    def log_trial(self, trial: TrackedTrial) -> None:
        run = self.wandb.init(
            project=self.project, group=self.context.study_name, job_type=trial.stage, name=trial.name,
            config={safe_key(k): v for k, v in trial.params.items()},
            tags=[t[:64] for t in (trial.stage, trial.tags.get("origin")) if t],
            notes=str(trial.params.get("description", "")), dir=str(self.dir), mode=self.mode,
            reinit="create_new", settings=self.settings,
        )
        try:
            run.config.update({"autopeft": {**self.context.tags, **trial.tags}}, allow_val_change=True)
            series = sorted({step for points in trial.losses.values() for step, _ in points})
            by_step = {step: {} for step in series}
            for name, points in trial.losses.items():
                for step, loss in points:
                    by_step[step][safe_key(name)] = loss
            for step in series:
                run.log(by_step[step], step=step)
            for key, value in trial.metrics.items():
                run.summary[safe_key(key)] = value
            exit_code = 0 if trial.state == "complete" else 1
        except BaseException:
            run.finish(exit_code=1)
            raise
        run.finish(exit_code=exit_code)

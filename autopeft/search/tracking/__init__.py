"""Experiment tracking: each trial of a search as a run of MLflow or Weights & Biases (``--tracking``).

    from autopeft.search.tracking import TrackingContext, create_trackers
    trackers = create_trackers(["mlflow"], TrackingContext(run_dir, study_name))

Trackers: mlflow, wandb (optional dependencies: the ``[mlflow]`` and ``[wandb]`` extras); see docs/search.md.
"""

# registered in the order --help and the docs list them; each imports its package only when created
# isort: off
from autopeft.search.tracking import mlflow, wandb  # noqa: F401  (register)
# isort: on
from autopeft.search.tracking.base import (
    LOSS,
    TRACKERS,
    TrackedTrial,
    Tracker,
    Tracking,
    TrackingContext,
    check_trackers,
    context_tags,
    create_trackers,
    get_tracker,
    register,
    tracked_trial,
)

__all__ = [
    "LOSS",
    "TRACKERS",
    "TrackedTrial",
    "Tracker",
    "Tracking",
    "TrackingContext",
    "check_trackers",
    "context_tags",
    "create_trackers",
    "get_tracker",
    "register",
    "tracked_trial",
]

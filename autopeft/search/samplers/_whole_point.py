"""A sampler that proposes whole points: the point is planned once before the trial and handed to Optuna
parameter by parameter.

Optuna asks a sampler for each parameter on its own (``sample_independent``), but our samplers judge a point
as a whole (can it train, was it tried, what does the GP think of it), so they plan it in ``before_trial``.
Enqueued points (baselines, the Sobol design, promotions) carry their own parameters and are left alone; a
parameter the plan lacks (a dimension of a module the plan switched off) falls back to Optuna's random draw.
"""

from __future__ import annotations

import abc
from typing import Any

import optuna
from optuna.trial import FrozenTrial


class WholePointSampler(optuna.samplers.BaseSampler, abc.ABC):
    def __init__(self, seed: int):
        self._fallback = optuna.samplers.RandomSampler(seed=seed)
        self._planned: dict[int, dict[str, Any]] = {}

    @abc.abstractmethod
    def _plan(self, study: optuna.Study) -> dict[str, Any] | None:
        """The next point's parameters, or None to leave every parameter to the random fallback."""

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.system_attrs.get("fixed_params"):
            return  # an enqueued point (baseline, quasi-random, promotion)
        planned = self._plan(study)
        if planned is not None:
            self._planned[trial.number] = planned

    def sample_independent(self, study, trial, param_name, param_distribution):
        planned = self._planned.get(trial.number, {})
        if param_name in planned:
            return planned[param_name]
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._planned.pop(trial.number, None)

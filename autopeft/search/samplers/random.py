"""Uniform random points: the baseline every model-based sampler must beat."""

from __future__ import annotations

import optuna

DESCRIPTION = "uniform random search (Optuna)"


def create(context) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=context.seed)

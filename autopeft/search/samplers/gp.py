"""Optuna's GPSampler (log expected hypervolume improvement). It models every objective, the
parameter count included; conditional parameters outside the shared space are sampled at random.
"""

from __future__ import annotations

import optuna

from autopeft.search.feasibility import violation

DESCRIPTION = "Gaussian process + logEHVI (Optuna GPSampler)"


def create(context) -> optuna.samplers.BaseSampler:
    return optuna.samplers.GPSampler(seed=context.seed, n_startup_trials=3, warn_independent_sampling=False,
                                     constraints_func=violation)

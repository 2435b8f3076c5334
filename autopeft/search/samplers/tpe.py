"""Optuna's multivariate TPE; ``group=True`` models each conditional branch of the space on its own."""

from __future__ import annotations

import warnings

import optuna

from autopeft.search.feasibility import violation

DESCRIPTION = "Tree-structured Parzen estimator (Optuna, multivariate, grouped for conditional spaces)"


def create(context) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():  # multivariate/group are "experimental" in Optuna, and what conditional spaces need
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=context.seed, multivariate=True, group=True, n_startup_trials=5, constraints_func=violation,
        )

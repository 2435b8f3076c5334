"""Optuna's NSGA-II, with a population small enough to evolve within a short search."""

from __future__ import annotations

import optuna

from autopeft.search.feasibility import violation

DESCRIPTION = "NSGA-II genetic algorithm (Optuna)"


def create(context) -> optuna.samplers.BaseSampler:
    trials = context.expected_trials or 50
    population = max(4, min(50, trials // 4))
    return optuna.samplers.NSGAIISampler(population_size=population, seed=context.seed, constraints_func=violation)

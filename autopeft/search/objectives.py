"""The searched objectives: the task metric, the exact trainable-parameter count, and optional costs.

Each objective reads its value from a trial's result; the parameter count is not measured but
computed from the point (:func:`autopeft.space.count_trainable_params`), so it is exact before
training and usable for budgets and acquisition without a surrogate. Costs are registered by name
(:func:`cost_objective`): a new one is one decorated function here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from autopeft.errors import AutopeftError
from autopeft.trial.result import TrialResult

Measure = Callable[[TrialResult, int], float]
"""(a trial's result, the point's exact adapter parameters) -> the objective's value."""


@dataclass(frozen=True)
class CostObjective:
    """A quantity the search minimises beside the task metric."""

    name: str
    description: str
    log_scale: bool      # compared on a log scale (sizes that span orders of magnitude)
    measure: Measure


COST_OBJECTIVES: dict[str, CostObjective] = {}


def cost_objective(name: str, description: str, log_scale: bool = False) -> Callable[[Measure], Measure]:
    """Decorator: register ``measure(result, adapter_params)`` as the cost objective ``name``."""
    def register(measure: Measure) -> Measure:
        COST_OBJECTIVES[name] = CostObjective(name, description, log_scale, measure)
        return measure
    return register


@cost_objective("params", "trainable adapter parameters (exact, from the point)", log_scale=True)
def _params(result: TrialResult, adapter_params: int) -> float:
    return float(adapter_params)


@cost_objective("train_time", "seconds of training")
def _train_time(result: TrialResult, adapter_params: int) -> float:
    return float(result.train_seconds)


@cost_objective("latency", "milliseconds per evaluated example")
def _latency(result: TrialResult, adapter_params: int) -> float:
    return 1000.0 / result.eval_examples_per_second if result.eval_examples_per_second > 0 else math.inf


@cost_objective("memory", "peak memory of the trial in MB")
def _memory(result: TrialResult, adapter_params: int) -> float:
    return float(result.peak_memory_mb)


PARAMS = "params"
DEFAULT_OBJECTIVES = ("metric", PARAMS)


@dataclass(frozen=True)
class Objective:
    name: str            # the task metric's name, or a registered cost objective's
    maximize: bool
    log_scale: bool      # compared on a log scale (sizes that span orders of magnitude)

    @property
    def direction(self) -> str:
        return "maximize" if self.maximize else "minimize"

    def value(self, result: TrialResult, adapter_params: int) -> float:
        if self.name in COST_OBJECTIVES:
            return COST_OBJECTIVES[self.name].measure(result, adapter_params)
        if self.name not in result.metrics:
            raise KeyError(f"metric '{self.name}' missing from the trial's metrics {sorted(result.metrics)}")
        return float(result.metrics[self.name])

    def to_loss(self, value: float) -> float:
        """The value in a minimisation space where distances are meaningful (for ranks and hypervolume)."""
        if self.log_scale:
            value = math.log10(max(value, 0.0) + 1.0)
        return -value if self.maximize else value


def parse_objectives(names: list[str] | tuple[str, ...], metric: str, metric_higher_is_better: bool) -> list[Objective]:
    """``["metric", "params", "latency"]`` -> objectives; "metric" (or the metric's own name) is the task metric."""
    objectives: list[Objective] = []
    for raw in names:
        name = raw.strip().lower().replace("-", "_")
        if name in ("metric", metric):
            objective = Objective(metric, metric_higher_is_better, False)
        elif name in COST_OBJECTIVES:
            objective = Objective(name, False, COST_OBJECTIVES[name].log_scale)
        else:
            raise AutopeftError(
                f"unknown objective '{raw}' (choose from: metric, {', '.join(COST_OBJECTIVES)})"
            )
        if any(o.name == objective.name for o in objectives):
            raise AutopeftError(f"objective '{raw}' is given twice")
        objectives.append(objective)
    if not objectives or objectives[0].name != metric:
        raise AutopeftError("the first objective must be the task metric ('metric')")
    if len(objectives) < 2:
        raise AutopeftError("a multi-objective search needs at least two objectives (e.g. metric,params)")
    return objectives

"""The searched objectives: the task metric, the exact trainable-parameter count, and optional costs.

Each objective reads its value from a trial's result; the parameter count is not measured but
computed from the point (:func:`autopeft.space.count_trainable_params`), so it is exact before
training and usable for budgets and acquisition without a surrogate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from autopeft.errors import AutopeftError
from autopeft.trial.result import TrialResult

PARAMS, TRAIN_TIME, LATENCY, MEMORY = "params", "train_time", "latency", "memory"
COST_OBJECTIVES = (PARAMS, TRAIN_TIME, LATENCY, MEMORY)
DEFAULT_OBJECTIVES = ("metric", PARAMS)


@dataclass(frozen=True)
class Objective:
    name: str            # the task metric's name, or one of COST_OBJECTIVES
    maximize: bool
    log_scale: bool      # compared on a log scale (sizes that span orders of magnitude)

    @property
    def direction(self) -> str:
        return "maximize" if self.maximize else "minimize"

    def value(self, result: TrialResult, adapter_params: int) -> float:
        if self.name == PARAMS:
            return float(adapter_params)
        if self.name == TRAIN_TIME:
            return float(result.train_seconds)
        if self.name == LATENCY:  # milliseconds per evaluated example
            return 1000.0 / result.eval_examples_per_second if result.eval_examples_per_second > 0 else math.inf
        if self.name == MEMORY:
            return float(result.peak_memory_mb)
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
            objective = Objective(name, False, name == PARAMS)
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

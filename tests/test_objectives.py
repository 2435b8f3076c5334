"""Objectives: the task metric first, then registered costs (autopeft.search.objectives)."""

import math

import pytest

from autopeft.errors import AutopeftError
from autopeft.search.objectives import COST_OBJECTIVES, cost_objective, parse_objectives
from autopeft.trial.result import TrialResult


def result(**fields) -> TrialResult:
    return TrialResult(status="ok", metrics={"accuracy": 0.8}, **fields)


def test_shipped_objectives_measure_what_they_say():
    objectives = parse_objectives(["metric", "params", "train_time", "latency", "memory"], "accuracy", True)
    measured = result(train_seconds=12.5, eval_examples_per_second=250.0, peak_memory_mb=900.0)
    assert [o.value(measured, 1234) for o in objectives] == [0.8, 1234.0, 12.5, 4.0, 900.0]
    assert [o.direction for o in objectives] == ["maximize"] + ["minimize"] * 4
    params = objectives[1]
    assert params.log_scale and math.isclose(params.to_loss(999.0), 3.0)
    assert objectives[3].value(result(eval_examples_per_second=0.0), 1) == math.inf


def test_a_new_cost_objective_is_one_registered_function():
    @cost_objective("adapter_mb", "adapter size in MB (fp32)")
    def adapter_mb(result, adapter_params):
        return adapter_params * 4 / 2**20

    try:
        objectives = parse_objectives(["metric", "adapter-mb"], "accuracy", True)
        assert objectives[1].name == "adapter_mb" and objectives[1].value(result(), 2**20) == 4.0
    finally:
        COST_OBJECTIVES.pop("adapter_mb")
    with pytest.raises(AutopeftError, match="unknown objective 'adapter-mb'"):
        parse_objectives(["metric", "adapter-mb"], "accuracy", True)

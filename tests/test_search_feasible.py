"""Only points that can train are proposed; one that cannot teaches the sampler; the default space; LoFiT's ranking."""

from __future__ import annotations

import optuna
import pytest
import yaml

from autopeft.search import records as R
from autopeft.search.feasibility import EMPTY, LOFIT_NEEDS_HEADS, penalised_values
from autopeft.search.initial_design import BASELINES, baseline_params
from autopeft.space import SearchSpace, count_model_params, count_trainable_params, parse_space
from tests.conftest import tiny_bert_config
from tests.search_helpers import write_tiny_model, write_tiny_task
from tests.test_search_engine import OBJECTIVES, FakeEvaluator, make_engine, stage_records

optuna.logging.set_verbosity(optuna.logging.WARNING)

OPTIONAL = """\
name: optional
modules:
  lora: {optional: true, targets: [query, value], size: {grid: [2, 4]}}
  bitfit: {optional: true}
  ia3: {optional: true}
"""


def test_botorch_never_proposes_an_empty_point_or_lofit_without_a_head_ranking(tmp_path):
    """On the unified space the acquisition loved the empty point (0 parameters, a new learning rate each time)."""
    pytest.importorskip("botorch")
    space = SearchSpace.from_file("search_spaces/unified.yaml", tiny_bert_config())
    engine, storage = make_engine(tmp_path, FakeEvaluator(space), space, trials=24, sampler="botorch",
                                  quasi_random=2, unavailable={"lofit": LOFIT_NEEDS_HEADS})
    engine.run()
    rung0 = stage_records(storage)["rung-0"]
    proposed = [r for r in rung0 if r.origin.startswith(R.SAMPLER_PREFIX)]
    assert len(proposed) >= 15
    for record in proposed:
        point = space.decode(record.params)
        assert not record.infeasible and not point.is_empty and "lofit" not in point.modules
    assert all(r.trained for r in proposed)


def test_the_random_sampler_draws_only_new_points_that_can_train(tmp_path):
    space = SearchSpace(parse_space(yaml.safe_load(OPTIONAL), "optional"), tiny_bert_config(), "optional")
    engine, storage = make_engine(tmp_path, FakeEvaluator(space), space, trials=8, baselines=False, quasi_random=0)
    engine.run()
    rung0 = stage_records(storage)["rung-0"]
    assert len(rung0) == 8 and all(r.trained and not r.infeasible for r in rung0)
    assert len({r.key for r in rung0}) == 8


def test_tpe_told_an_infeasible_point_learns_from_it_and_never_puts_it_on_a_front(tmp_path):
    """The empty point is told COMPLETE with dominated values and `infeasible`; TPE reads it as a violated constraint
    and does not propose it again (TPE's random start proposed it once)."""
    space = SearchSpace(parse_space(yaml.safe_load(OPTIONAL), "optional"), tiny_bert_config(), "optional")
    engine, storage = make_engine(tmp_path, FakeEvaluator(space), space, trials=10, baselines=False, quasi_random=0,
                                  sampler="tpe", seed=0)
    outcome = engine.run()
    rung0 = stage_records(storage)["rung-0"]
    empty = [r for r in rung0 if space.decode(r.params).is_empty]
    assert len(empty) == 1                                  # proposed once, never again
    record = empty[0]
    assert record.state == "complete" and record.infeasible and not record.trained
    assert record.attrs[R.INFEASIBLE] == EMPTY and EMPTY in record.attrs[R.REASON]
    seen = {r.values["accuracy"] for r in rung0 if r.trained and r.number < record.number} or {0.0}
    assert record.values == {"accuracy": min(seen), "params": float(count_model_params(space.model_config))}
    trial = engine.studies[0].get_trials(deepcopy=False)[record.number]
    assert trial.system_attrs["constraints"] == (1.0,)       # what TPE's constraints_func made of it
    assert record.key not in {r.key for r in outcome.front} and sum(r.trained for r in rung0) == 10
    assert R.search_front(stage_records(storage), OBJECTIVES)[1] and all(
        not r.infeasible for r in R.search_front(stage_records(storage), OBJECTIVES)[1])


def test_penalised_values_are_dominated_and_finite():
    observed = [[0.7, 1000.0], [0.9, 5000.0]]
    assert penalised_values(OBJECTIVES, observed, 0, 10**6) == [0.7, 1e6]
    assert penalised_values(OBJECTIVES, [], 20, 10) == [0.0, 20.0]


def test_the_default_space_is_small_and_holds_the_hand_made_baselines():
    space = SearchSpace.from_file("default", tiny_bert_config())
    assert space.source == "default" and space.spec.name == "default"
    assert len(space.dimensions) <= 8
    expressed = {b.name for b in BASELINES if baseline_params(space, b)[0] is not None}
    assert {"lora", "pfeiffer", "parallel_adapter"} <= expressed
    assert set(space.spec.modules) == {"lora", "serial_adapter", "parallel_adapter"}
    params, _ = baseline_params(space, BASELINES[0])
    assert count_trainable_params(space.decode(params), space.model_config) > 0


def test_search_without_space_uses_the_default_space_and_trials(tmp_path):
    from autopeft.search.run import prepare_search
    from autopeft.search.settings import DEFAULT_TRIALS, merge_settings

    model, task = write_tiny_model(tmp_path / "model"), write_tiny_task(tmp_path / "task")
    settings = merge_settings({}, {"model": model, "dataset": task, "out": str(tmp_path / "run")})
    assert settings.space == "default"
    setup = prepare_search(settings)
    assert setup.space.spec.name == "default" and setup.plan.trials == DEFAULT_TRIALS
    assert settings.priors.prior == []
    # 64 rows, batch 32: every rung of --fidelity auto is the full 2 steps, so the search has one rung and says so
    assert len(setup.plan.rungs) == 1 and setup.plan.rungs[0] == settings.fidelity.rung_fidelities()[-1]
    assert setup.notes == ["3 of the 4 fidelity rungs would train exactly what the next one trains on this task "
                           "(64 train rows): the search uses 1 rung (2 optimiser steps)"]

    lofit = merge_settings({}, {"model": model, "dataset": task, "space": "unified", "out": str(tmp_path / "u")})
    setup = prepare_search(lofit)
    assert "heads" in lofit.priors.prior and any("head ranking" in note for note in setup.notes)


def test_a_lofit_point_without_a_head_ranking_is_never_trained(tmp_path):
    text = """\
name: lofit
modules:
  lora: {optional: true, targets: [query, value], size: {grid: [2, 4]}}
  lofit: {optional: true, size: {grid: [1, 2]}}
"""
    space = SearchSpace(parse_space(yaml.safe_load(text), "lofit"), tiny_bert_config(), "lofit")
    evaluator = FakeEvaluator(space)
    lofit_only = {"lora.on": 0, "lofit.on": 1, "lofit.size_level": 0}
    engine, storage = make_engine(tmp_path, evaluator, space, trials=2, baselines=False, quasi_random=0,
                                  sampler="tpe", unavailable={"lofit": LOFIT_NEEDS_HEADS},
                                  initial_points=((lofit_only, "test:lofit"),))
    outcome = engine.run()
    assert any(f"initial point test:lofit skipped: {LOFIT_NEEDS_HEADS}" in note for note in outcome.notes)
    rung0 = stage_records(storage)["rung-0"]
    assert all("lofit" not in space.decode(r.params).modules for r in rung0 if r.trained)
    assert all(r.attrs[R.INFEASIBLE] in (LOFIT_NEEDS_HEADS, EMPTY) for r in rung0 if not r.trained)
    assert len(evaluator.calls) == 2

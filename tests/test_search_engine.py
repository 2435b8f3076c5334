"""The search engine with a synthetic evaluator (no training): budget, dedup, MO-ASHA, final stage, resume."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest

from autopeft.errors import AutopeftError
from autopeft.search import SearchEngine, SearchPlan, open_storage, parse_objectives
from autopeft.search import records as R
from autopeft.search.engine import point_key
from autopeft.search.initial_design import BASELINES, baseline_params, quasi_random_params
from autopeft.search.lease import LEASE
from autopeft.search.pareto import hypervolume, hypervolume_contributions, nondominated_ranks, promotion_order
from autopeft.space import SearchSpace, count_trainable_params, parse_space
from autopeft.trial.fidelity import Fidelity
from autopeft.trial.result import ERROR, TrialResult
from tests.conftest import tiny_bert_config
from tests.search_helpers import LORA_SPACE

optuna.logging.set_verbosity(optuna.logging.WARNING)
OBJECTIVES = parse_objectives(["metric", "params"], "accuracy", True)


def lora_space() -> SearchSpace:
    import yaml

    return SearchSpace(parse_space(yaml.safe_load(LORA_SPACE), "tiny"), tiny_bert_config(), "tiny")


class FakeEvaluator:
    """accuracy grows with the adapter size and the data fraction; records every call."""

    def __init__(self, space, fail_descriptions=(), interrupt_at: int | None = None):
        self.space, self.calls = space, []
        self.fail_descriptions, self.interrupt_at = fail_descriptions, interrupt_at

    def __call__(self, point, fidelity, seed, *, evaluate_test=False, save_dir=None, **checkpoints):
        if self.interrupt_at is not None and len(self.calls) == self.interrupt_at:
            raise KeyboardInterrupt
        self.calls.append((point_key(point), fidelity.train_examples, seed))
        if point.describe() in self.fail_descriptions:
            return TrialResult(status=ERROR, reason="error: RuntimeError: boom")
        params = count_trainable_params(point, self.space.model_config)
        accuracy = 0.5 + 0.4 * (1 - math.exp(-params / 1500)) + 0.05 * (fidelity.train_examples or 1) + 0.002 * seed
        return TrialResult(metrics={"accuracy": accuracy}, test_metrics={"accuracy": accuracy - 0.01},
                           wall_seconds=0.5, eval_examples_per_second=1000.0 / (1 + params / 1000),
                           train_losses=[[1, 0.7], [2, 0.6 - seed / 100]])


def make_engine(tmp_path, evaluator, space=None, study="s", storage=None, **plan):
    """An engine on an in-memory Optuna storage (pass the same storage again to resume); the CLI tests use SQLite."""
    plan.setdefault("rungs", [Fidelity()])
    plan.setdefault("trials", 6)
    plan.setdefault("sampler", "random")
    plan.setdefault("final_seeds", 0)
    storage = storage or optuna.storages.InMemoryStorage()
    return SearchEngine(space or lora_space(), evaluator, SearchPlan(objectives=OBJECTIVES, **plan), storage, study,
                        tmp_path), storage


def stage_records(storage, study="s"):
    return R.load_records(storage, study, OBJECTIVES)


def test_pareto_ranks_hypervolume_and_promotion_order():
    losses = np.array([[0, 3], [1, 1], [3, 0], [2, 2], [4, 4.0]])
    assert nondominated_ranks(losses).tolist() == [0, 0, 0, 1, 2]
    assert hypervolume(losses[:3], np.array([4.0, 4.0])) == pytest.approx(4 + 6 + 1 + 0)  # 11 by hand: union of boxes
    contributions = hypervolume_contributions(losses[:3], np.array([4.0, 4.0]))
    assert contributions[1] == pytest.approx(4.0) and contributions[0] == pytest.approx(1.0)
    assert promotion_order(losses).tolist()[:1] == [1] and promotion_order(losses).tolist()[-2:] == [3, 4]


def test_baselines_are_enqueued_only_when_the_space_expresses_them():
    config = tiny_bert_config()
    autopeft = SearchSpace.from_file("search_spaces/autopeft.yaml", config)
    expressed = {b.name: baseline_params(autopeft, b)[0] is not None for b in BASELINES}
    assert expressed == {"lora": False, "pfeiffer": True, "parallel_adapter": True, "prefix": True, "mam": True}
    params, _ = baseline_params(autopeft, BASELINES[-1])
    assert set(autopeft.decode(params).modules) == {"prefix", "parallel_adapter"}
    lora = lora_space()
    params, why = baseline_params(lora, BASELINES[0])
    point = lora.decode(params)
    assert point.modules["lora"].targets == ("query", "value") and set(point.modules["lora"].sizes.values()) == {8}
    assert "cannot express" in baseline_params(lora, BASELINES[1])[1]
    for params in quasi_random_params(SearchSpace.from_file("search_spaces/unified.yaml", config), 8, seed=0):
        SearchSpace.from_file("search_spaces/unified.yaml", config).validate_params(params)


def test_over_budget_points_are_pruned_before_training_and_duplicates_reuse_results(tmp_path):
    space = lora_space()
    evaluator = FakeEvaluator(space)
    # TPE: an Optuna sampler that proposes points over the budget (ours, random and botorch, never do)
    engine, storage = make_engine(tmp_path, evaluator, space, trials=6, max_params=1200, sampler="tpe")  # 7 fit
    outcome = engine.run()
    rung0 = stage_records(storage)["rung-0"]
    assert sum(r.trained for r in rung0) == 6
    keys = [call[0] for call in evaluator.calls]
    assert len(keys) == len(set(keys)) == 6                      # nothing trained twice
    assert all(count_trainable_params(space.decode(r.params), space.model_config) <= 1200 for r in rung0 if r.trained)
    pruned = [r for r in rung0 if r.state == "pruned"]
    assert pruned and all("over --max-params" in r.attrs[R.REASON] and r.infeasible for r in pruned)
    duplicates = [r for r in rung0 if R.DUPLICATE_OF in r.attrs]
    for record in duplicates:
        assert record.values == rung0[record.attrs[R.DUPLICATE_OF]].values
    assert all(r.attrs[R.SUGGEST_SECONDS] >= 0 for r in rung0)
    assert any("initial point baseline:lora skipped: 2,048 params" in note for note in outcome.notes)
    assert outcome.front and outcome.stopped_because == "trial budget reached"


def test_empty_points_are_told_infeasible_before_training(tmp_path):
    """A point with every module off has nothing to tune: told infeasible with dominated values (so samplers learn
    from it), never handed to the evaluator, on no front."""
    import yaml

    text = """\
name: optional
modules:
  lora: {optional: true, targets: [query, value], size: {grid: [2, 4]}}
  bitfit: {optional: true}
"""
    space = SearchSpace(parse_space(yaml.safe_load(text), "optional"), tiny_bert_config(), "optional")
    evaluator = FakeEvaluator(space)
    engine, storage = make_engine(tmp_path, evaluator, space, trials=4, baselines=False,
                                  initial_points=(({"lora.on": 0, "bitfit.on": 0}, "test:empty"),))
    outcome = engine.run()
    rung0 = stage_records(storage)["rung-0"]
    empty = [r for r in rung0 if space.decode(r.params).is_empty]
    assert any("initial point test:empty skipped: every module is off" in note for note in outcome.notes)
    assert all(r.state == "complete" and r.infeasible and not r.trained and "every module is off" in r.attrs[R.REASON]
               for r in empty)
    assert not any(r.infeasible for r in outcome.front)
    assert sum(r.trained for r in rung0) == 4
    assert all(not space.decode(r.params).is_empty for r in rung0 if r.trained)
    assert len(evaluator.calls) == 4


def test_a_budget_that_leaves_too_few_points_ends_the_search(tmp_path):
    space = lora_space()
    engine, storage = make_engine(tmp_path, FakeEvaluator(space), space, trials=20, max_params=1200)
    outcome = engine.run()
    assert sum(r.trained for r in stage_records(storage)["rung-0"]) == 7  # every point within the budget
    assert outcome.stopped_because == "no new point within --max-params found by random sampling"


def test_failed_trials_keep_status_and_reason(tmp_path):
    space = lora_space()
    evaluator = FakeEvaluator(space, fail_descriptions={"lora size 8 on query/value of 2 layer(s)"})
    engine, storage = make_engine(tmp_path, evaluator, space, trials=3)
    engine.run()
    first = stage_records(storage)["rung-0"][0]  # the LoRA r=8 baseline
    assert first.state == "fail" and first.attrs[R.STATUS] == "error" and "boom" in first.attrs[R.REASON]


def test_a_diverged_trial_is_recorded_with_its_reason_and_never_enters_a_front(tmp_path):
    """The LoRA r=8 baseline 'wins' on its values (the largest point) but diverged: it is no result."""
    from autopeft.trial.result import DIVERGED

    space = lora_space()

    class Diverging(FakeEvaluator):
        def __call__(self, point, fidelity, seed, **kwargs):
            result = super().__call__(point, fidelity, seed, **kwargs)
            if point.describe() == "lora size 8 on query/value of 2 layer(s)":
                result.status, result.reason = (DIVERGED,
                                                "diverged: eval loss 900 > 3 x the input-blind predictor's 0.69")
            return result

    engine, storage = make_engine(tmp_path, Diverging(space), space, trials=4, final_seeds=1)
    outcome = engine.run()
    first = stage_records(storage)["rung-0"][0]
    assert first.state == "fail" and first.attrs[R.STATUS] == "diverged" and "input-blind" in first.attrs[R.REASON]
    assert outcome.front and all(r.key != first.key for r in outcome.front)


def test_mo_asha_promotes_the_top_third_and_the_final_stage_averages_seeds(tmp_path):
    space = lora_space()
    evaluator = FakeEvaluator(space)
    rungs = [Fidelity(train_examples=f) for f in (0.25, 0.5)] + [Fidelity()]
    engine, storage = make_engine(tmp_path, evaluator, space, trials=9, rungs=rungs, eta=3, final_seeds=2)
    outcome = engine.run()
    stages = stage_records(storage)
    assert sum(r.trained for r in stages["rung-0"]) == 9
    promoted = stages["rung-1"]
    # asynchronous SH: the top third changes as results arrive, so at least 9 // 3 get promoted
    assert 3 <= len(promoted) < 9 and 1 <= len(stages["rung-2"]) < len(promoted)
    first_three = R.distinct_complete(stages["rung-0"])[:3]
    best = first_three[promotion_order(np.array([r.losses(OBJECTIVES) for r in first_three]))[0]]
    assert promoted[0].key == best.key  # promoted as soon as rung 0 held eta results: the best by rank / HV
    for record in promoted:  # promoted points are ones finished at rung 0, re-trained on more data
        source = [r for r in stages["rung-0"] if r.key == record.key]
        assert source and record.attrs[R.ORIGIN].startswith("promoted from rung-0#")
    assert {c[1] for c in evaluator.calls} == {0.25, 0.5, None}
    final = stages["final"]
    assert outcome.front_stage == "final" and final
    assert all(len(r.attrs[R.SEEDS]) == 2 for r in final)
    seeds = [c[2] for c in evaluator.calls if c[1] is None]
    assert set(seeds) == {0, 1}
    record = final[0]
    assert record.values["accuracy"] == pytest.approx(
        np.mean([s["metrics"]["accuracy"] for s in record.attrs[R.SEEDS]]))
    assert record.attrs[R.VALUES_STD]["accuracy"] == pytest.approx(0.001)
    assert "accuracy" in record.attrs[R.TEST_METRICS]


def test_interrupted_search_resumes_without_redoing_finished_trials(tmp_path):
    space = lora_space()
    engine, storage = make_engine(tmp_path, FakeEvaluator(space, interrupt_at=3), space, trials=6)
    with pytest.raises(KeyboardInterrupt):
        engine.run()
    interrupted = [r for r in stage_records(storage)["rung-0"] if r.state == "fail"]
    assert len(interrupted) == 1 and "interrupted" in interrupted[0].attrs[R.REASON]
    done_before = {r.key for r in stage_records(storage)["rung-0"] if r.trained}
    assert len(done_before) == 3

    resumed = FakeEvaluator(space)
    engine, storage = make_engine(tmp_path, resumed, space, storage=storage, trials=6)
    engine.run()
    rung0 = stage_records(storage)["rung-0"]
    assert sum(r.trained for r in rung0) == 6
    assert not done_before & {c[0] for c in resumed.calls}           # finished trials were not redone
    assert resumed.calls[0][0] == interrupted[0].key                  # the interrupted point was retried first
    assert [r for r in rung0 if r.attrs.get(R.ORIGIN, "").startswith("retry of #")]


def test_resuming_with_other_objectives_is_refused(tmp_path):
    space = lora_space()
    engine, storage = make_engine(tmp_path, FakeEvaluator(space), space, trials=2)
    engine.run()
    other = parse_objectives(["metric", "params", "latency"], "accuracy", True)
    with pytest.raises(AutopeftError, match="different objectives"):
        SearchEngine(space, FakeEvaluator(space), SearchPlan(objectives=other, rungs=[Fidelity()], trials=2,
                                                             sampler="random", final_seeds=0),
                     storage, "s", tmp_path).run()


def test_model_based_sampler_never_proposes_over_budget_or_seen_points(tmp_path):
    pytest.importorskip("botorch")
    space = lora_space()
    evaluator = FakeEvaluator(space)
    engine, storage = make_engine(tmp_path, evaluator, space, trials=7, sampler="botorch", max_params=1500,
                                  quasi_random=2)
    engine.run()
    proposed = [r for r in stage_records(storage)["rung-0"] if r.attrs[R.ORIGIN] == "sampler:botorch"]
    assert proposed and all(r.trained and r.attrs[R.ADAPTER_PARAMS] <= 1500 for r in proposed)


def test_trials_left_running_by_a_dead_process_are_failed_and_retried(tmp_path):
    space = lora_space()
    engine, storage = make_engine(tmp_path, FakeEvaluator(space), space, trials=2)
    engine.run()
    # a seeded draw, so that the orphan is never one of the points already trained (a duplicate is not retried)
    study = optuna.load_study(study_name="s", storage=storage, sampler=optuna.samplers.RandomSampler(seed=1))
    orphan = study.ask()                      # a process that died mid-trial leaves it RUNNING
    params = space.suggest(orphan)
    assert point_key(space.decode(params)) not in {r.attrs[R.KEY] for r in stage_records(storage)["rung-0"]
                                                   if R.KEY in r.attrs and r.number != orphan.number}
    storage.set_trial_user_attr(orphan._trial_id, R.KEY, point_key(space.decode(params)))
    storage.set_trial_user_attr(orphan._trial_id, LEASE, _dead_owner().lease())
    resumed = FakeEvaluator(space)
    engine, storage = make_engine(tmp_path, resumed, space, storage=storage, trials=3)
    engine.run()
    record = stage_records(storage)["rung-0"][orphan.number]
    assert record.state == "fail" and record.attrs[R.REASON].startswith("interrupted: the search process ended")
    assert any(n.startswith(f"rung-0 trial #{orphan.number} was interrupted") for n in engine.notes)
    assert resumed.calls[0][0] == point_key(space.decode(params))


def _dead_owner():
    """The owner record of a process that has exited (its pid is gone)."""
    import subprocess
    import sys
    import uuid

    from autopeft.search.lease import Owner

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    me = Owner.this_process()
    return Owner(uuid.uuid4().hex, me.host, int(done.stdout), me.started)


def test_a_live_peer_trial_is_left_alone_and_its_point_not_trained_twice(tmp_path):
    """Another process's RUNNING trial with a valid lease: neither failed, nor trained again, and counted
    against the shared trial budget; an expired lease of another host is taken over."""
    import time

    from autopeft.search.lease import Owner, owner_alive

    space = lora_space()
    engine, storage = make_engine(tmp_path, FakeEvaluator(space), space, trials=1)
    engine.run()
    study = optuna.load_study(study_name="s", storage=storage)
    peer = study.ask()
    params = space.suggest(peer)
    key = point_key(space.decode(params))
    storage.set_trial_user_attr(peer._trial_id, R.KEY, key)
    me = Owner.this_process()
    live = Owner("peer-token", me.host, me.pid, me.started)   # a live process on this host (this one's pid)
    storage.set_trial_user_attr(peer._trial_id, LEASE, {**live.lease(), "expires": time.time() + 3600})
    resumed = FakeEvaluator(space)
    engine, storage = make_engine(tmp_path, resumed, space, storage=storage, trials=4)
    engine.run()
    assert storage.get_trial(peer._trial_id).state == optuna.trial.TrialState.RUNNING
    assert key not in [call[0] for call in resumed.calls]
    assert len(resumed.calls) == 2   # 4 trials = 1 done + 1 running elsewhere + 2 here
    remote = Owner("remote", "another-host", 1, 0.0)
    assert owner_alive(remote.lease(), me, None) and not owner_alive(remote.lease(time.time() - 10**4), me, None)
    assert not owner_alive(_dead_owner().lease(), me, None)


def test_settings_merge_file_and_flags_and_read_compact_forms(tmp_path):
    from autopeft.search.settings import fidelity_rungs, merge_settings, parse_duration, read_run_config
    from autopeft.space import parse_max_params

    path = tmp_path / "run.yaml"
    path.write_text("model: m\ndataset: d\nspace: s.yaml\ntime-budget: 1h30m\nfidelity: 0.25,0.5,1\ntrials: 7\n")
    settings = merge_settings(read_run_config(path), {"trials": 3, "sampler": None})
    assert settings.trials == 3 and settings.time_budget_seconds == 5400 and settings.fidelity.rungs == [0.25, 0.5, 1.0]
    with pytest.raises(AutopeftError, match="setting 'unknown-key'"):
        merge_settings({"model": "m", "dataset": "d", "space": "s", "unknown_key": 1}, {})
    with pytest.raises(AutopeftError, match="--dataset is required"):
        merge_settings({"model": "m"}, {})
    assert merge_settings({"model": "m", "dataset": "d"}, {}).space == "default"   # search_spaces/default.yaml
    assert parse_duration("90s") == 90 and parse_duration(60) == 60
    assert parse_max_params("0.5%", 2_000_000) == 10_000 and parse_max_params("120k", 1) == 120_000
    rungs = fidelity_rungs(Fidelity(train_examples=1000, max_steps=40), [0.25, 1.0], "data")
    assert (rungs[0].train_examples == 250 and rungs[0].max_steps == 10
            and rungs[1] == Fidelity(train_examples=1000, max_steps=40))
    assert fidelity_rungs(Fidelity(epochs=4), [0.5, 1.0], "epochs")[0].epochs == 2


def test_storage_urls_are_masked():
    from autopeft.search.storage import mask_url

    assert mask_url("postgresql+psycopg2://bob:s3cret@db.example:5432/x") == "postgresql+psycopg2://***@db.example:5432/x"
    assert mask_url("sqlite:////tmp/a.db") == "sqlite:////tmp/a.db"


def test_closed_form_ehvi_matches_monte_carlo():
    from autopeft.search.samplers.botorch import expected_improvement_2d

    front, reference = np.array([[0.2, 3.0], [0.5, 2.0], [0.9, 1.0]]), np.array([1.2, 3.5])
    mean, std, known = np.array([0.3, 0.6, 1.0, 0.1]), np.array([0.1, 0.2, 0.05, 0.3]), np.array([2.5, 1.5, 0.5, 3.2])
    exact = expected_improvement_2d(front, reference, mean, std, known)
    rng, base = np.random.default_rng(0), hypervolume(front, reference)
    sampled = [np.mean([hypervolume(np.vstack([front, [a, k]]), reference) - base for a in rng.normal(m, s, 1500)])
               for m, s, k in zip(mean, std, known)]
    assert exact == pytest.approx(sampled, rel=0.06)


def test_time_budget_stops_the_search(tmp_path):
    space = lora_space()
    engine, storage = make_engine(tmp_path, FakeEvaluator(space), space, trials=None, time_budget=1e-6)
    outcome = engine.run()
    assert outcome.stopped_because == "time budget reached"
    assert sum(r.trained for r in stage_records(storage).get("rung-0", [])) == 0


def test_botorch_with_a_third_measured_objective_uses_qlogehvi(tmp_path):
    pytest.importorskip("botorch")
    space = lora_space()
    objectives = parse_objectives(["metric", "params", "latency"], "accuracy", True)
    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    plan = SearchPlan(objectives=objectives, rungs=[Fidelity()], trials=6, sampler="botorch", final_seeds=0,
                      quasi_random=2)
    SearchEngine(space, FakeEvaluator(space), plan, storage, "s", tmp_path).run()
    rung0 = R.load_records(storage, "s", objectives)["rung-0"]
    proposed = [r for r in rung0 if r.attrs[R.ORIGIN] == "sampler:botorch"]
    assert len(proposed) >= 3 and all(r.complete and r.values["latency"] > 0 for r in proposed)
    assert len({r.key for r in rung0}) == len(rung0)


def _waiting(storage, study="s"):
    return [t for summary in optuna.get_all_study_summaries(storage) if summary.study_name.startswith(study)
            for t in optuna.load_study(study_name=summary.study_name, storage=storage).get_trials(
                deepcopy=False, states=(optuna.trial.TrialState.WAITING,))]


def test_an_initial_design_larger_than_the_trial_budget_leaves_no_waiting_trial_and_is_warned_about(tmp_path):
    """Issue 19 (10): 1 baseline + 2 Sobol points for a budget of 2 queued 3 points, and the third stayed WAITING; the
    design is cut to the budget, and the search says that no trial came from the sampler."""
    space = lora_space()
    engine, storage = make_engine(tmp_path, FakeEvaluator(space), space, trials=2, sampler="auto")
    outcome = engine.run()
    assert not _waiting(storage)
    rung0 = stage_records(storage)["rung-0"]
    assert [r.origin for r in rung0] == ["baseline:lora", "quasi-random"] and all(r.trained for r in rung0)
    assert outcome.origins == {"baseline": 1, "quasi-random": 1}
    assert outcome.sampler == engine.sampler_name != "auto"
    assert any("holds 2 of the initial design's points: 1 quasi-random not queued" in n for n in outcome.notes)
    assert f"sampler: {engine.sampler_name} (auto); trained by origin: 1 baseline, 1 quasi-random" in outcome.notes
    assert any(n.startswith(f"warning: no trial came from the sampler ({engine.sampler_name})") for n in outcome.notes)
    study = optuna.load_study(study_name="s", storage=storage)
    assert study.user_attrs[R.SAMPLER_ATTR] == {"name": engine.sampler_name, "requested": "auto"}


def test_the_end_of_search_notes_count_the_sampler_trials_without_a_warning(tmp_path):
    space = lora_space()
    engine, storage = make_engine(tmp_path, FakeEvaluator(space), space, trials=5)
    outcome = engine.run()
    assert outcome.origins == {"baseline": 1, "quasi-random": 2, "sampler": 2}
    assert "sampler: random; trained by origin: 1 baseline, 2 quasi-random, 2 sampler" in outcome.notes
    assert not any("warning" in n for n in outcome.notes) and not _waiting(storage)


def test_points_a_time_budget_left_queued_are_not_run_and_queued_again_on_resume(tmp_path):
    space = lora_space()
    engine, storage = make_engine(tmp_path, FakeEvaluator(space), space, trials=None, time_budget=1e-6)
    outcome = engine.run()
    assert not _waiting(storage)
    not_run = stage_records(storage)["rung-0"]
    assert not_run and all(r.state == "pruned" and r.attrs[R.NOT_RUN] and not r.trained for r in not_run)
    assert "not run: the search ended first (time budget reached)" in not_run[0].attrs[R.REASON]
    assert any("were not run before the search ended" in n for n in outcome.notes)
    assert any("warning: no trial came from the sampler" in n for n in outcome.notes)

    evaluator = FakeEvaluator(space)
    engine, storage = make_engine(tmp_path, evaluator, space, storage=storage, trials=len(not_run) + 1)
    outcome = engine.run()
    trained = [r for r in stage_records(storage)["rung-0"] if r.trained]
    assert [r.origin for r in trained[:len(not_run)]] == [r.origin for r in not_run]   # the design, then the sampler
    assert trained[-1].origin == "sampler:random" and len(evaluator.calls) == len(not_run) + 1
    assert not _waiting(storage) and not any("warning" in n for n in outcome.notes)


def test_objective_names_and_the_training_loss_per_step_reach_the_optuna_studies(tmp_path):
    """Issue 19 (9): optuna-dashboard shows 'accuracy' and 'params', not 'Objective 0/1', and each trained trial's
    loss curve as its intermediate values (Trial.report refuses multi-objective studies)."""
    space = lora_space()
    rungs = [Fidelity(train_examples=0.5), Fidelity()]
    engine, storage = make_engine(tmp_path, FakeEvaluator(space), space, trials=4, rungs=rungs, eta=2,
                                  final_seeds=1)
    engine.run()
    names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    assert names == {"s", "s/rung-1", "s/final"}
    for name in names:
        study = optuna.load_study(study_name=name, storage=storage)
        assert study.metric_names == ["accuracy", "params"]
    for stage in ("rung-0", "rung-1"):
        trained = [r for r in stage_records(storage)[stage] if r.trained]
        assert trained and all("train_losses" not in r.attrs[R.RESULT] for r in trained)
        study = optuna.load_study(study_name="s" if stage == "rung-0" else "s/rung-1", storage=storage)
        assert all(study.trials[r.number].intermediate_values == {1: 0.7, 2: 0.6} for r in trained)
    final = stage_records(storage)["final"]
    assert final and all("train_losses" not in seed for r in final for seed in r.attrs[R.SEEDS])
    assert all("train_losses" not in entry["result"] for r in final for name, entry in r.attrs.items()
               if name.startswith(R.SEED_PREFIX))


class RecordingTracker:
    name = "recording"

    def __init__(self):
        self.trials, self.closed = [], False

    def log_trial(self, trial):
        self.trials.append(trial)

    def close(self):
        self.closed = True


def test_trackers_get_every_trained_trial_and_a_failing_tracker_stops_with_a_note(tmp_path):
    from autopeft.search.tracking import LOSS

    class Failing(RecordingTracker):
        name = "failing"

        def log_trial(self, trial):
            raise ConnectionError("cannot reach http://user:secret@tracker.example/api")

    space = lora_space()
    recording, failing = RecordingTracker(), Failing()
    plan = SearchPlan(objectives=OBJECTIVES, rungs=[Fidelity()], trials=3, sampler="random", final_seeds=2)
    storage = optuna.storages.InMemoryStorage()
    outcome = SearchEngine(space, FakeEvaluator(space), plan, storage, "s", tmp_path,
                           trackers=[failing, recording]).run()
    searched = [t for t in recording.trials if t.stage == "rung-0"]
    final = [t for t in recording.trials if t.stage == "final"]
    assert len(searched) == 3 and len(final) == len(outcome.front) and recording.closed
    first = searched[0]
    assert first.name == "s/rung-0#0" and first.params["origin"] == "baseline:lora"
    assert first.params["description"] == "lora size 8 on query/value of 2 layer(s)"
    assert "lora.size" in " ".join(first.params)
    assert {"accuracy", "params", "val_accuracy", "test_accuracy"} <= set(first.metrics)
    assert first.losses == {LOSS: [(1, 0.7), (2, 0.6)]} and first.tags["study"] == "s"
    assert set(final[0].losses) == {f"{LOSS}_seed_0", f"{LOSS}_seed_1"}
    assert final[0].metrics["accuracy"] == outcome.front[0].values["accuracy"]
    stopped = [n for n in outcome.notes if n.startswith("tracking with failing stopped")]
    assert len(stopped) == 1 and "secret" not in stopped[0] and "the search goes on" in stopped[0]


def test_the_summary_names_the_sampler_that_ran_and_counts_trials_by_origin(tmp_path):
    from autopeft.report import summary_markdown
    from autopeft.search.results import RunResults
    from autopeft.search.run import RunInfo

    space = lora_space()
    for trials, warned in ((2, True), (5, False)):
        engine, storage = make_engine(tmp_path, FakeEvaluator(space), space, trials=trials, sampler="auto")
        engine.run()
        stages = stage_records(storage)
        stage, front = R.search_front(stages, OBJECTIVES)
        info = RunInfo(tmp_path, "s", "sqlite:///x.db", False, True, OBJECTIVES, "accuracy", 2,
                       {"sampler": "auto", "trials": trials}, engine.sampler_name)
        summary = summary_markdown(RunResults(info, stages, stage, front, stage), [], plots={})
        assert f"- sampler: {engine.sampler_name} (auto)," in summary
        assert "## Trials by origin" in summary and "| baselines | 1 | 1 |" in summary
        assert ("| quasi-random (Sobol) | 1 | 1 |" if warned else "| quasi-random (Sobol) | 2 | 2 |") in summary
        assert ("**Warning:** no trial came from the sampler" in summary) == warned
        assert (f"| sampler: {engine.sampler_name} | 2 | 2 |" in summary) == (not warned)

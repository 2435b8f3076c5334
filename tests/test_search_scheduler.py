"""The scheduler's decisions over hand-made trial records (no storage), and the study store's one way of
marking a trial interrupted."""

from __future__ import annotations

import optuna
import pytest

from autopeft.search import parse_objectives
from autopeft.search import records as R
from autopeft.search.records import TrialRecord
from autopeft.search.scheduler import SPACE_EXHAUSTED, TRIAL_BUDGET_REACHED, Scheduler, Stop
from autopeft.search.store import Retry, StudyStore

optuna.logging.set_verbosity(optuna.logging.WARNING)
OBJECTIVES = parse_objectives(["metric", "params"], "accuracy", True)


def record(number: int, accuracy: float, params: float, rung: int = 0) -> TrialRecord:
    return TrialRecord(f"rung-{rung}", number, "complete", {"x": number}, {"accuracy": accuracy, "params": params},
                       {R.KEY: f"point-{number}", R.TRAINED: True})


def scheduler(rungs: int = 3, trials: int | None = 10, time_budget: float | None = None) -> Scheduler:
    return Scheduler(OBJECTIVES, rungs, eta=3, trials=trials, time_budget=time_budget, max_idle_suggestions=50)


def test_promotion_takes_the_best_of_each_third_once_and_serves_the_highest_rung_first():
    dominated = record(0, 0.60, 900)
    best = record(1, 0.90, 100)            # dominates the others
    middle = record(2, 0.70, 500)
    finished = {0: [dominated, best, middle], 1: [], 2: []}
    asked: list[int] = []

    def promoted(rung: int) -> set[str]:
        asked.append(rung)
        return set()

    promotion = scheduler().next_promotion(finished, promoted)
    assert promotion.rung == 1 and promotion.record is best and promotion.origin == "promoted from rung-0#1"
    assert asked == [1]                    # rung 1 holds no result: its quota is 0 and rung 2 is not looked at
    assert scheduler().next_promotion(finished, lambda rung: {best.key}) is None   # quota 3 // 3 = 1: taken
    assert scheduler().next_promotion({0: [dominated, best], 1: [], 2: []}, promoted) is None  # quota 0

    upper = [record(10 + i, 0.8 + i / 100, 100 + i, rung=1) for i in range(3)]
    promotion = scheduler().next_promotion({0: [dominated, best, middle], 1: upper, 2: []}, lambda rung: set())
    assert promotion.rung == 2 and promotion.record in upper


def test_a_rung_sends_up_no_more_than_its_quota_even_when_its_top_third_changes():
    early = [record(0, 0.70, 100), record(1, 0.60, 900), record(2, 0.50, 950)]
    first = scheduler().next_promotion({0: early, 1: [], 2: []}, lambda rung: set())
    assert first.record is early[0]
    better = early + [record(3, 0.95, 50), record(4, 0.4, 990)]   # 5 results: quota still 1, now topped by #3
    assert scheduler().next_promotion({0: better, 1: [], 2: []}, lambda rung: {early[0].key}) is None
    sixth = better + [record(5, 0.3, 999)]                          # 6 results: quota 2, the new best goes up
    assert scheduler().next_promotion({0: sixth, 1: [], 2: []}, lambda rung: {early[0].key}).record is better[3]
    # configurations that started at the upper rung (a raised first rung) are not this rung's promotions
    assert scheduler().next_promotion({0: early, 1: [], 2: []}, lambda rung: {"started-there"}).record is early[0]


def test_failed_and_repeated_points_do_not_count_towards_a_promotion_quota():
    failed = TrialRecord("rung-0", 3, "fail", {}, None, {R.KEY: "point-3", R.TRAINED: True})
    repeat = record(4, 0.9, 100)
    repeat.attrs[R.KEY] = "point-1"
    assert scheduler().next_promotion({0: [record(1, 0.9, 100), record(2, 0.8, 50), failed, repeat], 1: [], 2: []},
                                      lambda rung: set()) is None


def test_stop_policy_order_and_laziness():
    def never() -> int:
        raise AssertionError("not needed")

    unbounded = scheduler(trials=None)
    assert unbounded.stop_new_configurations(never, lambda: 3, cardinality=10, idle=0) is None
    assert scheduler().stop_new_configurations(lambda: 10, never, cardinality=10, idle=0) \
        == Stop(TRIAL_BUDGET_REACHED, after_running=True)
    assert scheduler().stop_new_configurations(lambda: 9, lambda: 10, cardinality=10, idle=0) \
        == Stop(SPACE_EXHAUSTED, after_running=True)
    idle = scheduler().stop_new_configurations(lambda: 9, lambda: 3, cardinality=float("inf"), idle=50)
    assert not idle.after_running and idle.reason.startswith("the sampler proposed 50 points in a row")
    assert unbounded.budget_filled(never) is False and scheduler().budget_filled(lambda: 10)


@pytest.mark.parametrize("idle, wanted", [(0, False), (4, False), (5, True), (7, False), (10, True)])
def test_a_random_point_is_queued_every_few_idle_suggestions(idle, wanted):
    assert Scheduler.wants_random_point(idle) is wanted


def test_time_budget():
    assert scheduler(time_budget=60).time_is_up(60.0) and not scheduler(time_budget=60).time_is_up(59.9)
    assert not scheduler(time_budget=None).time_is_up(1e9)


def test_interrupt_marks_fails_and_queues_a_retry_once():
    store = StudyStore(optuna.storages.InMemoryStorage(), "s", OBJECTIVES, seed=0)
    study = store.rung(0)
    store.queue(study, {}, "quasi-random", "point-a")
    trial = store.ask(study)
    assert store.interrupt(study, trial._trial_id, "a test", Retry.of(trial.number, {}, "quasi-random", "point-a"))
    failed, retry = study.get_trials(deepcopy=False)
    assert failed.state == optuna.trial.TrialState.FAIL and failed.user_attrs[R.STATUS] == R.INTERRUPTED
    assert failed.user_attrs[R.REASON] == "interrupted: a test"
    assert retry.state == optuna.trial.TrialState.WAITING
    assert retry.user_attrs == {R.ORIGIN: f"retry of #{failed.number}", R.KEY: "point-a"}
    assert Retry.of(retry.number, {}, retry.user_attrs[R.ORIGIN], "point-a") is None      # a retry is not retried
    assert not store.interrupt(study, failed._trial_id, "again")                           # already finished
    store.close()


def test_a_trial_left_running_mid_tell_is_not_a_result_its_retry_copies():
    """A driver SIGKILLed between a tell's writes leaves a RUNNING trial marked trained: on resume it is no result
    (before, its retry copied it and failed with an empty reason)."""
    storage = optuna.storages.InMemoryStorage()
    first = StudyStore(storage, "s", OBJECTIVES, seed=0)
    study = first.rung(0)
    first.queue(study, {}, "quasi-random", "point-a")
    trial = first.ask(study)
    trial.set_user_attr(R.TRAINED, True)   # the tell's first write; the process dies before the rest
    resumed = StudyStore(storage, "s", OBJECTIVES, seed=0)
    resumed.open(optuna.samplers.RandomSampler(seed=0), {}, rungs=1)
    assert "point-a" not in resumed.finished[0]
    first.close()
    resumed.close()

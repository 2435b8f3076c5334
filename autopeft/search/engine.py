"""The search loop: Optuna studies, budget, deduplication, MO-ASHA over fidelity rungs, final stage.

A backend (:mod:`autopeft.backends`) runs the trials: the local one in this process, one after
another; the Ray one several at once on a cluster. The engine hands out one job at a time: it
promotes a configuration to the next fidelity rung when MO-ASHA allows it (top 1/eta of its rung
by non-dominated rank, ties by hypervolume contribution), otherwise ask the sampler for a new
configuration at rung 0. Before anything trains, a point over ``max_params`` is recorded as
pruned, a point already evaluated at that rung reuses the stored result, and a point being trained
right now by another worker is recorded as a duplicate of it. After the budget,
the Pareto front of the highest rung is re-trained at full fidelity with several seeds.

Everything lives in the Optuna storage, so running the same search again resumes it: finished
trials are read back, trials left running by a dead process are marked failed (and retried once).
Several processes may search on one storage at once (:mod:`autopeft.search.lease`): each owns the
trials it runs, shares the trial budget, skips points another one trains or trained, and takes
over a trial only when its owner is gone.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from autopeft.backends.base import FINISHED, Backend, NextJob, TrialJob
from autopeft.backends.local import LocalBackend
from autopeft.errors import AutopeftError
from autopeft.search import records as R
from autopeft.search.evaluator import Evaluator
from autopeft.search.lease import LEASE, LeaseKeeper, Owner, owner_alive
from autopeft.search.initial_design import BASELINES, baseline_params, default_quasi_random_count, quasi_random_params
from autopeft.search.objectives import Objective
from autopeft.search.pareto import promotion_order
from autopeft.search.records import TrialRecord
from autopeft.search.samplers import SamplerContext, canonical_sampler_name, create_sampler
from autopeft.space import PeftPoint, SearchSpace, count_model_params, count_trainable_params
from autopeft.trial.fidelity import Fidelity
from autopeft.trial.result import TrialResult

INTERRUPTED = "interrupted"
RETRY_PREFIX = "retry of "
STUCK_AFTER = 5             # consecutive rejected/duplicate suggestions before a random feasible point is queued
RANDOM_FALLBACK_DRAWS = 2000
RECOVER_EVERY_SECONDS = 15.0  # how often a running search looks for trials whose owner process died
PEER_POLL_SECONDS = 2.0       # waiting for a final-stage point another process is training


@dataclass(frozen=True)
class SearchPlan:
    objectives: list[Objective]
    rungs: list[Fidelity]               # increasing fidelity; the last one is the full fidelity
    eta: int = 3
    trials: int | None = 20             # new configurations (rung 0) to train; promotions come on top
    time_budget: float | None = None    # seconds of this invocation before no new trial starts
    max_params: int | None = None
    seed: int = 0
    final_seeds: int = 3
    sampler: str = "auto"
    baselines: bool = True
    quasi_random: int | None = None     # None: about a fifth of the trials
    initial_points: tuple[tuple[dict[str, Any], str], ...] = ()   # (params, origin) from priors, queued first
    max_idle_suggestions: int = 200     # consecutive rejected/duplicate suggestions before giving up

    def __post_init__(self):
        if not self.rungs:
            raise AutopeftError("at least one fidelity rung is needed")
        if self.eta < 2:
            raise AutopeftError("--eta must be at least 2")
        if self.trials is None and self.time_budget is None:
            raise AutopeftError("give --trials or --time-budget (a search needs an end)")
        if self.trials is not None and self.trials < 1:
            raise AutopeftError("--trials must be at least 1")
        if self.time_budget is not None and self.time_budget <= 0:
            raise AutopeftError("--time-budget must be positive")
        if self.final_seeds < 0:
            raise AutopeftError("--final-seeds must be >= 0")

    def fingerprint(self, space: SearchSpace) -> dict[str, Any]:
        """What a resumed search must share with the stored one."""
        return {
            "objectives": [[o.name, o.direction] for o in self.objectives],
            "rungs": [r.to_dict() for r in self.rungs],
            "space": space.spec.model_dump(mode="json"),
            "seed": self.seed,
        }


@dataclass
class SearchProgress:
    new_trials: int
    target_trials: int | None
    elapsed_seconds: float
    time_budget: float | None
    front: list[TrialRecord]
    front_stage: str | None
    median_trial_seconds: float | None
    objectives: list[Objective]

    @property
    def eta_seconds(self) -> float | None:
        estimates = []
        if self.target_trials is not None and self.median_trial_seconds is not None:
            estimates.append(max(self.target_trials - self.new_trials, 0) * self.median_trial_seconds)
        if self.time_budget is not None:
            estimates.append(max(self.time_budget - self.elapsed_seconds, 0.0))
        return min(estimates) if estimates else None


class SearchObserver(Protocol):
    def on_note(self, message: str) -> None: ...
    def on_trial(self, record: TrialRecord, progress: SearchProgress) -> None: ...


class _SilentObserver:
    def on_note(self, message: str) -> None:
        pass

    def on_trial(self, record: TrialRecord, progress: SearchProgress) -> None:
        pass


@dataclass
class SearchOutcome:
    study_name: str
    front: list[TrialRecord]            # final-stage records when the final stage ran, else the search front
    front_stage: str | None
    stopped_because: str
    notes: list[str] = field(default_factory=list)
    median_suggest_seconds: float | None = None
    median_trial_seconds: float | None = None


@dataclass
class _Running:
    """A trial handed to the backend and not yet told."""

    study: optuna.Study
    trial: optuna.Trial
    params: dict[str, Any]
    rung: int
    origin: str
    key: str
    adapter_params: int


def point_key(point: PeftPoint) -> str:
    """Identity of a decoded point: two parameter sets that build the same adapter share it."""
    return json.dumps(point.to_dict(), sort_keys=True, default=str)


class SearchEngine:
    def __init__(self, space: SearchSpace, evaluator: Evaluator | None, plan: SearchPlan,
                 storage: optuna.storages.BaseStorage, study_name: str, run_dir: Path,
                 observer: SearchObserver | None = None, backend: Backend | None = None):
        if backend is None and evaluator is None:
            raise AutopeftError("a search needs an evaluator or a backend")
        self.space = space
        self.backend = backend or LocalBackend(evaluator)
        self.plan = plan
        self.storage = storage
        self.study_name = study_name
        self.run_dir = Path(run_dir)
        self.observer = observer or _SilentObserver()
        self.notes: list[str] = []
        self.sampler_name = canonical_sampler_name(plan.sampler)
        self.studies: dict[int, optuna.Study] = {}
        self.known: dict[int, dict[str, TrialRecord]] = {}   # rung -> point key -> finished (trained) record
        self._start = time.monotonic()
        self._idle = 0
        self._running: dict[str, _Running] = {}
        self._stopped: str | None = None
        self.owner = Owner.this_process()
        self.leases = LeaseKeeper(storage, self.owner)
        self._last_recovery = 0.0

    # ================================================================ public
    def run(self) -> SearchOutcome:
        self._start = time.monotonic()
        try:
            self._open_studies()
            self._recover_abandoned()
            self._initial_design()
            self._stopped = None
            self.backend.drive(self)
            if self.plan.final_seeds:
                self._wait_for_peers()
            front_stage, front = self._final_stage()
        finally:
            self.leases.close()
        return SearchOutcome(
            self.study_name, front, front_stage, self._stopped or "stopped", self.notes,
            median_suggest_seconds=self._median_attr(R.SUGGEST_SECONDS, sampler_only=True),
            median_trial_seconds=self._median_trial_seconds(),
        )

    # ============================================================ set-up
    def _note(self, message: str) -> None:
        self.notes.append(message)
        self.observer.on_note(message)

    def count_params(self, params: dict[str, Any]) -> int:
        return count_trainable_params(self.space.decode(params), self.space.model_config)

    def _directions(self) -> list[str]:
        return [o.direction for o in self.plan.objectives]

    def _existing_trials(self, name: str) -> int:
        if not R.study_exists(self.storage, name):
            return 0
        return len(self.storage.get_all_trials(self.storage.get_study_id_from_name(name), deepcopy=False))

    def _open_studies(self) -> None:
        main_name = R.rung_study_name(self.study_name, 0)
        context = SamplerContext(
            space=self.space, objectives=self.plan.objectives,
            seed=self.plan.seed + self._existing_trials(main_name),  # a resumed sampler must not replay its draws
            count_params=self.count_params, max_params=self.plan.max_params,
            model_params=count_model_params(self.space.model_config), expected_trials=self.plan.trials,
        )
        sampler = create_sampler(self.plan.sampler, context)
        self.studies[0] = self._study(main_name, sampler)
        fingerprint = self.plan.fingerprint(self.space)
        stored = self.studies[0].user_attrs.get(R.SETTINGS_ATTR)
        if stored is None:
            self.studies[0].set_user_attr(R.SETTINGS_ATTR, fingerprint)
        elif stored != fingerprint:
            changed = [k for k in fingerprint if stored.get(k) != fingerprint[k]]
            raise AutopeftError(
                f"study '{self.study_name}' in this storage was created with a different {', '.join(changed)}; "
                "resume it with the same settings or pass a new --study-name"
            )
        for rung in range(1, len(self.plan.rungs)):
            if R.study_exists(self.storage, R.rung_study_name(self.study_name, rung)):
                self.studies[rung] = self._study(R.rung_study_name(self.study_name, rung))
        for rung in range(len(self.plan.rungs)):
            self.known[rung] = {}
            if rung in self.studies:
                for trial in self.studies[rung].get_trials(deepcopy=False):
                    record = R.record_from_trial(trial, f"rung-{rung}", self.plan.objectives)
                    if record.trained and record.key is not None and record.attrs.get(R.STATUS) != INTERRUPTED:
                        self.known[rung].setdefault(record.key, record)

    def _study(self, name: str, sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study:
        try:
            return optuna.create_study(
                storage=self.storage, study_name=name, directions=self._directions(), load_if_exists=True,
                sampler=sampler or optuna.samplers.RandomSampler(seed=self.plan.seed),
            )
        except ValueError as exc:  # e.g. stored directions differ
            raise AutopeftError(f"cannot resume study '{name}': {exc}") from None

    def _rung_study(self, rung: int) -> optuna.Study:
        if rung not in self.studies:
            self.studies[rung] = self._study(R.rung_study_name(self.study_name, rung))
        return self.studies[rung]

    def _abandoned(self, trial: optuna.trial.FrozenTrial) -> bool:
        started = trial.datetime_start.timestamp() if trial.datetime_start else None
        return not owner_alive(trial.user_attrs.get(LEASE), self.owner, started)

    def _fail_interrupted(self, trial_id: int, why: str) -> bool:
        """Record a trial as interrupted and fail it; False when another worker finished or failed it first."""
        try:
            self.storage.set_trial_user_attr(trial_id, R.STATUS, INTERRUPTED)
            self.storage.set_trial_user_attr(trial_id, R.REASON, f"interrupted: {why}")
            return self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except UpdateFinishedTrialError:
            return False

    def _recover_abandoned(self) -> None:
        """Trials left RUNNING by a process that is gone: fail them with the reason and retry each point once.

        RUNNING trials of live processes (other workers on this storage) are left alone."""
        self._last_recovery = time.monotonic()
        for rung, study in list(self.studies.items()):
            for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if not self._abandoned(trial):
                    continue
                if not self._fail_interrupted(trial._trial_id, "the search process ended during this trial"):
                    continue
                retry = not str(trial.user_attrs.get(R.ORIGIN, "")).startswith(RETRY_PREFIX) and bool(trial.params)
                if retry:
                    study.enqueue_trial(trial.params, user_attrs={
                        R.ORIGIN: f"{RETRY_PREFIX}#{trial.number}", R.KEY: trial.user_attrs.get(R.KEY)})
                self._note(f"rung-{rung} trial #{trial.number} was interrupted; marked failed"
                           + (" and queued again" if retry else " (already a retry: not queued again)"))

    @staticmethod
    def _started(trial) -> tuple[float, int]:
        """Which of two trials was asked for first: by start time (a queued trial's number is older than its
        start), then by number."""
        start = trial.datetime_start.timestamp() if trial.datetime_start else math.inf
        return start, trial.number

    def _peer_trials(self, rung: int) -> tuple[dict[str, tuple[float, int]], int]:
        """Other live processes' RUNNING trials at ``rung`` (point key -> the earliest one's :meth:`_started`),
        and how many; their finished trained trials join ``self.known`` on the way."""
        running: dict[str, tuple[float, int]] = {}
        count = 0
        mine = {job.trial._trial_id for job in self._running.values()}
        for trial in self.studies[rung].get_trials(deepcopy=False):
            key = trial.user_attrs.get(R.KEY)
            if trial.state == TrialState.RUNNING:
                if trial._trial_id in mine or self._abandoned(trial):
                    continue
                count += 1
                if key is not None:
                    running[key] = min(running.get(key, self._started(trial)), self._started(trial))
            elif key is not None and key not in self.known[rung] and trial.user_attrs.get(R.TRAINED) \
                    and trial.user_attrs.get(R.STATUS) != INTERRUPTED:
                self.known[rung][key] = R.record_from_trial(trial, f"rung-{rung}", self.plan.objectives)
        return running, count

    def _initial_design(self) -> None:
        study = self.studies[0]
        if study.user_attrs.get(R.INITIAL_DESIGN_ATTR):
            return
        queued: set[str] = set()

        def enqueue(params: dict[str, Any], origin: str) -> bool:
            point = self.space.decode(params)
            key = point_key(point)
            if key in queued:
                return False
            if self.plan.max_params is not None and self.count_params(params) > self.plan.max_params:
                self._note(f"initial point {origin} skipped: {self.count_params(params):,} params > --max-params")
                return False
            queued.add(key)
            study.enqueue_trial(params, user_attrs={R.ORIGIN: origin, R.KEY: key})  # keyed now: peers see it
            return True

        for params, origin in self.plan.initial_points:
            enqueue(params, origin)
        if self.plan.baselines:
            for baseline in BASELINES:
                params, why = baseline_params(self.space, baseline)
                if params is None:
                    self._note(f"baseline '{baseline.name}' skipped: {why}")
                else:
                    enqueue(params, f"baseline:{baseline.name}")
        count = self.plan.quasi_random
        if count is None:
            count = default_quasi_random_count(self.plan.trials, len(self.space.dimensions))
        for params in quasi_random_params(self.space, count, self.plan.seed):
            enqueue(params, "quasi-random")
        study.set_user_attr(R.INITIAL_DESIGN_ATTR, True)

    # ============================================================ the loop
    def _elapsed(self) -> float:
        return time.monotonic() - self._start

    def _new_trials_done(self) -> int:
        return sum(1 for t in self.studies[0].get_trials(deepcopy=False) if t.user_attrs.get(R.TRAINED))

    def _running_at(self, rung: int) -> int:
        return sum(1 for job in self._running.values() if job.rung == rung)

    def _stop(self, why: str) -> NextJob:
        """No new trial starts; the search ends once the running ones are told."""
        self._stopped = self._stopped or why
        return None if self._running else FINISHED

    # ------------------------------------------------------- JobSource
    def next_job(self) -> NextJob:
        """The next trial to train, None to wait for a running one, or FINISHED."""
        while True:
            if self._stopped:
                return self._stop(self._stopped)
            if self.plan.time_budget is not None and self._elapsed() >= self.plan.time_budget:
                return self._stop("time budget reached")
            if time.monotonic() - self._last_recovery > RECOVER_EVERY_SECONDS:
                self._recover_abandoned()
            rung = self._promotion_rung()
            if rung is not None:
                job = self._ask(rung)
                if job is not None:
                    return job
                continue
            if self.plan.trials is not None and \
                    self._new_trials_done() + self._running_at(0) + self._peer_trials(0)[1] >= self.plan.trials:
                if self._running:  # a running trial may still earn a promotion
                    return None
                return self._stop("trial budget reached")
            if len(self.known[0]) + self._running_at(0) >= self.space.cardinality():
                if self._running:
                    return None
                return self._stop("every point of the space has been evaluated")
            if self._idle >= self.plan.max_idle_suggestions:
                return self._stop(f"the sampler proposed {self._idle} points in a row that were over --max-params, "
                                  "empty or already evaluated")
            if self._idle and self._idle % STUCK_AFTER == 0 and not self._enqueue_random_point():
                return self._stop("no new point within --max-params found by random sampling")
            job = self._ask(0)
            if job is not None:
                return job

    def finish_job(self, job_id: str, result: TrialResult) -> None:
        running = self._running.pop(job_id)
        self.leases.release(running.trial._trial_id)
        try:
            self._tell_result(running.study, running.trial, result, running.adapter_params)
        except UpdateFinishedTrialError:  # our lease lapsed (the process was suspended) and a peer took it over
            self._note(f"rung-{running.rung} trial #{running.trial.number} was taken over by another worker while it "
                       "trained (its lease lapsed); the result stays with the retry")
            return
        record = self._record(running.study, running.trial, running.rung)
        self.known[running.rung][running.key] = record
        self._idle = 0
        self.observer.on_trial(record, self._progress())

    def abandon_jobs(self) -> None:
        """Running trials of a stopped search fail as interrupted and are queued to run again once."""
        for running in self._running.values():
            self.leases.release(running.trial._trial_id)
            if not self._fail_interrupted(running.trial._trial_id, "the search stopped during this trial"):
                continue
            if not running.origin.startswith(RETRY_PREFIX):
                running.study.enqueue_trial(running.params, user_attrs={
                    R.ORIGIN: f"{RETRY_PREFIX}#{running.trial.number}", R.KEY: running.key})
        self._running.clear()

    # ------------------------------------------------------------------
    def _enqueue_random_point(self) -> bool:
        """Samplers that learn nothing from rejected points can repeat them; queue a fresh feasible one."""
        study = self.studies[0]
        seen = {t.user_attrs.get(R.KEY) for t in study.get_trials(deepcopy=False)}
        rng = np.random.default_rng(self.plan.seed + len(seen) + self._idle)
        for _ in range(RANDOM_FALLBACK_DRAWS):
            params = self.space.active_params(self.space.sample(rng))
            point = self.space.decode(params)
            if point_key(point) in seen:
                continue
            size = count_trainable_params(point, self.space.model_config)
            if size == 0 or (self.plan.max_params is not None and size > self.plan.max_params):
                continue
            study.enqueue_trial(params, user_attrs={R.ORIGIN: f"random (the sampler repeated {STUCK_AFTER} rejected, "
                                                               "empty or duplicate points)", R.KEY: point_key(point)})
            return True
        return False

    def _promotion_rung(self) -> int | None:
        """A rung with a queued promotion (queuing a new one if MO-ASHA allows it), else None."""
        for rung in range(len(self.plan.rungs) - 1, 0, -1):
            if rung in self.studies and self.studies[rung].get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                return rung
        for rung in range(len(self.plan.rungs) - 2, -1, -1):
            done = R.distinct_complete(list(self.known[rung].values()))
            quota = len(done) // self.plan.eta
            if quota == 0:
                continue
            already = {t.user_attrs.get(R.KEY) for t in self._rung_study(rung + 1).get_trials(deepcopy=False)}
            order = promotion_order(np.array([r.losses(self.plan.objectives) for r in done]))
            for index in order[:quota]:
                record = done[index]
                if record.key not in already:
                    self.studies[rung + 1].enqueue_trial(record.params, user_attrs={
                        R.ORIGIN: f"promoted from {record.label}", R.KEY: record.key})
                    return rung + 1
        return None

    def _ask(self, rung: int) -> TrialJob | None:
        """Ask the rung's study for a trial; a point that needs no training is told at once (None)."""
        study = self.studies[rung]
        start = time.perf_counter()
        trial = study.ask()
        self.leases.hold(trial._trial_id)  # first, so that no other worker takes it for abandoned
        params = self.space.suggest(trial)
        suggest_seconds = time.perf_counter() - start
        origin = trial.user_attrs.get(R.ORIGIN) or f"sampler:{self.sampler_name}"
        point = self.space.decode(params)
        key = point_key(point)
        trial.set_user_attr(R.KEY, key)  # before looking at the peers' trials: they look at ours the same way
        adapter_params = count_trainable_params(point, self.space.model_config)
        for name, value in ((R.RUNG, rung), (R.ADAPTER_PARAMS, adapter_params),
                            (R.POINT, point.to_dict()), (R.DESCRIPTION, point.describe()), (R.ORIGIN, origin),
                            (R.SUGGEST_SECONDS, suggest_seconds)):
            trial.set_user_attr(name, value)
        if not self._told_without_training(study, trial, rung, key, adapter_params) \
                and not self._over_shared_budget(study, trial, rung):
            job = TrialJob(f"rung-{rung}-{trial.number}", point, self.plan.rungs[rung], self.plan.seed)
            self._running[job.id] = _Running(study, trial, params, rung, origin, key, adapter_params)
            return job
        self.leases.release(trial._trial_id)
        self._idle += 1
        self.observer.on_trial(self._record(study, trial, rung), self._progress())
        return None

    def _told_without_training(self, study: optuna.Study, trial: optuna.Trial, rung: int, key: str,
                               adapter_params: int) -> bool:
        if self.plan.max_params is not None and adapter_params > self.plan.max_params:
            trial.set_user_attr(R.REASON, f"over --max-params: {adapter_params:,} > {self.plan.max_params:,} (not trained)")
            study.tell(trial, state=TrialState.PRUNED)
            return True
        if adapter_params == 0:  # every module off: nothing to tune (samplers such as BoTorch's propose these)
            trial.set_user_attr(R.REASON, "every module is off: no PEFT module to train (not trained)")
            study.tell(trial, state=TrialState.PRUNED)
            return True
        running = next((r.trial.number for r in self._running.values() if r.rung == rung and r.key == key), None)
        peers, _ = self._peer_trials(rung)  # also brings in what other workers on this storage finished
        mine = self._started(self.storage.get_trial(trial._trial_id))
        if running is None and key in peers and peers[key] < mine:  # the trial asked for first trains the point
            running = peers[key][1]
        if running is not None:
            trial.set_user_attr(R.DUPLICATE_OF, running)
            trial.set_user_attr(R.REASON, f"the same point is being trained as trial #{running} (not trained)")
            study.tell(trial, state=TrialState.PRUNED)
            return True
        previous = self.known[rung].get(key)
        if previous is None:
            return False
        trial.set_user_attr(R.DUPLICATE_OF, previous.number)
        for name in (R.STATUS, R.REASON, R.RESULT):
            if name in previous.attrs:
                trial.set_user_attr(name, previous.attrs[name])
        if previous.complete:
            study.tell(trial, [previous.values[o.name] for o in self.plan.objectives])
        else:
            study.tell(trial, state=TrialState.FAIL)
        return True

    def _over_shared_budget(self, study: optuna.Study, trial: optuna.Trial, rung: int) -> bool:
        """Several workers may ask for a trial at once: only the first ``trials`` asked for train."""
        if rung != 0 or self.plan.trials is None:
            return False
        mine = self._started(self.storage.get_trial(trial._trial_id))
        ahead = sum(1 for t in study.get_trials(deepcopy=False) if t.number != trial.number and (
            t.user_attrs.get(R.TRAINED) or (t.state == TrialState.RUNNING and self._started(t) < mine
                                            and not self._abandoned(t))))
        if ahead < self.plan.trials:
            return False
        trial.set_user_attr(R.REASON, f"the trial budget ({self.plan.trials}) was filled by other workers (not trained)")
        study.tell(trial, state=TrialState.PRUNED)
        return True

    def _wait_for_peers(self) -> None:
        """Trials other workers are running as this search loop ends finish (or lose their owner) before the
        final stage, so that every worker re-trains the same front."""
        waiting = {rung: {t._trial_id for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                          if not self._abandoned(t)} for rung, study in self.studies.items()}
        announced = False
        while any(waiting.values()):
            if not announced:
                self._note(f"waiting for {sum(map(len, waiting.values()))} trial(s) other workers are running")
                announced = True
            time.sleep(PEER_POLL_SECONDS)
            self._recover_abandoned()
            for rung, ids in waiting.items():
                states = {t._trial_id: t for t in self.studies[rung].get_trials(deepcopy=False)}
                waiting[rung] = {i for i in ids if states[i].state == TrialState.RUNNING and not self._abandoned(states[i])}
        for rung in self.studies:
            self._peer_trials(rung)  # their results join the front

    def _tell_result(self, study: optuna.Study, trial: optuna.Trial, result: TrialResult, adapter_params: int) -> None:
        trial.set_user_attr(R.TRAINED, True)
        trial.set_user_attr(R.STATUS, result.status)
        trial.set_user_attr(R.RESULT, result.to_dict())
        if result.reason:
            trial.set_user_attr(R.REASON, result.reason)
        if not result.ok:
            study.tell(trial, state=TrialState.FAIL)
            return
        try:
            values = [o.value(result, adapter_params) for o in self.plan.objectives]
        except KeyError as exc:
            trial.set_user_attr(R.STATUS, "error")
            trial.set_user_attr(R.REASON, f"error: {exc.args[0]}")
            study.tell(trial, state=TrialState.FAIL)
            return
        if not all(math.isfinite(v) for v in values):
            trial.set_user_attr(R.STATUS, "error")
            trial.set_user_attr(R.REASON, f"error: non-finite objective values {values}")
            study.tell(trial, state=TrialState.FAIL)
            return
        study.tell(trial, values)

    def _record(self, study: optuna.Study, trial: optuna.Trial, rung: int | None) -> TrialRecord:
        frozen = self.storage.get_trial(trial._trial_id)  # one row, not the whole study
        stage = "final" if rung is None else f"rung-{rung}"
        return R.record_from_trial(frozen, stage, self.plan.objectives)

    # ============================================================ progress
    def _front_now(self) -> tuple[str | None, list[TrialRecord]]:
        for rung in range(len(self.plan.rungs) - 1, -1, -1):
            front = R.pareto_records(list(self.known[rung].values()), self.plan.objectives)
            if front:
                return f"rung-{rung}", front
        return None, []

    def _progress(self) -> SearchProgress:
        stage, front = self._front_now()
        return SearchProgress(self._new_trials_done(), self.plan.trials, self._elapsed(), self.plan.time_budget,
                              front, stage, self._median_trial_seconds(), self.plan.objectives)

    def _median_trial_seconds(self) -> float | None:
        times = [r.attrs[R.RESULT]["wall_seconds"] for known in self.known.values() for r in known.values()
                 if R.RESULT in r.attrs]
        return statistics.median(times) if times else None

    def _median_attr(self, name: str, sampler_only: bool) -> float | None:
        values = [t.user_attrs[name] for t in self.studies[0].get_trials(deepcopy=False)
                  if name in t.user_attrs and (not sampler_only or str(t.user_attrs.get(R.ORIGIN, "")).startswith("sampler:"))]
        return statistics.median(values) if values else None

    # ============================================================ final stage
    def _final_stage(self) -> tuple[str | None, list[TrialRecord]]:
        """The front of the highest rung re-trained at full fidelity with ``final_seeds`` seeds each.

        Each seed is kept as soon as it is trained (a user attribute of the final trial, its adapter under
        ``adapters/.seeds``), so an interrupted final stage resumes with the seeds still missing. A point
        another live worker is re-training is waited for, not trained twice."""
        stage, front = self._front_now()
        if self.plan.final_seeds == 0 or not front:
            if not front:
                self._note("no trial finished: there is no Pareto front")
            return stage, front
        study = self._study(R.final_study_name(self.study_name))
        self._recover_abandoned_final(study)
        self._note(f"final stage: {len(front)} Pareto point(s) of {stage}, {self.plan.final_seeds} seed(s) each "
                   "at full fidelity")
        finished = self._final_records(study)
        todo = [r for r in front if r.key not in finished]
        while todo:
            peers = self._final_peers(study)
            mine = [r for r in todo if r.key not in peers]
            if mine:
                self._train_final(study, mine)
            finished = self._final_records(study)
            todo = [r for r in todo if r.key not in finished]
            if todo:  # another worker is re-training these right now
                time.sleep(PEER_POLL_SECONDS)
                self._recover_abandoned_final(study)
        return "final", R.pareto_records([finished[r.key] for r in front if r.key in finished], self.plan.objectives)

    def _final_records(self, study: optuna.Study) -> dict[str, TrialRecord]:
        finished: dict[str, TrialRecord] = {}
        for trial in study.get_trials(deepcopy=False):
            record = R.record_from_trial(trial, "final", self.plan.objectives)
            if record.trained and record.key is not None and trial.state.is_finished():
                finished.setdefault(record.key, record)
        return finished

    def _final_peers(self, study: optuna.Study, before: tuple[float, int] | None = None) -> dict[str, int]:
        """Point key -> number of the final trial a live process (this one included) is running for it
        (only those asked for before ``before``, a :meth:`_started`, when given)."""
        peers: dict[str, tuple[float, int]] = {}
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            key = trial.user_attrs.get(R.KEY)
            if key is None or self._abandoned(trial) or (before is not None and self._started(trial) >= before):
                continue
            peers[key] = min(peers.get(key, self._started(trial)), self._started(trial))
        return {key: started[1] for key, started in peers.items()}

    def _recover_abandoned_final(self, study: optuna.Study) -> None:
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if self._abandoned(trial) and self._fail_interrupted(trial._trial_id, "the search process ended "
                                                                                 "during this trial"):
                kept = sum(1 for name in trial.user_attrs if name.startswith(R.SEED_PREFIX))
                self._note(f"final trial #{trial.number} was interrupted; {kept} finished seed(s) kept")

    def _kept_seeds(self, study: optuna.Study, key: str) -> dict[int, dict[str, Any]]:
        """Seeds of ``key`` that interrupted final trials finished (with their adapter still on disk)."""
        kept: dict[int, dict[str, Any]] = {}
        for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
            if trial.user_attrs.get(R.KEY) != key:
                continue
            for name, entry in trial.user_attrs.items():
                if name.startswith(R.SEED_PREFIX) and (entry.get("adapter") is None
                                                       or (self.run_dir / entry["adapter"]).is_dir()):
                    kept.setdefault(int(entry["seed"]), entry)
        return kept

    def _train_final(self, study: optuna.Study, records: list[TrialRecord]) -> None:
        seeds_root = self.run_dir / "adapters" / ".seeds"
        seeds = [self.plan.seed + index for index in range(self.plan.final_seeds)]
        pending: list[tuple[optuna.Trial, int]] = []
        jobs: list[TrialJob] = []
        owner: dict[str, tuple[optuna.Trial, int]] = {}
        for record in records:
            study.enqueue_trial(record.params, user_attrs={R.ORIGIN: f"front of {record.label}", R.KEY: record.key})
        for _ in records:
            trial = study.ask()  # the oldest queued trial: ours, or one a peer queued (a peer may pop ours)
            self.leases.hold(trial._trial_id)
            key = trial.user_attrs.get(R.KEY)
            if key is None:  # the queue was empty (peers took the rest): a sampled point is no front point
                trial.set_user_attr(R.REASON, "no queued front point left (other workers took them; not trained)")
                study.tell(trial, state=TrialState.PRUNED)
                self.leases.release(trial._trial_id)
                break
            point = self.space.decode(self.space.suggest(trial))
            adapter_params = count_trainable_params(point, self.space.model_config)
            for name, value in ((R.ADAPTER_PARAMS, adapter_params), (R.POINT, point.to_dict()),
                                (R.DESCRIPTION, point.describe())):
                trial.set_user_attr(name, value)
            earlier = self._final_peers(study, before=self._started(self.storage.get_trial(trial._trial_id))).get(key)
            if earlier is None and key in self._final_records(study):  # a peer finished it since we looked
                earlier = self._final_records(study)[key].number
            if earlier is not None:  # a peer asked for the same point first: it trains it
                trial.set_user_attr(R.DUPLICATE_OF, earlier)
                trial.set_user_attr(R.REASON, f"the same point is being trained as final trial #{earlier} (not trained)")
                study.tell(trial, state=TrialState.PRUNED)
                self.leases.release(trial._trial_id)
                continue
            kept = self._kept_seeds(study, key)
            for seed in seeds:
                if seed in kept:
                    trial.set_user_attr(f"{R.SEED_PREFIX}{seed}", kept[seed])
                else:
                    job = TrialJob(f"final-{trial.number}-seed-{seed}", point, self.plan.rungs[-1], seed,
                                   evaluate_test=True, save_adapter=True)
                    jobs.append(job)
                    owner[job.id] = (trial, seed)
            if kept:
                self._note(f"final trial #{trial.number}: {len(set(kept) & set(seeds))} seed(s) kept from an "
                           "interrupted final stage")
            pending.append((trial, adapter_params))

        def keep(job: TrialJob, result: TrialResult) -> None:  # each seed is stored the moment it is trained
            trial, seed = owner[job.id]
            adapter = seeds_root / job.id
            trial.set_user_attr(f"{R.SEED_PREFIX}{seed}", {
                "seed": seed, "result": result.to_dict(),
                "adapter": str(adapter.relative_to(self.run_dir)) if adapter.is_dir() else None})

        try:
            self.backend.run_all(jobs, seeds_root, on_result=keep)
        except BaseException:
            for trial, _ in pending:
                self.leases.release(trial._trial_id)
                self._fail_interrupted(trial._trial_id, "the search stopped during this trial")
            raise
        for trial, adapter_params in pending:
            self.leases.release(trial._trial_id)
            try:
                self._tell_final(study, trial, adapter_params, seeds)
            except UpdateFinishedTrialError:
                self._note(f"final trial #{trial.number} was taken over by another worker (its lease lapsed)")

    def _tell_final(self, study: optuna.Study, trial: optuna.Trial, adapter_params: int, seeds: list[int]) -> None:
        """Mean and spread over the seeds; the adapter of the first seed that trained becomes final-<n>."""
        attrs = self.storage.get_trial(trial._trial_id).user_attrs
        entries = [attrs[f"{R.SEED_PREFIX}{seed}"] for seed in seeds if f"{R.SEED_PREFIX}{seed}" in attrs]
        seed_results = [TrialResult(**entry["result"]) for entry in entries]
        trial.set_user_attr(R.TRAINED, True)
        trial.set_user_attr(R.SEEDS, [r.to_dict() for r in seed_results])
        ok = [(entry, r) for entry, r in zip(entries, seed_results) if r.ok]
        if not ok:
            trial.set_user_attr(R.STATUS, seed_results[0].status if seed_results else "error")
            trial.set_user_attr(R.REASON, "; ".join(sorted({r.reason or r.status for r in seed_results})) or "no seed ran")
            study.tell(trial, state=TrialState.FAIL)
            return
        try:
            per_seed = np.array([[o.value(r, adapter_params) for o in self.plan.objectives] for _, r in ok])
        except KeyError as exc:
            trial.set_user_attr(R.STATUS, "error")
            trial.set_user_attr(R.REASON, f"error: {exc.args[0]}")
            study.tell(trial, state=TrialState.FAIL)
            return
        trial.set_user_attr(R.STATUS, "ok")
        trial.set_user_attr(R.VALUES_STD, dict(zip([o.name for o in self.plan.objectives], per_seed.std(axis=0).tolist())))
        test_names = sorted(set.intersection(*(set(r.test_metrics) for _, r in ok)))
        trial.set_user_attr(R.TEST_METRICS, {m: float(np.mean([r.test_metrics[m] for _, r in ok])) for m in test_names})
        trial.set_user_attr(R.TEST_METRICS_STD, {m: float(np.std([r.test_metrics[m] for _, r in ok])) for m in test_names})
        saved = next((self.run_dir / e["adapter"] for e, _ in ok if e.get("adapter")
                      and (self.run_dir / e["adapter"]).is_dir()), None)
        if saved is not None:
            final_dir = self.run_dir / "adapters" / f"final-{trial.number}"
            shutil.rmtree(final_dir, ignore_errors=True)
            saved.rename(final_dir)
            trial.set_user_attr(R.ADAPTER_DIR, str(final_dir.relative_to(self.run_dir)))
        for entry in entries:  # the other seeds' adapters are not exported
            if entry.get("adapter"):
                shutil.rmtree(self.run_dir / entry["adapter"], ignore_errors=True)
        study.tell(trial, per_seed.mean(axis=0).tolist())

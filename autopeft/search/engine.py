"""The search loop: the coordinator between a sampler, the scheduler, the study store and a backend.

A backend (:mod:`autopeft.backends`) runs the trials: the local one in this process, one after
another; the Ray one several at once on a cluster. The engine hands out one job at a time: a
promotion to the next fidelity rung when MO-ASHA allows it (:mod:`autopeft.search.scheduler`),
otherwise a new configuration from the sampler at rung 0. Before anything trains, a point over
``max_params`` is recorded as pruned, a point already evaluated at that rung reuses the stored
result, and a point being trained right now by another worker is recorded as a duplicate of it.
After the budget, the Pareto front of the highest rung is re-trained at full fidelity with several
seeds (:mod:`autopeft.search.final_stage`).

Everything lives in the Optuna storage (:mod:`autopeft.search.store`), so running the same search
again resumes it: finished trials are read back, trials left running by a dead process are marked
failed (and retried once). Several processes may search on one storage at once
(:mod:`autopeft.search.lease`): each owns the trials it runs, shares the trial budget, skips points
another one trains or trained, and takes over a trial only when its owner is gone.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.exceptions import UpdateFinishedTrialError

from autopeft.backends.base import FINISHED, Backend, Evaluator, NextJob, TrialJob
from autopeft.backends.local import LocalBackend
from autopeft.errors import AutopeftError
from autopeft.search import records as R
from autopeft.search.checkpoints import PointCheckpoints
from autopeft.search.feasibility import OVER_BUDGET, infeasible_reason, penalised_values
from autopeft.search.final_stage import PEER_POLL_SECONDS, FinalStage
from autopeft.search.initial_design import BASELINES, baseline_params, default_quasi_random_count, quasi_random_params
from autopeft.search.objectives import Objective
from autopeft.search.progress import FINAL, SearchObserver, SearchProgress, logged, median_seconds_by_rung
from autopeft.search.records import TrialRecord
from autopeft.search.samplers import SamplerContext, canonical_sampler_name, create_sampler
from autopeft.search.scheduler import NO_RANDOM_POINT, STUCK_AFTER, TIME_BUDGET_REACHED, Scheduler, raise_first_rung
from autopeft.search.store import PROCESS_ENDED, SEARCH_STOPPED, Retry, StudyStore
from autopeft.search.tracking.base import Tracker, Tracking
from autopeft.space import PeftPoint, SearchSpace, count_model_params, count_trainable_params
from autopeft.trial.fidelity import Fidelity
from autopeft.trial.result import TrialResult

RANDOM_FALLBACK_DRAWS = 2000
RECOVER_EVERY_SECONDS = 15.0  # how often a running search looks for trials whose owner process died


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
    unavailable: dict[str, str] = field(default_factory=dict)   # module types this search cannot build -> why
    auto_first_rung: bool = False       # --fidelity auto: the rung new configurations start at may go up

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
class SearchOutcome:
    study_name: str
    front: list[TrialRecord]            # final-stage records when the final stage ran, else the search front
    front_stage: str | None
    stopped_because: str
    notes: list[str] = field(default_factory=list)
    median_suggest_seconds: float | None = None
    median_trial_seconds: float | None = None
    sampler: str | None = None          # the sampler that ran ("auto" resolved)
    origins: dict[str, int] = field(default_factory=dict)   # origin group -> trials trained (records.ORIGIN_GROUPS)


@dataclass
class _Running:
    """A trial handed to the backend and not yet told."""

    trial: optuna.Trial
    rung: int
    key: str
    adapter_params: int
    retry: Retry | None          # queued again if the search stops while it trains
    new: bool = True             # a new configuration (not a promotion): counts towards the trial budget


def point_key(point: PeftPoint) -> str:
    """Identity of a decoded point: two parameter sets that build the same adapter share it."""
    return json.dumps(point.to_dict(), sort_keys=True, default=str)


class SearchEngine:
    """One search: opens its studies, queues the initial design, hands the backend one job at a time
    (the backend's :class:`~autopeft.backends.base.JobSource`) and runs the final stage."""

    def __init__(self, space: SearchSpace, evaluator: Evaluator | None, plan: SearchPlan,
                 storage: optuna.storages.BaseStorage, study_name: str, run_dir: Path,
                 observer: SearchObserver | None = None, backend: Backend | None = None,
                 trackers: Sequence[Tracker] = ()):
        if backend is None and evaluator is None:
            raise AutopeftError("a search needs an evaluator or a backend")
        self.space = space
        self.backend = backend or LocalBackend(evaluator)
        self.plan = plan
        self.study_name = study_name
        self.run_dir = Path(run_dir)
        self.observer = logged(observer)   # every note and trial also goes to the log (terminal, run's log file)
        self.notes: list[str] = []
        self.sampler_name = canonical_sampler_name(plan.sampler)
        self.tracking = Tracking(trackers, self._note)   # MLflow / W&B runs of the trials (--tracking)
        self.store = StudyStore(storage, study_name, plan.objectives, plan.seed)
        self.scheduler = Scheduler(plan.objectives, len(plan.rungs), plan.eta, plan.trials, plan.time_budget,
                                   plan.max_idle_suggestions)
        self._start = time.monotonic()
        self._idle = 0
        self._running: dict[str, _Running] = {}
        self._stopped: str | None = None
        self._last_recovery = 0.0
        # a promoted point continues its lower rung's training (step rungs); the final stage reuses the top rung's
        self.checkpoints = PointCheckpoints(self.run_dir, tuple(plan.rungs), plan.seed)
        self.first_rung = 0          # where new configurations start (read from the store when the studies open)

    @property
    def studies(self) -> dict[int, optuna.Study]:
        """The search's Optuna studies by rung."""
        return self.store.studies

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
            self._drop_unrun()
            origins = self._report_origins()
            self._record_agreement()
            front_stage, front = self._front_now()
            if not front:
                self._note(self._why_no_front())
            elif self.plan.final_seeds:
                seeds = [self.plan.seed + index for index in range(self.plan.final_seeds)]
                final = FinalStage(self.store, self.space, self.backend, self.run_dir, self.plan.rungs[-1], seeds,
                                   self._note, self.checkpoints, track=self._track if self.tracking else None,
                                   on_seed=lambda done, total: self.observer.on_stage(self._progress(done, total)))
                front_stage, front = final.run(front_stage, front)
        finally:
            self.store.close()
            self.tracking.close()
        return SearchOutcome(
            self.study_name, front, front_stage, self._stopped or "stopped", self.notes,
            median_suggest_seconds=self.store.median_suggest_seconds(),
            median_trial_seconds=self._median_trial_seconds(),
            sampler=self.sampler_name, origins=origins,
        )

    # ============================================================ set-up
    def _note(self, message: str) -> None:
        self.notes.append(message)
        self.observer.on_note(message)

    def count_params(self, params: dict[str, Any]) -> int:
        return count_trainable_params(self.space.decode(params), self.space.model_config)

    def _open_studies(self) -> None:
        context = SamplerContext(
            space=self.space, objectives=self.plan.objectives,
            seed=self.plan.seed + self.store.trial_count(),  # a resumed sampler must not replay its draws
            count_params=self.count_params, max_params=self.plan.max_params,
            model_params=count_model_params(self.space.model_config), expected_trials=self.plan.trials,
            unavailable=self.plan.unavailable,
        )
        sampler = create_sampler(self.plan.sampler, context)
        self.store.open(sampler, self.plan.fingerprint(self.space), len(self.plan.rungs))
        self.store.set_sampler(self.sampler_name, self.plan.sampler)
        self.first_rung = self.store.first_rung()
        if self.first_rung:  # a resumed search whose lowest rung went up: the sampler proposes there
            self.store.propose_at(self.first_rung, create_sampler(self.plan.sampler, context))
        self._sampler_context = context

    def _recover_abandoned(self) -> None:
        """Trials left RUNNING by a process that is gone: fail them with the reason and retry each point once.

        RUNNING trials of live processes (other workers on this storage) are left alone."""
        self._last_recovery = time.monotonic()
        for rung, study in list(self.store.studies.items()):
            for trial in self.store.abandoned_trials(study):
                retry = Retry.of_abandoned(trial)
                if self.store.interrupt(study, trial._trial_id, PROCESS_ENDED, retry):
                    self._note(f"rung-{rung} trial #{trial.number} was interrupted; marked failed"
                               + (" and queued again" if retry else " (already a retry: not queued again)"))

    def _initial_design(self) -> None:
        """Queue the priors' starting points, the baselines and the Sobol points, in that order, as many as the trial
        budget holds: a point queued beyond it would stay WAITING in the study. A resumed search queues again what
        an earlier run left not run (:meth:`_drop_unrun`)."""
        if self.store.initial_design_done():
            for rung in self.store.studies:
                self.store.queue_not_run(rung)
            return
        study = self.store.studies[0]
        queued: set[str] = set()
        left_out: list[str] = []

        def enqueue(params: dict[str, Any], origin: str) -> bool:
            point = self.space.decode(params)
            key = point_key(point)
            if key in queued:
                return False
            size = self.count_params(params)
            if self.plan.max_params is not None and size > self.plan.max_params:
                self._note(f"initial point {origin} skipped: {size:,} params > --max-params")
                return False
            why = infeasible_reason(point, size, self.plan.max_params, self.plan.unavailable)
            if why is not None:
                if not origin.startswith("quasi-random"):  # a design point is replaced by the next one
                    self._note(f"initial point {origin} skipped: {why}")
                return False
            if self.plan.trials is not None and len(queued) >= self.plan.trials:
                left_out.append(origin)
                return False
            queued.add(key)
            self.store.queue(study, params, origin, key)
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
        if self.plan.trials is not None:
            left_out += [R.QUASI_RANDOM] * max(0, count - (self.plan.trials - len(queued)))
            count = min(count, self.plan.trials - len(queued))
        design = iter(quasi_random_params(self.space, 4 * count, self.plan.seed))  # spares for points that cannot train
        while count > 0 and (params := next(design, None)) is not None:
            count -= enqueue(params, R.QUASI_RANDOM)
        if left_out:
            groups = [R.origin_group(origin) for origin in left_out]
            self._note(f"the trial budget ({self.plan.trials}) holds {len(queued)} of the initial design's points: "
                       + ", ".join(f"{groups.count(g)} {g}" for g in dict.fromkeys(groups)) + " not queued")
        self.store.mark_initial_design_done()

    # ============================================================ the loop
    def _elapsed(self) -> float:
        return time.monotonic() - self._start

    def _running_at(self, rung: int) -> int:
        return sum(1 for job in self._running.values() if job.rung == rung)

    def _my_trial_ids(self) -> set[int]:
        return {job.trial._trial_id for job in self._running.values()}

    def _new_configurations_started(self) -> int:
        """Trained (at any rung) or running at the lowest rung, here and at live peers (counting the peers brings in
        their results)."""
        trained = self.store.trained_keys()
        here = sum(1 for job in self._running.values() if job.new and job.key not in trained)
        return len(trained) + here + self.store.peers(self.first_rung, self._my_trial_ids())[1]

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
            if self.scheduler.time_is_up(self._elapsed()):
                return self._stop(TIME_BUDGET_REACHED)
            if time.monotonic() - self._last_recovery > RECOVER_EVERY_SECONDS:
                self._recover_abandoned()
            if self.plan.auto_first_rung:
                self._maybe_raise_first_rung()
            rung = self._promotion_rung()
            if rung is not None:
                job = self._ask(rung)
                if job is not None:
                    return job
                continue
            stop = self.scheduler.stop_new_configurations(
                started=self._new_configurations_started,
                evaluated=lambda: len({key for finished in self.store.finished.values() for key in finished})
                + self._running_at(self.first_rung),
                cardinality=self.space.cardinality(), idle=self._idle)
            if stop is not None:
                if stop.after_running and self._running:  # a running trial may still earn a promotion
                    return None
                return self._stop(stop.reason)
            if self.scheduler.wants_random_point(self._idle) and not self._enqueue_random_point():
                return self._stop(NO_RANDOM_POINT)
            job = self._ask(self.first_rung)
            if job is not None:
                return job

    def finish_job(self, job_id: str, result: TrialResult) -> None:
        running = self._running.pop(job_id)
        try:
            self.store.tell_result(running.trial, result, running.adapter_params)
        except UpdateFinishedTrialError:  # our lease lapsed (the process was suspended) and a peer took it over
            self._note(f"rung-{running.rung} trial #{running.trial.number} was taken over by another worker while it "
                       "trained (its lease lapsed); the result stays with the retry")
            return
        record = self.store.record(running.trial, f"rung-{running.rung}")
        self.store.finished[running.rung][running.key] = record
        if result.ok:
            self.checkpoints.keep_latest(running.key)
        self._idle = 0
        self._track(record, [result])
        self.observer.on_trial(record, self._progress())

    def abandon_jobs(self) -> None:
        """Running trials of a stopped search fail as interrupted and are queued to run again once."""
        for running in self._running.values():
            self.store.interrupt(running.trial.study, running.trial._trial_id, SEARCH_STOPPED, running.retry)
        self._running.clear()

    # ------------------------------------------------------------------
    def _enqueue_random_point(self) -> bool:
        """Samplers that learn nothing from rejected points can repeat them; queue a fresh feasible one."""
        seen = self.store.point_keys(self.first_rung)
        rng = np.random.default_rng(self.plan.seed + len(seen) + self._idle)
        for _ in range(RANDOM_FALLBACK_DRAWS):
            params = self.space.active_params(self.space.sample(rng))
            point = self.space.decode(params)
            if point_key(point) in seen:
                continue
            size = count_trainable_params(point, self.space.model_config)
            if infeasible_reason(point, size, self.plan.max_params, self.plan.unavailable) is not None:
                continue
            self.store.queue(self.store.studies[self.first_rung], params,
                             f"random (the sampler repeated {STUCK_AFTER} rejected, empty or duplicate points)",
                             point_key(point))
            return True
        return False

    def _maybe_raise_first_rung(self) -> None:
        """``--fidelity auto``: carry out the scheduler's :func:`~autopeft.search.scheduler.raise_first_rung`. New
        configurations start one rung up from now on (kept in the study for a resumed search), the sampler proposes
        there, the points queued at the old lowest rung move up, and the trivial baselines are queued again there
        (the rung must show whether they clear the trivial score); results below keep promoting as usual."""
        finished = {rung: records.values() for rung, records in self.store.finished.items()}
        change = raise_first_rung(finished, self.first_rung, len(self.plan.rungs),
                                  self.store.pending(self.first_rung, R.BASELINE_PREFIX),
                                  self.plan.objectives[0].name)
        if change is None:
            return
        old, self.first_rung = self.first_rung, change.rung
        self.store.set_first_rung(change.rung)
        context = replace(self._sampler_context, seed=self._sampler_context.seed + 1000 * change.rung)
        self.store.propose_at(change.rung, create_sampler(self.plan.sampler, context))
        moved = self.store.move_queued(old, change.rung, f"moved to rung {change.rung}: the lowest rung went up")
        seen = self.store.point_keys(change.rung)
        again = [r for r in R.distinct_complete(list(self.store.finished[old].values()))
                 if r.origin.startswith(R.BASELINE_PREFIX) and r.trivial and r.key not in seen]
        for record in again:
            self.store.queue(self.store.studies[change.rung], record.params, record.origin, record.key)
        moves = [f"{moved} queued point(s) moved there"] if moved else []
        moves += [f"{len(again)} trivial baseline(s) queued there again"] if again else []
        self._note(f"{change.reason}; new configurations start at rung {change.rung} from now on"
                   + (f" ({', '.join(moves)})" if moves else ""))

    def _track(self, record: TrialRecord, results: list[TrialResult], seeds: Sequence[int] = ()) -> None:
        self.tracking.log(self.study_name, record, results, seeds)

    def _drop_unrun(self) -> None:
        """Points still queued when the search loop ends (a time budget that ran out first, a trial budget that
        other workers or an earlier run filled) are pruned as not run, so that no WAITING trial stays in the
        study; a resumed search queues them again. Left alone while another live worker runs trials here."""
        if any(self.store.peers(rung, set())[1] for rung in self.store.studies):
            return
        why = self._stopped or "stopped"
        dropped = sum(self.store.drop_queued(rung, f"not run: the search ended first ({why})")
                      for rung in self.store.studies)
        if dropped:
            self._note(f"{dropped} queued point(s) were not run before the search ended ({why}): recorded as pruned "
                       "'not run'; resuming the search queues them again")

    def _report_origins(self) -> dict[str, int]:
        """Which sampler ran and how many trials each origin gave (notes); a warning when the sampler gave none.
        Returns origin group -> trials trained."""
        records = [R.record_from_trial(t, f"rung-{rung}", self.plan.objectives)
                   for rung, study in self.store.studies.items() for t in study.get_trials(deepcopy=False)]
        counts = R.origin_counts(records)
        requested = self.plan.sampler.strip().lower()
        sampler = self.sampler_name + (f" ({requested})" if canonical_sampler_name(requested) != requested else "")
        self._note(f"sampler: {sampler}; trained by origin: "
                   + (", ".join(f"{c.trained} {c.group}" for c in counts.values()) or "none"))
        proposed = counts.get("sampler")
        if proposed is None or proposed.trials == 0:
            design = sum(c.trials for g, c in counts.items() if g in ("baseline", "prior", "quasi-random"))
            self._note(f"warning: no trial came from the sampler ({self.sampler_name}): the initial design "
                       f"({design} point(s)) used up the budget ({self._stopped or 'stopped'}); give more --trials "
                       "(or --no-baselines, a smaller --quasi-random) to let the sampler propose points")
        return {group: count.trained for group, count in counts.items()}

    def _record_agreement(self) -> None:
        """Spearman rho between consecutive rungs over the points trained at both, in the study and as notes."""
        stages = {f"rung-{rung}": list(finished.values()) for rung, finished in self.store.finished.items()}
        agreements = R.rung_agreements(stages, self.plan.objectives[0].name)
        if not agreements:
            return
        self.store.set_agreement([a.to_dict() for a in agreements])
        for low in (a for a in agreements if a.low):
            self._note(f"low rung agreement: {low.describe()} (below {R.LOW_AGREEMENT}): the lower rung ranks "
                       "configurations unlike the higher one")

    def _why_no_front(self) -> str:
        trained = [r for finished in self.store.finished.values() for r in R.distinct_complete(list(finished.values()))]
        if not trained:
            return "no trial finished: there is no Pareto front"
        score = next((r.trivial_metric for r in trained if r.trivial_metric is not None), None)
        return (f"every trial scored at or below the trivial score ({'?' if score is None else format(score, '.4g')}): "
                "the fidelity is too low or the learning rate too small; there is no Pareto front")

    def _promotion_rung(self) -> int | None:
        """A rung with a queued promotion (queuing a new one if MO-ASHA allows it), else None."""
        for rung in range(len(self.plan.rungs) - 1, 0, -1):
            if self.store.has_queued(rung):
                return rung
        finished = {rung: records.values() for rung, records in self.store.finished.items()}
        promotion = self.scheduler.next_promotion(finished, self.store.point_keys)
        if promotion is None:
            return None
        record = promotion.record
        self.store.queue(self.store.studies[promotion.rung], record.params, promotion.origin, record.key)
        return promotion.rung

    def _ask(self, rung: int) -> TrialJob | None:
        """Ask the rung's study for a trial; a point that needs no training is told at once (None)."""
        start = time.perf_counter()
        trial = self.store.ask(self.store.studies[rung])
        params = self.space.suggest(trial)
        suggest_seconds = time.perf_counter() - start
        queued_origin, _ = self.store.queued_as(trial)
        origin = queued_origin or f"{R.SAMPLER_PREFIX}{self.sampler_name}"
        point = self.space.decode(params)
        key = point_key(point)
        self.store.set_key(trial, key)  # before looking at the peers' trials: they look at ours the same way
        adapter_params = count_trainable_params(point, self.space.model_config)
        self.store.describe(trial, point, adapter_params, rung=rung, origin=origin, suggest_seconds=suggest_seconds)
        # a new configuration counts towards the trial budget; a promotion, or a point trained again one rung up
        # (a trivial baseline when --fidelity auto raised the lowest rung), does not
        new = not origin.startswith(R.PROMOTED_PREFIX) and key not in self.store.trained_keys()
        if not self._told_without_training(trial, rung, key, adapter_params, point) \
                and not (new and self._over_shared_budget(trial, rung)):
            job = TrialJob(f"rung-{rung}-{trial.number}", point, self.plan.rungs[rung], self.plan.seed,
                           **self.checkpoints.for_job(key, rung))
            retry = Retry.of(trial.number, params, origin, key)
            self._running[job.id] = _Running(trial, rung, key, adapter_params, retry, new)
            return job
        self._idle += 1
        self.observer.on_trial(self.store.record(trial, f"rung-{rung}"), self._progress())
        return None

    def _told_without_training(self, trial: optuna.Trial, rung: int, key: str, adapter_params: int,
                               point: PeftPoint) -> bool:
        why = infeasible_reason(point, adapter_params, self.plan.max_params, self.plan.unavailable)
        if why is not None and why.startswith(OVER_BUDGET):  # pruned, as reports count it (TPE still learns)
            self.store.prune(trial, f"{why} (not trained)", infeasible=why)
            return True
        if why is not None:  # told with dominated values, so that every sampler learns not to propose it again
            observed = [[r.values[o.name] for o in self.plan.objectives]
                        for r in self.store.finished.get(rung, {}).values() if r.complete]
            self.store.tell_infeasible(trial, why, penalised_values(
                self.plan.objectives, observed, adapter_params, count_model_params(self.space.model_config)))
            return True
        running = next((r.trial.number for r in self._running.values() if r.rung == rung and r.key == key), None)
        peers, _ = self.store.peers(rung, self._my_trial_ids())  # also brings in what other workers finished
        mine = self.store.asked_at(trial)
        if running is None and key in peers and peers[key] < mine:  # the trial asked for first trains the point
            running = peers[key][1]
        if running is not None:
            self.store.prune(trial, f"the same point is being trained as trial #{running} (not trained)",
                             duplicate_of=running)
            return True
        previous = self.store.finished[rung].get(key)
        if previous is None:
            return False
        self.store.copy_result(trial, previous)
        return True

    def _over_shared_budget(self, trial: optuna.Trial, rung: int) -> bool:
        """Several workers may ask for a trial at once: only the first ``trials`` asked for train."""
        if rung != self.first_rung or not self.scheduler.budget_filled(lambda: self.store.trials_ahead(trial)):
            return False
        self.store.prune(trial, f"the trial budget ({self.plan.trials}) was filled by other workers (not trained)")
        return True

    def _wait_for_peers(self) -> None:
        """Trials other workers are running as this search loop ends finish (or lose their owner) before the
        final stage, so that every worker re-trains the same front."""
        waiting = {rung: self.store.live_running(rung) for rung in self.store.studies}
        announced = False
        while any(waiting.values()):
            if not announced:
                self._note(f"waiting for {sum(map(len, waiting.values()))} trial(s) other workers are running")
                announced = True
            time.sleep(PEER_POLL_SECONDS)
            self._recover_abandoned()
            waiting = {rung: ids & self.store.live_running(rung) for rung, ids in waiting.items()}
        for rung in self.store.studies:
            self.store.peers(rung, self._my_trial_ids())  # their results join the front

    # ============================================================ progress
    def _front_now(self) -> tuple[str | None, list[TrialRecord]]:
        stages = {f"rung-{rung}": list(finished.values()) for rung, finished in self.store.finished.items()}
        return R.search_front(stages, self.plan.objectives)

    def _progress(self, final_done: int = 0, final_total: int = 0) -> SearchProgress:
        stage, front = self._front_now()
        by_rung = {rung: list(finished.values()) for rung, finished in self.store.finished.items()}
        return SearchProgress(self.store.trained_count(), self.plan.trials, self._elapsed(), self.plan.time_budget,
                              front, stage, self._median_trial_seconds(), self.plan.objectives,
                              stage=FINAL if final_total else "search", rung_seconds=median_seconds_by_rung(by_rung),
                              rung_counts={rung: len(records) for rung, records in by_rung.items()},
                              rungs=len(self.plan.rungs), eta=self.plan.eta, first_rung=self.first_rung,
                              final_seeds=self.plan.final_seeds, final_done=final_done, final_total=final_total)

    def _median_trial_seconds(self) -> float | None:
        times = [r.attrs[R.RESULT]["wall_seconds"] for finished in self.store.finished.values()
                 for r in finished.values() if R.RESULT in r.attrs]
        return statistics.median(times) if times else None

"""The Optuna storage of one search: its studies, and every read and write of their trials.

A search lives in Optuna studies, ``NAME`` (rung 0), ``NAME/rung-K`` and ``NAME/final``; what a
trial knows beyond its params and values are user attributes, all named in
:mod:`autopeft.search.records`. :class:`StudyStore` is the one place that writes them, and it reads
back what the engine and the scheduler need as :class:`TrialRecord` s.

Several processes may search on one storage. Each holds a lease on the trials it runs
(:mod:`autopeft.search.lease`); a RUNNING trial whose owner is gone is *abandoned*. Optuna's own
stale-trial machinery (heartbeat + ``fail_stale_trials``) would fit, but it works on RDB storages
inside ``study.optimize`` only, while a search asks and tells on any storage (journal files too).
An interrupted trial is marked in one way (:meth:`StudyStore.interrupt`): status "interrupted",
the reason, FAIL, and its point queued again once.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from autopeft.errors import AutopeftError
from autopeft.search import records as R
from autopeft.search.lease import LeaseKeeper, Owner, owner_alive
from autopeft.search.objectives import Objective
from autopeft.search.records import TrialRecord
from autopeft.space import PeftPoint
from autopeft.trial.result import ERROR, OK, TrialResult

PROCESS_ENDED = "the search process ended during this trial"
SEARCH_STOPPED = "the search stopped during this trial"


@dataclass(frozen=True)
class Retry:
    """The point of an interrupted trial, to queue again. A retry is not retried: :meth:`of` gives None."""

    number: int
    params: dict[str, Any]
    key: str | None

    @classmethod
    def of(cls, number: int, params: dict[str, Any], origin: str, key: str | None) -> Retry | None:
        return None if origin.startswith(R.RETRY_PREFIX) else cls(number, params, key)

    @classmethod
    def of_abandoned(cls, trial: FrozenTrial) -> Retry | None:
        """A trial a dead process left: retried unless it is a retry or was left before its point was drawn."""
        if not trial.params:
            return None
        return cls.of(trial.number, trial.params, str(trial.user_attrs.get(R.ORIGIN, "")), trial.user_attrs.get(R.KEY))


def asked_at(trial: FrozenTrial) -> tuple[float, int]:
    """Which of two trials was asked for first: by start time (a queued trial's number is older than its
    start), then by number."""
    start = trial.datetime_start.timestamp() if trial.datetime_start else math.inf
    return start, trial.number


def _new_configuration(trial: FrozenTrial) -> bool:
    """A trial of a point that started at its rung, not one promoted there."""
    return not str(trial.user_attrs.get(R.ORIGIN, "")).startswith(R.PROMOTED_PREFIX)


def _earliest_by_key(trials: list[FrozenTrial]) -> dict[str, tuple[float, int]]:
    """Point key -> the earliest :func:`asked_at` of the ``trials`` for it (the one that trains the point)."""
    earliest: dict[str, tuple[float, int]] = {}
    for trial in trials:
        key = trial.user_attrs.get(R.KEY)
        if key is not None:
            earliest[key] = min(earliest.get(key, asked_at(trial)), asked_at(trial))
    return earliest


class StudyStore:
    """One search's studies on an Optuna storage, the leases of the trials this process runs, and the
    trained results read back so far (:attr:`finished`)."""

    def __init__(self, storage: optuna.storages.BaseStorage, study_name: str, objectives: list[Objective],
                 seed: int):
        self.storage = storage
        self.study_name = study_name
        self.objectives = objectives
        self.seed = seed
        self.studies: dict[int, optuna.Study] = {}
        self.finished: dict[int, dict[str, TrialRecord]] = {}   # rung -> point key -> trained record
        self.owner = Owner.this_process()
        self.leases = LeaseKeeper(storage, self.owner)

    # ============================================================ studies
    def trial_count(self) -> int:
        """Trials of rung 0 so far (0 for a new search)."""
        name = R.rung_study_name(self.study_name, 0)
        if not R.study_exists(self.storage, name):
            return 0
        return len(self.storage.get_all_trials(self.storage.get_study_id_from_name(name), deepcopy=False))

    def open(self, sampler: optuna.samplers.BaseSampler, fingerprint: dict[str, Any], rungs: int) -> None:
        """Rung 0 with ``sampler`` (refused when created with another ``fingerprint``), the rungs that exist,
        and their trained results."""
        self.studies[0] = self._study(R.rung_study_name(self.study_name, 0), sampler)
        stored = self.studies[0].user_attrs.get(R.SETTINGS_ATTR)
        if stored is None:
            self.studies[0].set_user_attr(R.SETTINGS_ATTR, fingerprint)
        elif stored != fingerprint:
            changed = [k for k in fingerprint if stored.get(k) != fingerprint[k]]
            raise AutopeftError(
                f"study '{self.study_name}' in this storage was created with a different {', '.join(changed)}; "
                "resume it with the same settings or pass a new --study-name"
            )
        for rung in range(1, rungs):
            if R.study_exists(self.storage, R.rung_study_name(self.study_name, rung)):
                self.studies[rung] = self._study(R.rung_study_name(self.study_name, rung))
        for rung in range(rungs):
            self.finished[rung] = {}
            for trial in self.studies[rung].get_trials(deepcopy=False) if rung in self.studies else ():
                self._add_finished(rung, trial)

    def rung(self, rung: int) -> optuna.Study:
        """The rung's study, created when first needed."""
        if rung not in self.studies:
            self.studies[rung] = self._study(R.rung_study_name(self.study_name, rung))
        return self.studies[rung]

    def open_final(self) -> optuna.Study:
        return self._study(R.final_study_name(self.study_name))

    def _study(self, name: str, sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study:
        try:
            study = optuna.create_study(
                storage=self.storage, study_name=name, directions=[o.direction for o in self.objectives],
                load_if_exists=True, sampler=sampler or optuna.samplers.RandomSampler(seed=self.seed),
            )
        except ValueError as exc:  # e.g. stored directions differ
            raise AutopeftError(f"cannot resume study '{name}': {exc}") from None
        names = [o.name for o in self.objectives]
        # optuna-dashboard names the objectives (not "Objective 0"), in studies of earlier versions too; a study of
        # other objectives keeps its names (resuming it is refused: StudyStore.open)
        if study.metric_names is None and len(study.directions) == len(names):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(names)
        return study

    def initial_design_done(self) -> bool:
        return bool(self.studies[0].user_attrs.get(R.INITIAL_DESIGN_ATTR))

    def mark_initial_design_done(self) -> None:
        self.studies[0].set_user_attr(R.INITIAL_DESIGN_ATTR, True)

    def first_rung(self) -> int:
        """The rung new configurations start at (0 unless ``--fidelity auto`` raised it)."""
        return int(self.studies[0].user_attrs.get(R.FIRST_RUNG_ATTR, 0))

    def set_first_rung(self, rung: int) -> None:
        self.studies[0].set_user_attr(R.FIRST_RUNG_ATTR, rung)

    def set_sampler(self, name: str, requested: str) -> None:
        """The sampler this search runs (``requested`` may be ``auto``), as summary.md and optuna-dashboard show it."""
        self.studies[0].set_user_attr(R.SAMPLER_ATTR, {"name": name, "requested": requested})

    def set_agreement(self, agreements: list[dict[str, Any]]) -> None:
        """Spearman rho between consecutive rungs (:class:`autopeft.search.records.RungAgreement` dicts)."""
        self.studies[0].set_user_attr(R.AGREEMENT_ATTR, agreements)

    def propose_at(self, rung: int, sampler: optuna.samplers.BaseSampler) -> None:
        """The rung's study (created if needed) asks ``sampler`` for new points: where new configurations start."""
        self.studies[rung] = self._study(R.rung_study_name(self.study_name, rung), sampler)

    def pending(self, rung: int, origin_prefix: str) -> bool:
        """Whether the rung holds a queued or running trial whose origin starts with ``origin_prefix``."""
        return rung in self.studies and any(
            str(t.user_attrs.get(R.ORIGIN, "")).startswith(origin_prefix)
            for t in self.studies[rung].get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING)))

    def move_queued(self, source: int, target: int, reason: str) -> int:
        """Queued new configurations of rung ``source`` are queued at rung ``target`` instead (same origin and key;
        the waiting trial is told pruned with ``reason``); queued promotions stay. How many moved."""
        moved = 0
        for trial in self.studies[source].get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            origin = str(trial.user_attrs.get(R.ORIGIN, ""))
            if origin.startswith(R.PROMOTED_PREFIX) or "fixed_params" not in trial.system_attrs:
                continue
            try:
                self.storage.set_trial_user_attr(trial._trial_id, R.REASON, reason)
                if not self.storage.set_trial_state_values(trial._trial_id, TrialState.PRUNED):
                    continue
            except UpdateFinishedTrialError:  # another worker took it first
                continue
            self.queue(self.rung(target), dict(trial.system_attrs["fixed_params"]), origin, trial.user_attrs.get(R.KEY))
            moved += 1
        return moved

    def drop_queued(self, rung: int, reason: str) -> int:
        """The rung's queued points that are not promotions are told pruned with ``reason`` and marked
        :data:`~autopeft.search.records.NOT_RUN` (a search that ends leaves no WAITING trial behind;
        :meth:`queue_not_run` queues them again when it resumes). How many."""
        dropped = 0
        for trial in self.studies[rung].get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            if str(trial.user_attrs.get(R.ORIGIN, "")).startswith(R.PROMOTED_PREFIX):
                continue
            try:  # taken from the queue first (WAITING -> RUNNING is atomic): one another worker asks for is left
                if not self.storage.set_trial_state_values(trial._trial_id, TrialState.RUNNING):
                    continue
                self.storage.set_trial_user_attr(trial._trial_id, R.NOT_RUN, True)
                self.storage.set_trial_user_attr(trial._trial_id, R.REASON, reason)
                dropped += self.storage.set_trial_state_values(trial._trial_id, TrialState.PRUNED)
            except UpdateFinishedTrialError:
                continue
        return dropped

    def queue_not_run(self, rung: int) -> int:
        """Points a finished run of this search left :data:`~autopeft.search.records.NOT_RUN` at the rung are queued
        again (once per point, none asked for or queued since). How many."""
        trials = self.studies[rung].get_trials(deepcopy=False)
        not_run = [t for t in trials if t.state == TrialState.PRUNED and t.user_attrs.get(R.NOT_RUN)]
        if not not_run:
            return 0
        seen = {t.user_attrs.get(R.KEY) for t in trials if not t.user_attrs.get(R.NOT_RUN)}
        queued = 0
        for trial in not_run:
            key = trial.user_attrs.get(R.KEY)
            if key in seen or "fixed_params" not in trial.system_attrs:
                continue
            seen.add(key)
            self.queue(self.studies[rung], dict(trial.system_attrs["fixed_params"]),
                       str(trial.user_attrs.get(R.ORIGIN, "")), key)
            queued += 1
        return queued

    def close(self) -> None:
        self.leases.close()

    # ============================================================ asking
    def queue(self, study: optuna.Study, params: dict[str, Any], origin: str, key: str | None) -> None:
        """Queue a point; keyed now, so that other workers see it before it is asked for."""
        study.enqueue_trial(params, user_attrs={R.ORIGIN: origin, R.KEY: key})

    def ask(self, study: optuna.Study) -> optuna.Trial:
        """The next trial (the oldest queued one first), leased at once so that no other worker takes it
        for abandoned."""
        trial = study.ask()
        self.leases.hold(trial._trial_id)
        return trial

    @staticmethod
    def queued_as(trial: optuna.Trial) -> tuple[str | None, str | None]:
        """The origin and point key a trial was queued with (None, None for a sampled one)."""
        return trial.user_attrs.get(R.ORIGIN), trial.user_attrs.get(R.KEY)

    def set_key(self, trial: optuna.Trial, key: str) -> None:
        trial.set_user_attr(R.KEY, key)

    def describe(self, trial: optuna.Trial, point: PeftPoint, adapter_params: int, *, rung: int | None = None,
                 origin: str | None = None, suggest_seconds: float | None = None) -> None:
        """What a trial trains: its point and size (and, in the search, its rung, origin and suggestion time)."""
        attrs = {R.RUNG: rung} if rung is not None else {}
        attrs.update({R.ADAPTER_PARAMS: adapter_params, R.POINT: point.to_dict(), R.DESCRIPTION: point.describe()})
        if rung is not None:
            attrs.update({R.ORIGIN: origin, R.SUGGEST_SECONDS: suggest_seconds})
        for name, value in attrs.items():
            trial.set_user_attr(name, value)

    # ============================================================ telling (each releases the trial's lease)
    def tell_result(self, trial: optuna.Trial, result: TrialResult, adapter_params: int) -> None:
        """A trained trial: its result, and its objective values unless it failed. Raises
        UpdateFinishedTrialError when another worker took the trial over (its lease lapsed)."""
        for step, loss in result.train_losses:  # optuna-dashboard plots them (Trial.report refuses several objectives)
            self.storage.set_trial_intermediate_value(trial._trial_id, int(step), float(loss))
        self.leases.release(trial._trial_id)
        trial.set_user_attr(R.TRAINED, True)
        trial.set_user_attr(R.STATUS, result.status)
        trial.set_user_attr(R.RESULT, result.to_dict(losses=False))
        if result.reason:
            trial.set_user_attr(R.REASON, result.reason)
        if not result.ok:
            trial.study.tell(trial, state=TrialState.FAIL)
            return
        try:
            values = [o.value(result, adapter_params) for o in self.objectives]
        except KeyError as exc:
            self.fail(trial, ERROR, f"error: {exc.args[0]}")
            return
        if not all(math.isfinite(v) for v in values):
            self.fail(trial, ERROR, f"error: non-finite objective values {values}")
            return
        trial.study.tell(trial, values)

    def fail(self, trial: optuna.Trial, status: str, reason: str) -> None:
        self.leases.release(trial._trial_id)
        trial.set_user_attr(R.STATUS, status)
        trial.set_user_attr(R.REASON, reason)
        trial.study.tell(trial, state=TrialState.FAIL)

    def prune(self, trial: optuna.Trial, reason: str, duplicate_of: int | None = None,
              infeasible: str | None = None) -> None:
        """A trial told without training (``reason`` says why; ``infeasible``: why its point can never train)."""
        self.leases.release(trial._trial_id)
        if duplicate_of is not None:
            trial.set_user_attr(R.DUPLICATE_OF, duplicate_of)
        if infeasible is not None:
            trial.set_user_attr(R.INFEASIBLE, infeasible)
        trial.set_user_attr(R.REASON, reason)
        trial.study.tell(trial, state=TrialState.PRUNED)

    def tell_infeasible(self, trial: optuna.Trial, reason: str, values: list[float]) -> None:
        """A point that cannot train, told COMPLETE with penalised ``values`` (:mod:`autopeft.search.feasibility`)
        so that the sampler learns from it; never trained, never a result."""
        self.leases.release(trial._trial_id)
        trial.set_user_attr(R.INFEASIBLE, reason)
        trial.set_user_attr(R.REASON, f"{reason} (not trained)")
        trial.study.tell(trial, values)

    def copy_result(self, trial: optuna.Trial, previous: TrialRecord) -> None:
        """A point already trained at this rung: the trial repeats the earlier trial's outcome."""
        self.leases.release(trial._trial_id)
        trial.set_user_attr(R.DUPLICATE_OF, previous.number)
        for name in (R.STATUS, R.REASON, R.RESULT):
            if name in previous.attrs:
                trial.set_user_attr(name, previous.attrs[name])
        if previous.complete:
            trial.study.tell(trial, [previous.values[o.name] for o in self.objectives])
        else:
            trial.study.tell(trial, state=TrialState.FAIL)

    def interrupt(self, study: optuna.Study, trial_id: int, why: str, retry: Retry | None = None) -> bool:
        """Record a trial as interrupted and fail it, then queue ``retry``'s point; False (and nothing queued)
        when another worker finished or failed the trial first."""
        self.leases.release(trial_id)
        try:
            self.storage.set_trial_user_attr(trial_id, R.STATUS, R.INTERRUPTED)
            self.storage.set_trial_user_attr(trial_id, R.REASON, f"interrupted: {why}")
            if not self.storage.set_trial_state_values(trial_id, TrialState.FAIL):
                return False
        except UpdateFinishedTrialError:
            return False
        if retry is not None:
            self.queue(study, retry.params, f"{R.RETRY_PREFIX}#{retry.number}", retry.key)
        return True

    # ============================================================ reading
    def record(self, trial: optuna.Trial, stage: str) -> TrialRecord:
        return R.record_from_trial(self.storage.get_trial(trial._trial_id), stage, self.objectives)  # one row

    def asked_at(self, trial: optuna.Trial) -> tuple[float, int]:
        return asked_at(self.storage.get_trial(trial._trial_id))

    def abandoned(self, trial: FrozenTrial) -> bool:
        started = trial.datetime_start.timestamp() if trial.datetime_start else None
        return not owner_alive(trial.user_attrs.get(R.LEASE), self.owner, started)

    def abandoned_trials(self, study: optuna.Study) -> Iterator[FrozenTrial]:
        """RUNNING trials whose process is gone (those of live processes are left alone)."""
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if self.abandoned(trial):
                yield trial

    def live_running(self, rung: int) -> set[int]:
        """Ids of the rung's RUNNING trials whose process is alive."""
        running = self.studies[rung].get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        return {t._trial_id for t in running if not self.abandoned(t)}

    def has_queued(self, rung: int) -> bool:
        """Whether the rung's study (if open) holds a queued trial."""
        return rung in self.studies and bool(self.studies[rung].get_trials(deepcopy=False,
                                                                           states=(TrialState.WAITING,)))

    def point_keys(self, rung: int) -> set[str | None]:
        """Points asked for or queued at the rung."""
        return {t.user_attrs.get(R.KEY) for t in self.rung(rung).get_trials(deepcopy=False)}

    def trained_keys(self) -> set[str]:
        """Points trained as new configurations (at any rung: not promotions), by any worker. A point trained again
        at a higher rung (a trivial baseline re-queued when ``--fidelity auto`` raised the lowest rung) is one."""
        return {t.user_attrs.get(R.KEY) for study in self.studies.values() for t in study.get_trials(deepcopy=False)
                if t.user_attrs.get(R.TRAINED) and not t.user_attrs.get(R.INFEASIBLE) and _new_configuration(t)}

    def trained_count(self) -> int:
        """How many points were trained as new configurations (:meth:`trained_keys`)."""
        return len(self.trained_keys())

    def peers(self, rung: int, mine: set[int]) -> tuple[dict[str, tuple[float, int]], int]:
        """Other live processes' RUNNING trials at ``rung`` (point key -> the earliest one's :func:`asked_at`),
        and how many; their finished trained trials join :attr:`finished` on the way."""
        live = []
        for trial in self.studies[rung].get_trials(deepcopy=False):
            if trial.state != TrialState.RUNNING:
                self._add_finished(rung, trial)
            elif trial._trial_id not in mine and not self.abandoned(trial):
                live.append(trial)
        return _earliest_by_key(live), len(live)

    def _add_finished(self, rung: int, trial: FrozenTrial) -> None:
        """A trained trial's result joins :attr:`finished` (the first one per point; interrupted ones are none).

        Only a finished trial has a result: a process killed between a tell's writes leaves a RUNNING trial marked
        trained, which is abandoned (interrupted and retried), not a result its retry may copy."""
        key = trial.user_attrs.get(R.KEY)
        if key is not None and key not in self.finished[rung] and trial.state.is_finished() \
                and trial.user_attrs.get(R.TRAINED) and trial.user_attrs.get(R.STATUS) != R.INTERRUPTED:
            self.finished[rung][key] = R.record_from_trial(trial, f"rung-{rung}", self.objectives)

    def trials_ahead(self, trial: optuna.Trial) -> int:
        """New configurations trained (at any rung), or running live in ``trial``'s study and asked for before it."""
        mine = self.asked_at(trial)
        trained = self.trained_keys()
        return len(trained) + sum(
            1 for t in trial.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if t.number != trial.number and not t.user_attrs.get(R.TRAINED) and _new_configuration(t)
            and t.user_attrs.get(R.KEY) not in trained and asked_at(t) < mine and not self.abandoned(t))

    def median_suggest_seconds(self) -> float | None:
        """Over the trials the sampler proposed (queued ones take no suggestion time)."""
        values = [t.user_attrs[R.SUGGEST_SECONDS] for t in self.studies[0].get_trials(deepcopy=False)
                  if R.SUGGEST_SECONDS in t.user_attrs
                  and str(t.user_attrs.get(R.ORIGIN, "")).startswith(R.SAMPLER_PREFIX)]
        return statistics.median(values) if values else None

    # ============================================================ final stage
    def final_records(self, study: optuna.Study) -> dict[str, TrialRecord]:
        """Point key -> its first finished final trial."""
        finished: dict[str, TrialRecord] = {}
        for trial in study.get_trials(deepcopy=False):
            record = R.record_from_trial(trial, "final", self.objectives)
            if record.trained and record.key is not None and trial.state.is_finished():
                finished.setdefault(record.key, record)
        return finished

    def final_running(self, study: optuna.Study, before: tuple[float, int] | None = None) -> dict[str, int]:
        """Point key -> number of the final trial a live process (this one included) is running for it
        (only those asked for before ``before``, an :func:`asked_at`, when given)."""
        live = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                if not self.abandoned(t) and (before is None or asked_at(t) < before)]
        return {key: asked[1] for key, asked in _earliest_by_key(live).items()}

    @staticmethod
    def kept_seed_count(trial: FrozenTrial) -> int:
        return sum(1 for name in trial.user_attrs if name.startswith(R.SEED_PREFIX))

    def seeds_of_failed(self, study: optuna.Study, key: str) -> Iterator[dict[str, Any]]:
        """The seed entries that failed (interrupted) final trials of ``key`` kept, oldest first."""
        for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
            if trial.user_attrs.get(R.KEY) == key:
                yield from (entry for name, entry in trial.user_attrs.items() if name.startswith(R.SEED_PREFIX))

    def keep_seed(self, trial: optuna.Trial, seed: int, entry: dict[str, Any]) -> None:
        """One trained seed of a final trial: ``{"seed", "result", "adapter"}`` (the result without its loss curve)."""
        if "train_losses" in entry.get("result", {}):
            entry = {**entry, "result": {k: v for k, v in entry["result"].items() if k != "train_losses"}}
        trial.set_user_attr(f"{R.SEED_PREFIX}{seed}", entry)

    def seed_entries(self, trial: optuna.Trial, seeds: list[int]) -> list[dict[str, Any]]:
        attrs = self.storage.get_trial(trial._trial_id).user_attrs
        return [attrs[f"{R.SEED_PREFIX}{seed}"] for seed in seeds if f"{R.SEED_PREFIX}{seed}" in attrs]

    def record_seeds(self, trial: optuna.Trial, seed_results: list[TrialResult]) -> None:
        """A final trial's seeds, the first thing told of it once they ran (its lease ends here)."""
        self.leases.release(trial._trial_id)
        trial.set_user_attr(R.TRAINED, True)
        trial.set_user_attr(R.SEEDS, [r.to_dict(losses=False) for r in seed_results])

    def tell_final(self, trial: optuna.Trial, values: list[float], values_std: dict[str, float],
                   test_metrics: dict[str, float], test_metrics_std: dict[str, float], adapter_dir: str | None) -> None:
        """A final trial's mean over its seeds, their spread, and its adapter's folder in the run folder."""
        self.leases.release(trial._trial_id)
        trial.set_user_attr(R.STATUS, OK)
        trial.set_user_attr(R.VALUES_STD, values_std)
        trial.set_user_attr(R.TEST_METRICS, test_metrics)
        trial.set_user_attr(R.TEST_METRICS_STD, test_metrics_std)
        if adapter_dir is not None:
            trial.set_user_attr(R.ADAPTER_DIR, adapter_dir)
        trial.study.tell(trial, values)

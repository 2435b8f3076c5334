"""MO-ASHA over fidelity rungs and when a search stops: decisions over trial records, no storage.

As in Ray Tune and Syne Tune, the scheduler only decides; the engine (:mod:`autopeft.search.engine`)
asks it and carries the answers out on the study store (:mod:`autopeft.search.store`). So every
rule here can be checked with a few hand-made :class:`TrialRecord` s.

Promotion (asynchronous successive halving, multi-objective): once a rung holds ``k`` distinct
results, its top ``k // eta`` by non-dominated rank, ties by larger hypervolume contribution
(:func:`~autopeft.search.pareto.promotion_order`), go up one rung, each once, and never more than
``k // eta`` in all; the highest rung is served first. The cap is not ASHA's (Li et al. 2020 promote
whatever enters the current top third, so early promotions that later fall out of it add up): with
two objectives the top third churns as results arrive, and in the medium TREC searches 19-21 of 30
rung-1 configurations went up (quota 10), and 9-11 reached full fidelity, most of the search's cost.
A trivial result (no better than ignoring the input) counts towards its rung's quota but is never
promoted. New configurations start at the lowest rung (``first_rung``, 0 unless
``--fidelity auto`` raised it: :func:`raise_first_rung`) until the trial budget is filled, the space
is exhausted or the sampler keeps proposing points that cannot be trained.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from autopeft.search.objectives import Objective
from autopeft.search.pareto import promotion_order
from autopeft.search.records import (
    BASELINE_PREFIX,
    PROMOTED_PREFIX,
    TrialRecord,
    agreement,
    distinct_complete,
)

STUCK_AFTER = 5   # consecutive rejected/duplicate suggestions before a random feasible point is queued

TIME_BUDGET_REACHED = "time budget reached"
TRIAL_BUDGET_REACHED = "trial budget reached"
SPACE_EXHAUSTED = "every point of the space has been evaluated"
NO_RANDOM_POINT = "no new point within --max-params found by random sampling"


@dataclass(frozen=True)
class Promotion:
    """A configuration finished at ``rung - 1`` that trains next at ``rung``."""

    rung: int
    record: TrialRecord

    @property
    def origin(self) -> str:
        return f"{PROMOTED_PREFIX}{self.record.label}"


@dataclass(frozen=True)
class Stop:
    """Why no new configuration starts."""

    reason: str
    after_running: bool = False   # wait for the running trials first: one of them may still earn a promotion


@dataclass(frozen=True)
class Scheduler:
    """A search's promotion and stop rules (its plan's rungs, eta, trial and time budgets)."""

    objectives: list[Objective]
    rungs: int                          # number of fidelity rungs
    eta: int
    trials: int | None                  # new configurations (rung 0) to train
    time_budget: float | None           # seconds before no new trial starts
    max_idle_suggestions: int           # consecutive rejected/duplicate suggestions before giving up

    def time_is_up(self, elapsed: float) -> bool:
        return self.time_budget is not None and elapsed >= self.time_budget

    def next_promotion(self, finished: Mapping[int, Iterable[TrialRecord]],
                       promoted: Callable[[int], Collection[str]]) -> Promotion | None:
        """The next configuration MO-ASHA promotes, or None.

        ``finished[rung]``: the rung's trained records, promoted there or started there; ``promoted(rung)``: point
        keys already at ``rung`` (asked only for a rung with a non-empty quota below it). The quota counts every
        result of the rung; the order ranks only those that beat the trivial score."""
        for rung in range(self.rungs - 2, -1, -1):
            done = distinct_complete(list(finished[rung]))
            quota = len(done) // self.eta
            candidates = [r for r in done if not r.trivial]
            if quota == 0 or not candidates:
                continue
            already = promoted(rung + 1)
            if len(set(already) & {r.key for r in done}) >= quota:
                continue   # the rung has sent up its share; a later, better result waits for the quota to grow
            order = promotion_order(np.array([r.losses(self.objectives) for r in candidates]))
            for index in order[:quota]:
                if candidates[index].key not in already:
                    return Promotion(rung + 1, candidates[index])
        return None

    def budget_filled(self, started: Callable[[], int]) -> bool:
        """Whether the ``started()`` new configurations (trained or running, by any worker) fill the trial
        budget; ``started`` is not called without one."""
        return self.trials is not None and started() >= self.trials

    def stop_new_configurations(self, started: Callable[[], int], evaluated: Callable[[], int],
                                cardinality: float, idle: int) -> Stop | None:
        """Why no new configuration starts at rung 0, or None.

        ``started()``: new configurations trained or running (here and at live peers); ``evaluated()``: distinct
        points with a result at rung 0 plus those running here. Each is called only when needed, in this order
        (counting the peers' trials brings in their results)."""
        if self.budget_filled(started):
            return Stop(TRIAL_BUDGET_REACHED, after_running=True)
        if evaluated() >= cardinality:
            return Stop(SPACE_EXHAUSTED, after_running=True)
        if idle >= self.max_idle_suggestions:
            return Stop(f"the sampler proposed {idle} points in a row that were over --max-params, "
                        "empty or already evaluated")
        return None

    @staticmethod
    def wants_random_point(idle: int) -> bool:
        """Samplers that learn nothing from rejected points can repeat them: every ``STUCK_AFTER`` in a row,
        a fresh feasible point is queued."""
        return idle > 0 and idle % STUCK_AFTER == 0


MIN_AGREEMENT_POINTS = 6
"""Configurations trained at two rungs before a low rho raises the lowest rung: rho over 4 promoted points (the
top third of their rung, close to each other) was noise often enough to raise a rung that ranked well (a search on
SST-2 went from 42 to 126 steps per new configuration over 4 points whose upper-rung metrics spanned 0.04)."""


@dataclass(frozen=True)
class RungRaise:
    """New configurations start at ``rung`` from now on (``--fidelity auto``), because of ``reason``."""

    rung: int
    reason: str


def raise_first_rung(finished: Mapping[int, Iterable[TrialRecord]], first_rung: int, rungs: int,
                     baselines_pending: bool, metric: str) -> RungRaise | None:
    """Whether the lowest rung of ``--fidelity auto`` should go up one, and why; None to keep it.

    Up when, at ``first_rung``, most (more than half) of the baselines that finished there scored at or below
    the trivial score (judged once none is ``baselines_pending``: queued or running there), or when the task
    metric of at least :data:`MIN_AGREEMENT_POINTS` configurations trained at both ``first_rung`` and the next
    rung ranks poorly across them beyond doubt (``RungAgreement.surely_low``: even the upper confidence bound of
    Spearman's rho is below :data:`~autopeft.search.records.LOW_AGREEMENT`, and the next rung tells them apart
    beyond noise); a merely low rho is warned about at the end of the search. Never past
    the second-to-last rung: the last one is the full fidelity.
    """
    if first_rung >= rungs - 2:
        return None
    here = distinct_complete(list(finished[first_rung]))
    baselines = [r for r in here if r.origin.startswith(BASELINE_PREFIX)]
    trivial = [r for r in baselines if r.trivial]
    if baselines and not baselines_pending and 2 * len(trivial) > len(baselines):
        score = next((r.trivial_metric for r in trivial if r.trivial_metric is not None), None)
        at = f" ({score:.4g})" if score is not None else ""
        return RungRaise(first_rung + 1, f"{len(trivial)} of {len(baselines)} baselines at rung {first_rung} scored "
                                         f"at or below the trivial score{at}: the rung is too low to rank them")
    above = agreement(list(finished[first_rung]), list(finished[first_rung + 1]), metric, first_rung)
    if above.n >= MIN_AGREEMENT_POINTS and above.surely_low:
        return RungRaise(first_rung + 1, f"{above.describe()}: rung {first_rung} does not rank like rung "
                                         f"{first_rung + 1}")
    return None

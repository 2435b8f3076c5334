"""What a running search tells the outside: :class:`SearchProgress` (counts, front, an ETA over everything left),
the :class:`SearchObserver` that receives it, and the log lines every search writes (:class:`LoggedObserver`).

The ETA counts the work still ahead, not only the new configurations: the promotions successive halving will
make (rung ``r`` above the starting rung gets about ``trials / eta^(r - start)`` of them) and the final stage
(each front point re-trained at full fidelity once per seed), each at the median wall time measured at its rung —
a rung not reached yet is estimated as ``eta`` times the rung below, as the default rungs are spaced.
"""

from __future__ import annotations

import logging
import math
import statistics
from dataclasses import dataclass, field
from typing import Protocol

from autopeft.search import records as R
from autopeft.search.objectives import Objective
from autopeft.search.records import TrialRecord

log = logging.getLogger("autopeft.search")

SEARCH, FINAL = "search", "final"


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
    stage: str = SEARCH                   # "search" (the rungs) or "final" (the front re-trained per seed)
    rung_seconds: dict[int, float] = field(default_factory=dict)   # median wall seconds of a trial per rung
    rung_counts: dict[int, int] = field(default_factory=dict)      # trials trained per rung
    rungs: int = 1
    eta: int = 3
    first_rung: int = 0                   # where new configurations start
    final_seeds: int = 0
    final_done: int = 0                   # final-stage seeds trained so far
    final_total: int = 0                  # final-stage seeds in all (once the final stage started)

    def rung_estimate(self, rung: int) -> float | None:
        """Median seconds of a trial at ``rung``: measured, else ``eta`` times per rung from the nearest measured."""
        if rung in self.rung_seconds:
            return self.rung_seconds[rung]
        if not self.rung_seconds:
            return None
        nearest = min(self.rung_seconds, key=lambda r: abs(r - rung))
        return self.rung_seconds[nearest] * float(self.eta) ** (rung - nearest)

    @property
    def eta_seconds(self) -> float | None:
        """Seconds of work left: new configurations, their expected promotions and the final stage."""
        full = self.rung_estimate(self.rungs - 1)
        if self.stage == FINAL:
            return None if full is None else max(self.final_total - self.final_done, 0) * full
        start = self.rung_estimate(self.first_rung)
        if start is None:
            return None
        left_new = max(self.target_trials - self.new_trials, 0) if self.target_trials is not None else None
        if left_new is None and self.time_budget is None:
            return None
        total_new = self.target_trials if self.target_trials is not None else self.new_trials
        search = 0.0 if left_new is None else left_new * start
        for rung in range(self.first_rung + 1, self.rungs):
            expected = math.ceil(total_new / self.eta ** (rung - self.first_rung))
            search += max(expected - self.rung_counts.get(rung, 0), 0) * (self.rung_estimate(rung) or 0.0)
        if self.time_budget is not None:
            search = min(search, max(self.time_budget - self.elapsed_seconds, 0.0)) if left_new is not None \
                else max(self.time_budget - self.elapsed_seconds, 0.0)
        final = self.final_seeds * max(len(self.front), 1) * (full or 0.0)
        return search + final


class SearchObserver(Protocol):
    def on_note(self, message: str) -> None: ...
    def on_trial(self, record: TrialRecord, progress: SearchProgress) -> None: ...
    # optional: ``on_stage(progress)`` when the final stage starts and after each of its seeds


class SilentObserver:
    def on_note(self, message: str) -> None:
        pass

    def on_trial(self, record: TrialRecord, progress: SearchProgress) -> None:
        pass


def format_count(value: float) -> str:
    """73728 -> '73.7k'."""
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.0f}"


def trial_line(record: TrialRecord, objectives: list[Objective]) -> str:
    """One finished (or failed) trial as the search log shows it."""
    if record.values is not None:
        values = record.values
        outcome = ", ".join(
            f"{o.name} {format_count(values[o.name]) if o.name == 'params' else format(values[o.name], '.4g')}"
            for o in objectives)
        if record.trivial:  # never promoted, never on a front
            outcome += f" (trivial: not above the input-blind {format(record.trivial_metric or 0, '.4g')})"
    else:
        outcome = f"{record.state}: {record.attrs.get('reason', '')}"
    return f"{record.label:>12} {record.attrs.get('description', '')} -> {outcome}"


class LoggedObserver:
    """Logs every note and trial to ``autopeft.search`` (the terminal and the run's log file show them), then passes
    them on to the observer it wraps (a progress bar, a notebook's callback)."""

    def __init__(self, inner: SearchObserver | None = None):
        self.inner = inner or SilentObserver()

    def on_note(self, message: str) -> None:
        log.info(message, extra={"kind": "note"})
        self.inner.on_note(message)

    def on_trial(self, record: TrialRecord, progress: SearchProgress) -> None:
        log.info(trial_line(record, progress.objectives), extra={"kind": "trial"})
        self.inner.on_trial(record, progress)

    def on_stage(self, progress: SearchProgress) -> None:
        on_stage = getattr(self.inner, "on_stage", None)
        if on_stage is not None:
            on_stage(progress)


def logged(observer: SearchObserver | None) -> LoggedObserver:
    """``observer`` behind a :class:`LoggedObserver` (once: wrapping a logged observer returns it)."""
    return observer if isinstance(observer, LoggedObserver) else LoggedObserver(observer)


def median_seconds_by_rung(records_by_rung: dict[int, list[TrialRecord]]) -> dict[int, float]:
    """Median wall seconds of the trained trials at each rung (rungs with none left out)."""
    medians = {}
    for rung, records in records_by_rung.items():
        times = [r.attrs[R.RESULT]["wall_seconds"] for r in records
                 if r.attrs.get(R.RESULT, {}).get("wall_seconds") is not None]
        if times:
            medians[rung] = statistics.median(times)
    return medians

"""Reading a search back from its Optuna studies: one :class:`TrialRecord` per trial.

Studies of a run: ``NAME`` (rung 0, where the sampler proposes), ``NAME/rung-K`` (configurations
promoted to fidelity rung K) and ``NAME/final`` (the Pareto front re-trained at full fidelity
with several seeds). Everything a trial knows beyond Optuna's params and values lives in its
user attributes, under the keys below (their one home), so optuna-dashboard shows it too. The
search writes them through :class:`autopeft.search.store.StudyStore` only; export and report read
them back here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from autopeft.search.objectives import Objective
from autopeft.search.pareto import pareto_mask

# user-attribute keys
KEY, RUNG, ADAPTER_PARAMS, POINT, DESCRIPTION = "point_key", "rung", "adapter_params", "point", "description"
ORIGIN, SUGGEST_SECONDS, STATUS, REASON, RESULT = "origin", "suggest_seconds", "status", "reason", "result"
DUPLICATE_OF, TRAINED, VALUES_STD, SEEDS, ADAPTER_DIR = "duplicate_of", "trained", "values_std", "seeds", "adapter_dir"
TEST_METRICS, TEST_METRICS_STD = "test_metrics", "test_metrics_std"
SEED_PREFIX = "seed_"   # final trials: "seed_<n>" = {"seed", "result", "adapter"}, stored as each seed finishes
LEASE = "lease"         # the process that runs a RUNNING trial (autopeft.search.lease)
INTERRUPTED = "interrupted"    # the STATUS of a trial whose process stopped or died while it trained
RETRY_PREFIX = "retry of "     # the ORIGIN of an interrupted trial's point queued again: "retry of #<number>"
SAMPLER_PREFIX = "sampler:"    # the ORIGIN of a point the sampler proposed: "sampler:<name>"
# study user-attribute keys
SETTINGS_ATTR, INITIAL_DESIGN_ATTR = "autopeft_settings", "initial_design_done"


def rung_study_name(study_name: str, rung: int) -> str:
    return study_name if rung == 0 else f"{study_name}/rung-{rung}"


def final_study_name(study_name: str) -> str:
    return f"{study_name}/final"


@dataclass
class TrialRecord:
    stage: str                      # "rung-0", "rung-1", ..., "final"
    number: int
    state: str                      # complete | pruned | fail | running | waiting
    params: dict[str, Any]
    values: dict[str, float] | None
    attrs: dict[str, Any] = field(default_factory=dict)
    duration_seconds: float | None = None

    @property
    def key(self) -> str | None:
        return self.attrs.get(KEY)

    @property
    def complete(self) -> bool:
        return self.state == "complete" and self.values is not None

    @property
    def trained(self) -> bool:
        return bool(self.attrs.get(TRAINED))

    @property
    def label(self) -> str:
        return f"{self.stage}#{self.number}"

    def losses(self, objectives: list[Objective]) -> list[float]:
        assert self.values is not None
        return [o.to_loss(self.values[o.name]) for o in objectives]


def record_from_trial(trial: FrozenTrial, stage: str, objectives: list[Objective]) -> TrialRecord:
    values = None
    if trial.state == TrialState.COMPLETE and trial.values is not None:
        values = {o.name: float(v) for o, v in zip(objectives, trial.values)}
    duration = trial.duration.total_seconds() if trial.duration is not None else None
    return TrialRecord(stage, trial.number, trial.state.name.lower(), dict(trial.params), values,
                       dict(trial.user_attrs), duration)


def study_exists(storage: optuna.storages.BaseStorage, name: str) -> bool:
    try:
        storage.get_study_id_from_name(name)
        return True
    except KeyError:
        return False


def load_records(storage, study_name: str, objectives: list[Objective]) -> dict[str, list[TrialRecord]]:
    """stage -> records, for every study of the run that exists."""
    stages: dict[str, list[TrialRecord]] = {}
    rung = 0
    while study_exists(storage, rung_study_name(study_name, rung)):
        study = optuna.load_study(study_name=rung_study_name(study_name, rung), storage=storage)
        stages[f"rung-{rung}"] = [record_from_trial(t, f"rung-{rung}", objectives)
                                  for t in study.get_trials(deepcopy=False)]
        rung += 1
    if study_exists(storage, final_study_name(study_name)):
        study = optuna.load_study(study_name=final_study_name(study_name), storage=storage)
        stages["final"] = [record_from_trial(t, "final", objectives) for t in study.get_trials(deepcopy=False)]
    return stages


def distinct_complete(records: list[TrialRecord]) -> list[TrialRecord]:
    """Complete records with finite values, one per point (the first; duplicates carry copies)."""
    seen, kept = set(), []
    for record in records:
        if not record.complete or not all(math.isfinite(v) for v in record.values.values()):
            continue
        if record.key in seen:
            continue
        seen.add(record.key)
        kept.append(record)
    return kept


def pareto_records(records: list[TrialRecord], objectives: list[Objective]) -> list[TrialRecord]:
    """The non-dominated distinct points, best task metric first."""
    candidates = distinct_complete(records)
    if not candidates:
        return []
    mask = pareto_mask(np.array([r.losses(objectives) for r in candidates]))
    front = [r for r, keep in zip(candidates, mask) if keep]
    return sorted(front, key=lambda r: r.losses(objectives)[0])


def top_stage_with_results(stages: dict[str, list[TrialRecord]]) -> str | None:
    """The highest fidelity rung holding at least one complete trial."""
    rungs = sorted((int(s.split("-")[1]) for s in stages if s.startswith("rung-")), reverse=True)
    for rung in rungs:
        if distinct_complete(stages[f"rung-{rung}"]):
            return f"rung-{rung}"
    return None


def search_front(stages: dict[str, list[TrialRecord]],
                 objectives: list[Objective]) -> tuple[str | None, list[TrialRecord]]:
    """The highest fidelity rung with results and its Pareto front (what the final stage re-trains)."""
    stage = top_stage_with_results(stages)
    return stage, (pareto_records(stages[stage], objectives) if stage else [])

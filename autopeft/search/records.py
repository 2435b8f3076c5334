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
from scipy import stats

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
INFEASIBLE = "infeasible"      # why a proposed point cannot train (told without training, never a result)
PROMOTED_PREFIX = "promoted from "   # the ORIGIN of a promotion: "promoted from rung-<k>#<number>"
BASELINE_PREFIX = "baseline:"        # the ORIGIN of a named baseline: "baseline:<name>"
PRIOR_PREFIX = "prior:"              # the ORIGIN of a prior's starting point: "prior:<name>" (autopeft.search.priors)
QUASI_RANDOM = "quasi-random"        # the ORIGIN of a Sobol point of the initial design
RANDOM_PREFIX = "random ("           # the ORIGIN of a random point queued when the sampler kept repeating itself
NOT_RUN = "not_run"     # a queued point the search ended without running: pruned, queued again when it resumes
TRIVIAL, TRIVIAL_METRIC, METRIC_STDERR = "trivial", "trivial_metric", "metric_stderr"   # keys of a RESULT
# study user-attribute keys (on rung 0's study)
SETTINGS_ATTR, INITIAL_DESIGN_ATTR = "autopeft_settings", "initial_design_done"
FIRST_RUNG_ATTR = "first_rung"       # the rung new configurations start at (--fidelity auto raises it)
AGREEMENT_ATTR = "rung_agreement"    # [{"lower", "upper", "rho", "n"}] between consecutive rungs (RungAgreement)
SAMPLER_ATTR = "sampler"             # {"name": the sampler that ran (auto resolved), "requested": as given}
LOW_AGREEMENT = 0.3                  # a Spearman rho between consecutive rungs below this is warned about


ORIGIN_GROUPS = ("baseline", "prior", "quasi-random", "sampler", "random", "retry", "promoted", "final", "other")
"""Where trials come from, in the order reports list them (:func:`origin_group`): the initial design (baselines,
prior starting points, Sobol points), the sampler, random points queued when it kept repeating itself, retries of
interrupted trials, promotions to a higher rung, and the final stage's re-training of the front."""


def origin_group(origin: str, stage: str | None = None) -> str:
    """The :data:`ORIGIN_GROUPS` entry of a trial's ORIGIN attribute (a trial of the final ``stage``: "final")."""
    if stage == "final":
        return "final"
    for prefix, group in ((BASELINE_PREFIX, "baseline"), (PRIOR_PREFIX, "prior"), (QUASI_RANDOM, "quasi-random"),
                          (SAMPLER_PREFIX, "sampler"), (RANDOM_PREFIX, "random"), (RETRY_PREFIX, "retry"),
                          (PROMOTED_PREFIX, "promoted")):
        if origin.startswith(prefix):
            return group
    return "other"


@dataclass
class OriginCount:
    """How many trials of one :func:`origin_group` a search holds, trained, and on its front."""

    group: str
    trials: int = 0
    trained: int = 0
    on_front: int = 0


def origin_counts(records: list[TrialRecord], front: list[TrialRecord] = ()) -> dict[str, OriginCount]:
    """:data:`ORIGIN_GROUPS` entry -> its :class:`OriginCount` (only groups with trials, in that order). A point on
    the ``front`` counts for the origin it first entered the search with (a final trial re-trains a search point)."""
    counts: dict[str, OriginCount] = {}
    entered: dict[str, str] = {}
    for record in sorted(records, key=lambda r: (r.stage == "final", r.stage, r.number)):
        group = origin_group(record.origin, record.stage)
        count = counts.setdefault(group, OriginCount(group))
        count.trials += 1
        count.trained += record.trained
        if record.key is not None and group not in ("promoted", "final", "retry"):
            entered.setdefault(record.key, group)
    for record in front:
        group = entered.get(record.key) if record.key is not None else None
        if group is not None:
            counts[group].on_front += 1
    return {group: counts[group] for group in ORIGIN_GROUPS if group in counts}


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
    def infeasible(self) -> bool:
        """A point that cannot train (every module off, over --max-params, a module it cannot build): its values, if
        any, are a penalty that teaches the sampler, never a result (no front, promotion or trained count)."""
        return bool(self.attrs.get(INFEASIBLE))

    @property
    def label(self) -> str:
        return f"{self.stage}#{self.number}"

    @property
    def origin(self) -> str:
        return str(self.attrs.get(ORIGIN, ""))

    @property
    def trivial(self) -> bool:
        """It scored at or below ignoring its input (:class:`autopeft.data.TrivialScore`): kept, so samplers learn
        from it, but never promoted and never on a front. A final trial is trivial when every seed was."""
        if RESULT in self.attrs:
            return bool(self.attrs[RESULT].get(TRIVIAL))
        seeds = self.attrs.get(SEEDS) or []
        return bool(seeds) and all(seed.get(TRIVIAL) for seed in seeds)

    @property
    def trivial_metric(self) -> float | None:
        result = self.attrs.get(RESULT) or next(iter(self.attrs.get(SEEDS) or []), {})
        return result.get(TRIVIAL_METRIC)

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
        if not record.complete or record.infeasible or not all(math.isfinite(v) for v in record.values.values()):
            continue
        if record.key in seen:
            continue
        seen.add(record.key)
        kept.append(record)
    return kept


def rankable(records: list[TrialRecord]) -> list[TrialRecord]:
    """Distinct complete points that beat the trivial score: what may be promoted or enter a front."""
    return [r for r in distinct_complete(records) if not r.trivial]


def pareto_records(records: list[TrialRecord], objectives: list[Objective]) -> list[TrialRecord]:
    """The non-dominated distinct points, best task metric first; trivial ones never enter (being small makes a
    model that learned nothing non-dominated)."""
    candidates = rankable(records)
    if not candidates:
        return []
    mask = pareto_mask(np.array([r.losses(objectives) for r in candidates]))
    front = [r for r, keep in zip(candidates, mask) if keep]
    return sorted(front, key=lambda r: r.losses(objectives)[0])


def top_stage_with_results(stages: dict[str, list[TrialRecord]]) -> str | None:
    """The highest fidelity rung holding at least one complete trial that beat the trivial score."""
    rungs = sorted((int(s.split("-")[1]) for s in stages if s.startswith("rung-")), reverse=True)
    for rung in rungs:
        if rankable(stages[f"rung-{rung}"]):
            return f"rung-{rung}"
    return None


def search_front(stages: dict[str, list[TrialRecord]],
                 objectives: list[Objective]) -> tuple[str | None, list[TrialRecord]]:
    """The highest fidelity rung with results and its Pareto front (what the final stage re-trains)."""
    stage = top_stage_with_results(stages)
    return stage, (pareto_records(stages[stage], objectives) if stage else [])


@dataclass(frozen=True)
class RungAgreement:
    """Spearman rho of the task metric between two consecutive rungs, over the ``n`` points trained at both
    (the promoted ones); None where it is undefined (fewer than 2 points, or a constant side). ``within_noise``:
    the upper rung's metrics of those points lie within two standard errors of each other (the eval subset's,
    recorded with each result), so their order there is noise and no rho could agree with it."""

    lower: int
    upper: int
    rho: float | None
    n: int
    within_noise: bool = False

    @property
    def low(self) -> bool:
        """Worth a warning: below :data:`LOW_AGREEMENT`, or undefined over 3 or more points, unless the upper rung
        does not tell the points apart beyond noise."""
        if self.within_noise:
            return False
        return (self.rho is None and self.n >= 3) or (self.rho is not None and self.rho < LOW_AGREEMENT)

    @property
    def rho_upper(self) -> float | None:
        """One-sided 95 % upper confidence bound of rho (Fisher z, Fieller et al.'s standard error for Spearman's
        rho, sqrt(1.06 / (n - 3))); None with fewer than 4 points or no rho."""
        if self.rho is None or self.n < 4:
            return None
        z = math.atanh(max(min(self.rho, 0.999999), -0.999999)) + 1.645 * math.sqrt(1.06 / (self.n - 3))
        return math.tanh(z)

    @property
    def surely_low(self) -> bool:
        """Low beyond doubt: even the upper confidence bound of rho is below :data:`LOW_AGREEMENT` (and the upper
        rung tells the points apart). Promoted points are the top of their lower rung, close to each other, so their
        rho is low by selection alone: over 6 such points on SST-2 it was -0.17 (p 0.74) where 20 random points
        ranked 0.71 between the same rungs (benchmarks/medium/fidelity.md at b738ce0), and two seeds of the same
        full training agree only at rho 0.47-0.49 over 20 points of the default space (SST-2, TREC)."""
        upper = self.rho_upper
        return not self.within_noise and upper is not None and upper < LOW_AGREEMENT

    def describe(self) -> str:
        rho = "undefined" if self.rho is None else f"{self.rho:.2f}"
        noise = " (the upper rung's metrics within 2 standard errors of each other)" if self.within_noise else ""
        return f"rung {self.lower} -> {self.upper}: Spearman rho {rho} over {self.n} configurations{noise}"

    def to_dict(self) -> dict[str, Any]:
        return {"lower": self.lower, "upper": self.upper, "rho": self.rho, "n": self.n,
                "within_noise": self.within_noise}


def agreement(lower: list[TrialRecord], upper: list[TrialRecord], metric: str, lower_rung: int) -> RungAgreement:
    """How the task metric of the points trained at both rungs ranks at each (trivial ones included)."""
    below = {r.key: r.values[metric] for r in distinct_complete(lower)}
    both = [r for r in distinct_complete(upper) if r.key in below]
    pairs = [(below[r.key], r.values[metric]) for r in both]
    rho = None
    within_noise = False
    if len(pairs) >= 2:
        x, y = np.array(pairs).T
        if np.ptp(x) > 0 and np.ptp(y) > 0:
            value = float(stats.spearmanr(x, y)[0])
            rho = value if math.isfinite(value) else None
        errors = [(r.attrs.get(RESULT) or {}).get(METRIC_STDERR) for r in both]
        errors = [e for e in errors if e is not None]
        within_noise = bool(errors) and float(np.ptp(y)) <= 2 * max(errors)
    return RungAgreement(lower_rung, lower_rung + 1, rho, len(pairs), within_noise)


def rung_agreements(stages: dict[str, list[TrialRecord]], metric: str) -> list[RungAgreement]:
    """:func:`agreement` between each pair of consecutive rungs that both hold results."""
    rungs = sorted(int(s.split("-")[1]) for s in stages if s.startswith("rung-"))
    return [agreement(stages[f"rung-{k}"], stages[f"rung-{k + 1}"], metric, k)
            for k in rungs if f"rung-{k + 1}" in stages and distinct_complete(stages[f"rung-{k + 1}"])]

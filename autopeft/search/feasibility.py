"""Which points can train, and what a sampler is told about one that cannot.

A point cannot train when every module is off (nothing to tune: the head alone is no PEFT
configuration), when it is over ``--max-params``, or when it uses a module type this search cannot
build (LoFiT without a head ranking). Samplers whose candidates we draw (BoTorch, random) never
propose such a point (:func:`infeasible_reason` filters them); Optuna's own samplers (TPE, NSGA-II,
GP) can, and a trial told PRUNED teaches them nothing, so they would propose it again and again.
So such a trial is told COMPLETE with :func:`penalised_values` (dominated: the worst task metric
seen, the whole model's parameter count) and the user attribute ``infeasible`` = reason, and the
Optuna samplers get a ``constraints_func`` reading that attribute (:func:`violation`): a violated
constraint puts the trial behind every feasible one (TPE's "above" group, NSGA-II's constrained
domination, GPSampler's feasibility model). Fronts, promotions and trained counts skip it
(:attr:`autopeft.search.records.TrialRecord.infeasible`).

A point over ``--max-params`` stays PRUNED (its reason says so, and reports count it as rejected by
the budget); it carries ``infeasible`` too, which TPE reads on pruned trials as well.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from optuna.trial import FrozenTrial

from autopeft.search import records as R
from autopeft.search.objectives import PARAMS, Objective
from autopeft.space import PeftPoint

EMPTY = "every module is off: no PEFT module to train"
OVER_BUDGET = "over --max-params"
LOFIT_NEEDS_HEADS = "LoFiT needs a head ranking (--prior heads), which this search does not have"


def infeasible_reason(point: PeftPoint, adapter_params: int, max_params: int | None,
                      unavailable: Mapping[str, str] | None = None) -> str | None:
    """Why ``point`` cannot train (None: it can); ``unavailable`` maps module types the search cannot build to why."""
    if max_params is not None and adapter_params > max_params:
        return f"{OVER_BUDGET}: {adapter_params:,} > {max_params:,}"
    if adapter_params == 0:
        return EMPTY
    for module in point.modules:
        if unavailable and module in unavailable:
            return unavailable[module]
    return None


def penalised_values(objectives: Sequence[Objective], observed: Iterable[Sequence[float]], adapter_params: int,
                     model_params: int) -> list[float]:
    """Objective values that no feasible point can lose to: each measured objective at the worst value seen so far
    (at its bound with nothing seen: 0 for a maximised metric, 1e6 for a minimised one), the parameter count at the
    whole model's (never below the point's own). Values stay finite and in the observed range, so a GP's
    standardisation is not thrown by an outlier."""
    seen = [list(v) for v in observed if all(math.isfinite(x) for x in v)]
    values = []
    for index, objective in enumerate(objectives):
        if objective.name == PARAMS:
            values.append(float(max(model_params, adapter_params)))
        elif seen:
            column = [v[index] for v in seen]
            values.append(min(column) if objective.maximize else max(column))
        else:
            values.append(0.0 if objective.maximize else 1e6)
    return values


def violation(trial: FrozenTrial) -> Sequence[float]:
    """Optuna's ``constraints_func``: > 0 for an infeasible trial, feasible otherwise."""
    return [1.0 if trial.user_attrs.get(R.INFEASIBLE) else -1.0]

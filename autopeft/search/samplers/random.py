"""Uniform random points that can train: the baseline every model-based sampler must beat.

Optuna's RandomSampler draws each parameter on its own, so on a space of optional modules it proposes
points with every module off (or over ``--max-params``) as often as chance makes them, and points it
proposed before. This one draws whole points of the space uniformly and keeps the first that can train
and is new (:meth:`SamplerContext.infeasible`), i.e. uniform over the feasible, untried points.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import optuna

from autopeft.search.samplers._whole_point import WholePointSampler

DESCRIPTION = "uniform random search over the points that can train"
DRAWS = 2000   # whole points drawn before giving up on a new feasible one (the engine then rejects or dedupes)


def create(context) -> optuna.samplers.BaseSampler:
    return FeasibleRandomSampler(context)


class FeasibleRandomSampler(WholePointSampler):
    def __init__(self, context):
        super().__init__(context.seed)
        self.context = context
        self._rng = np.random.default_rng(context.seed)

    def _key(self, params: dict[str, Any]) -> str:
        return json.dumps(self.context.space.decode(params).to_dict(), sort_keys=True, default=str)

    def _plan(self, study: optuna.Study) -> dict[str, Any] | None:
        space = self.context.space
        tried = {self._key(t.params) for t in study.get_trials(deepcopy=False) if t.params}
        for _ in range(DRAWS):
            params = space.active_params(space.sample(self._rng))
            if self.context.infeasible(params) is None and self._key(params) not in tried:
                return params
        return None

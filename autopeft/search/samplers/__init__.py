"""Samplers by name, one module each; every module exposes ``DESCRIPTION`` and ``create(context)``.

All of them return an Optuna sampler, so studies stay plain Optuna studies (optuna-dashboard,
resume, any storage). The registry only maps a name to its module and imports it on demand:
optional dependencies (BoTorch) are needed only when that sampler is chosen.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna

from autopeft.errors import AutopeftError
from autopeft.search.feasibility import infeasible_reason
from autopeft.search.objectives import Objective
from autopeft.space import SearchSpace

SAMPLERS: dict[str, str] = {
    "botorch": "autopeft.search.samplers.botorch",
    "gp": "autopeft.search.samplers.gp",
    "tpe": "autopeft.search.samplers.tpe",
    "nsga2": "autopeft.search.samplers.nsga2",
    "random": "autopeft.search.samplers.random",
}


@dataclass(frozen=True)
class SamplerContext:
    """What a sampler may know beyond the study: the space and the exact parameter count."""

    space: SearchSpace
    objectives: list[Objective]
    seed: int
    count_params: Callable[[dict[str, Any]], int]   # Optuna params -> exact trainable adapter parameters
    max_params: int | None
    model_params: int                               # scale for normalising parameter counts
    expected_trials: int | None = None
    unavailable: Mapping[str, str] = field(default_factory=dict)   # module types the search cannot build -> why

    def infeasible(self, params: dict[str, Any]) -> str | None:
        """Why a point cannot train (None: it can): every module off, over ``max_params``, an unavailable module.
        The engine judges its trials by the same rule (:func:`autopeft.search.feasibility.infeasible_reason`)."""
        return infeasible_reason(self.space.decode(params), self.count_params(params), self.max_params,
                                 self.unavailable)


def botorch_available() -> bool:
    return importlib.util.find_spec("botorch") is not None


def default_sampler_name() -> str:
    return "botorch" if botorch_available() else "gp"


def create_sampler(name: str, context: SamplerContext) -> optuna.samplers.BaseSampler:
    key = name.strip().lower().replace("-", "").replace("_", "")
    key = {"nsgaii": "nsga2", "auto": default_sampler_name()}.get(key, key)
    if key not in SAMPLERS:
        raise AutopeftError(f"unknown sampler '{name}' (choose from: auto, {', '.join(SAMPLERS)})")
    return importlib.import_module(SAMPLERS[key]).create(context)


def canonical_sampler_name(name: str) -> str:
    key = name.strip().lower().replace("-", "").replace("_", "")
    return {"nsgaii": "nsga2", "auto": default_sampler_name()}.get(key, key)

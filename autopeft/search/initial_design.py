"""The first points of a search: named baselines the space can express, then quasi-random ones.

A baseline is a wish ("LoRA r=8 on query/value in every layer"); :func:`baseline_params` walks
the space's dimensions in order and picks, for each, the value closest to the wish. The result
is kept only when it decodes to exactly the wished module types on every layer, so a space that
cannot express a baseline skips it with a note instead of enqueuing something else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from scipy.stats import qmc

from autopeft.modules import get_module_type
from autopeft.space import SearchSpace


@dataclass(frozen=True)
class ModuleWish:
    size: float | None = None                      # wished size in units of a 768-wide model when scaled
    scale_with_hidden: bool = False                # bottlenecks scale with the hidden size
    targets: tuple[str, ...] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    lr: float | None = None                        # learning rate (None: the module type's default)


@dataclass(frozen=True)
class Baseline:
    name: str
    description: str
    modules: dict[str, ModuleWish]


# The baselines train at their module types' default rates, not at their papers': those were tuned for 10-80 epochs
# (LoRA 4e-4 to 5e-4 over 30-80 epochs of GLUE, Pfeiffer's adapter 1e-4 over 30 epochs, Houlsby's 3e-5 to 3e-3 over
# 3-20), while a search trains a few hundred to a few thousand steps, where LoRA at 5e-4 stayed at a sentence-pair
# task's majority class and 3e-3 cleared it (issue 17). The types' defaults (autopeft/modules/) are set for that
# budget. Where a space searches or fixes rates, a baseline takes its rate (ModuleWish.lr, else the type's default)
# clipped to the space's range; a space's one training.learning_rate gets the baseline's largest module rate.
BASELINES: tuple[Baseline, ...] = (
    Baseline("lora", "LoRA r=8 on query/value (Hu et al., 2021)",
             {"lora": ModuleWish(size=8, targets=("query", "value"), options={"alpha": 2.0})}),
    Baseline("pfeiffer", "serial bottleneck adapter after the FFN, reduction 16 (Pfeiffer et al., 2021)",
             {"serial_adapter": ModuleWish(size=48, scale_with_hidden=True, options={"location": "ffn"})}),
    Baseline("parallel_adapter", "parallel adapter on the FFN, scaling 4 (He et al., 2022)",
             {"parallel_adapter": ModuleWish(size=48, scale_with_hidden=True,
                                             options={"location": "ffn", "scaling": 4.0})}),
    Baseline("prefix", "prefix tuning, 30 virtual tokens (Li & Liang, 2021)", {"prefix": ModuleWish(size=30)}),
    Baseline("mam", "mix-and-match: prefix 30 + parallel FFN adapter 512 (He et al., 2022)",
             {"prefix": ModuleWish(size=30),
              "parallel_adapter": ModuleWish(size=512, scale_with_hidden=True,
                                             options={"location": "ffn", "scaling": 4.0})}),
)


def _closest_level(grid: list[float], wished: float) -> int:
    """Index of the non-zero grid value closest to ``wished`` on a log scale."""
    candidates = [i for i, v in enumerate(grid) if v > 0]
    return min(candidates, key=lambda i: abs(math.log(grid[i]) - math.log(wished)))


def _training_value(dim_name: str, dist, largest_module_rate: float | None):
    """A training dimension's value that leaves the module rates as they are: ``lr_scale`` 1, one searched
    ``learning_rate`` at the largest module rate (mid-range without one), anything else mid-range."""
    if dim_name == "training.lr_scale":
        return _clipped(dist, 1.0)
    if dim_name == "training.learning_rate" and largest_module_rate is not None:
        return _clipped(dist, largest_module_rate)
    return _middle(dist)


def _value_for(space: SearchSpace, baseline: Baseline, dim_name: str, dist, hidden: int):
    module, _, rest = dim_name.partition(".")
    if dim_name.startswith("layer_"):  # shared placement: every layer on
        return 1
    if dim_name.startswith("training."):
        largest = max((_wished_lr(name, wish, hidden) for name, wish in baseline.modules.items()), default=None)
        return _training_value(dim_name, dist, largest)
    wish = baseline.modules.get(module)
    if rest == "lr":
        return _clipped(dist, _wished_lr(module, wish, hidden)) if wish is not None else _middle(dist)
    if rest == "on":
        return int(wish is not None)
    if wish is None:
        if rest == "size_level" or rest.startswith("size_level."):
            grid = space.grids[module]
            return grid.index(0) if 0 in grid else 0  # switch the module off if the grid allows it
        return _middle(dist)
    if rest.startswith("layer_"):
        return 1
    if rest == "size_level" or rest.startswith("size_level."):
        size = _wished_size(wish, hidden)
        return _closest_level(space.grids[module], max(size, 1))
    if rest == "targets" and wish.targets is not None:
        wanted = "+".join(wish.targets)
        return wanted if wanted in dist.choices else dist.choices[0]
    if rest in wish.options and isinstance(dist, CategoricalDistribution):
        return wish.options[rest] if wish.options[rest] in dist.choices else dist.choices[0]
    return _middle(dist)


def _wished_size(wish: ModuleWish, hidden: int) -> float | None:
    """The size a wish has on a model ``hidden`` wide (bottlenecks are given for a 768-wide one)."""
    return wish.size * hidden / 768 if wish.scale_with_hidden and wish.size is not None else wish.size


def _wished_lr(module: str, wish: ModuleWish, hidden: int) -> float:
    return wish.lr if wish.lr is not None else get_module_type(module).default_rate(_wished_size(wish, hidden))


def _clipped(dist, value: float):
    """``value`` within ``dist``: clipped to a range, or the choice closest on a log scale."""
    if isinstance(dist, CategoricalDistribution):
        numbers = [c for c in dist.choices if isinstance(c, (int, float)) and c > 0]
        if not numbers:
            return dist.choices[0]
        return min(numbers, key=lambda c: abs(math.log(c) - math.log(value)))
    return float(min(max(value, dist.low), dist.high))


def _middle(dist):
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[0]
    if isinstance(dist, IntDistribution):
        return (dist.low + dist.high) // 2
    if dist.log:
        return math.exp((math.log(dist.low) + math.log(dist.high)) / 2)
    return (dist.low + dist.high) / 2


def baseline_params(space: SearchSpace, baseline: Baseline) -> tuple[dict[str, Any] | None, str]:
    """(params, "") when the space expresses the baseline, else (None, why not)."""
    params: dict[str, Any] = {}
    for dim in space.dimensions:
        if dim.active(params):
            params[dim.name] = _value_for(space, baseline, dim.name, dim.distribution, space.dims.hidden)
    point = space.decode(params)
    if set(point.modules) != set(baseline.modules):
        return None, (f"the space cannot express exactly {sorted(baseline.modules)} "
                      f"(would give {sorted(point.modules) or 'none'})")
    for name, wish in baseline.modules.items():
        module = point.modules[name]
        if module.layers != space.layers:
            return None, f"'{name}' cannot be placed on every layer"
        if wish.targets is not None and tuple(module.targets) != wish.targets:
            return None, f"'{name}' cannot target {'/'.join(wish.targets)}"
        for option, value in wish.options.items():
            if option in module.options and module.options[option] != value:
                return None, f"'{name}' cannot use {option}={value}"
    return space.validate_params(params), ""


def neutral_training_params(space: SearchSpace, point) -> dict[str, Any]:
    """The space's training dimensions at the values that leave ``point``'s module rates as they are: ``lr_scale`` 1,
    one searched ``learning_rate`` at the point's largest module rate, anything else mid-range (for a point chosen
    without a view on its training, e.g. by one-shot screening)."""
    from autopeft.builders import module_learning_rates

    largest = max(module_learning_rates(type(point)(point.modules)).values(), default=None)
    return {dim.name: _training_value(dim.name, dim.distribution, largest)
            for dim in space.dimensions if dim.name.startswith("training.")}


def quasi_random_params(space: SearchSpace, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` scrambled-Sobol points: one coordinate per dimension, used only where the dimension is active."""
    if n <= 0:
        return []
    sobol = qmc.Sobol(d=len(space.dimensions), scramble=True, seed=seed)
    units = sobol.random(2 ** math.ceil(math.log2(max(n, 2))))[:n]
    points = []
    for row in units:
        params: dict[str, Any] = {}
        for u, dim in zip(row, space.dimensions):
            if dim.active(params):
                params[dim.name] = _from_unit(dim.distribution, float(u))
        points.append(params)
    return points


def _from_unit(dist, u: float):
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[min(int(u * len(dist.choices)), len(dist.choices) - 1)]
    if isinstance(dist, IntDistribution):
        return min(dist.low + int(u * (dist.high - dist.low + 1)), dist.high)
    assert isinstance(dist, FloatDistribution)
    if dist.log:
        return float(math.exp(math.log(dist.low) + u * (math.log(dist.high) - math.log(dist.low))))
    return float(dist.low + u * (dist.high - dist.low))


def default_quasi_random_count(trials: int | None, dimensions: int) -> int:
    """About a fifth of the budget, at least 2, at most 2 * dimensions (capped at 16)."""
    budget = trials if trials is not None else 50
    return int(np.clip(round(budget / 5), 2, min(16, max(2, 2 * dimensions))))

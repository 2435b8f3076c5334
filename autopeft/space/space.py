"""A search space bound to a model: Optuna dimensions, decoding of points, sampling.

A *point* is the flat dict of parameters Optuna stores for a trial (``{"layer_3": 1,
"lora.size_level": 2, ...}``); :meth:`SearchSpace.decode` turns it into a :class:`PeftPoint`.
Sizes are searched as ordinal levels into their grid (``*.size_level``), so model-based samplers
see an ordered integer, not an unordered category. A dimension with a parent exists only when
the parent's value is one of ``parent_values`` (define-by-run conditionality, as Optuna does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from autopeft.arch import Architecture, Dimensions, architecture_for
from autopeft.errors import SpaceError
from autopeft.modules import ModuleType, get_module_type
from autopeft.space.point import ModuleChoice, PeftPoint
from autopeft.space.schema import OPTION_FIELDS, Choice, ModuleSpec, Range, SizeGrid, SpaceSpec, read_space_file


@dataclass(frozen=True)
class Dimension:
    name: str
    distribution: BaseDistribution
    parent: str | None = None
    parent_values: tuple = ()

    def active(self, params: dict[str, Any]) -> bool:
        return self.parent is None or params.get(self.parent) in self.parent_values


def _suggest(trial, dim: Dimension):
    dist = dim.distribution
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(dim.name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(dim.name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_categorical(dim.name, dist.choices)


def _targets_key(targets: list[str]) -> str:
    return "+".join(targets)


class SearchSpace:
    """A :class:`SpaceSpec` bound to one model config."""

    def __init__(self, spec: SpaceSpec, model_config, source: str = "<space>"):
        self.spec = spec
        self.source = source
        self.model_config = model_config
        self.arch: Architecture = architecture_for(model_config)
        self.dims: Dimensions = self.arch.dims(model_config)
        self.layers = self._layers()
        self.grids: dict[str, list[float]] = {}
        self.dimensions: list[Dimension] = []
        self._build_dimensions()

    @classmethod
    def from_file(cls, path: str | Path, model_config) -> SearchSpace:
        return cls(read_space_file(path), model_config, str(path))

    # ----------------------------------------------------------- validation
    def _error(self, field: str, message: str) -> SpaceError:
        return SpaceError(f"{self.source}: field '{field}': {message}")

    def _layers(self) -> list[int]:
        layers = self.spec.placement.layers
        if layers is None:
            return list(range(self.dims.num_layers))
        bad = [i for i in layers if not 0 <= i < self.dims.num_layers]
        if bad:
            raise self._error("placement.layers", f"layer(s) {bad} do not exist (the model has {self.dims.num_layers})")
        return sorted(set(layers))

    def _grid(self, module: str, size: SizeGrid) -> list[float]:
        values = size.grid
        if size.scale_to_hidden:
            factor = self.dims.hidden / size.scale_to_hidden
            scaled = [0 if v == 0 else max(1, round(v * factor)) for v in values]
            values = list(dict.fromkeys(scaled))  # rescaling can merge small sizes
        if get_module_type(module).integer_sizes:
            if any(v != int(v) for v in values):
                raise self._error(f"modules.{module}.size.grid", "sizes must be whole numbers")
            values = [int(v) for v in values]
        self._check_fits(module, max(values))
        return values

    def _check_fits(self, module: str, largest: float) -> None:
        kind = get_module_type(module)
        limit = kind.max_size(self.dims, len(self.layers))
        if limit is not None and largest > limit:
            raise self._error(f"modules.{module}.size",
                              f"{kind.size} {largest} does not fit the model (at most {limit})")

    def _check_applies(self, module: str, kind: ModuleType, spec: ModuleSpec) -> None:
        """The spec's fields are ones this module type has (a field it lacks would be silently ignored)."""
        if kind.size is None and spec.size is not None:
            raise self._error(f"modules.{module}.size", f"'{module}' has no size")
        if kind.size is not None and spec.size is None:
            raise self._error(f"modules.{module}.size", f"'{module}' needs a size ({kind.size})")
        if kind.targets is None and spec.targets is not None:
            raise self._error(f"modules.{module}.targets", f"'{module}' has no target matrices")
        for option in OPTION_FIELDS:
            if getattr(spec, option) is not None and option not in kind.options:
                has = ", ".join(kind.options) or "none"
                raise self._error(f"modules.{module}.{option}",
                                  f"'{module}' has no option '{option}' (its options: {has})")
        problem = kind.unsupported(self.arch)
        if problem:
            raise self._error(f"modules.{module}", problem)

    # ----------------------------------------------------------- dimensions
    def _add(self, name, distribution, parent=None, parent_values=()):
        self.dimensions.append(Dimension(name, distribution, parent, tuple(parent_values)))

    def _build_dimensions(self) -> None:
        placement = self.spec.placement.mode
        if placement == "shared":
            for layer in self.layers:
                self._add(f"layer_{layer}", IntDistribution(0, 1))
        self._check_rates()
        for module, spec in self.spec.modules.items():
            self._module_dimensions(module, spec, placement)
        for key, value in self.spec.training.items():
            if isinstance(value, Range):
                self._add(f"training.{key}", FloatDistribution(value.low, value.high, log=value.log))
            elif isinstance(value, Choice):
                self._add(f"training.{key}", CategoricalDistribution(value.choices))
        if self.spec.data is not None:
            for key in ("strategy", "size"):
                value = getattr(self.spec.data, key)
                if isinstance(value, Choice):
                    self._add(f"data.{key}", CategoricalDistribution(value.choices))

    def _check_rates(self) -> None:
        """``training.learning_rate`` (one rate for every parameter, as spaces had before per-module rates) does not
        mix with per-module rates or their scale: which one a trial used would hang on a precedence nobody wrote."""
        if "learning_rate" not in self.spec.training:
            return
        if "lr_scale" in self.spec.training:
            raise self._error("training.lr_scale", "give training.learning_rate (one rate for every module) or "
                                                   "training.lr_scale (a factor on each module type's rate), not both")
        for module, spec in self.spec.modules.items():
            if spec.lr is not None:
                raise self._error(f"modules.{module}.lr", "training.learning_rate already sets one rate for every "
                                                          "module; drop one of the two")

    def _lr_range(self, module: str, spec: ModuleSpec) -> Range | None:
        """The range a module's searched rate spans (``lr: prior``: its type's own, log scale); None: not searched."""
        if spec.lr == "prior":
            prior = get_module_type(module).learning_rate
            return Range(low=prior.low, high=prior.high, log=True)
        return spec.lr if isinstance(spec.lr, Range) else None

    def _module_dimensions(self, module: str, spec: ModuleSpec, placement: str) -> None:
        parent, parent_values = None, ()
        if spec.optional:
            self._add(f"{module}.on", IntDistribution(0, 1))
            parent, parent_values = f"{module}.on", (1,)
        size = spec.size
        self._check_applies(module, get_module_type(module), spec)
        if isinstance(size, (int, float)):
            self._check_fits(module, size)
        per_layer = isinstance(size, SizeGrid) and size.tie == "per_layer"
        if isinstance(size, SizeGrid):
            grid = self._grid(module, size)
            self.grids[module] = grid
            if not per_layer:
                name = f"{module}.size_level"
                self._add(name, IntDistribution(0, len(grid) - 1), parent, parent_values)
                parent, parent_values = name, tuple(i for i, v in enumerate(grid) if v != 0)
        for option in ("targets", *OPTION_FIELDS):
            values = getattr(spec, option)
            if isinstance(values, Choice):
                choices = [_targets_key(c) for c in values.choices] if option == "targets" else values.choices
                self._add(f"{module}.{option}", CategoricalDistribution(choices), parent, parent_values)
        lr = self._lr_range(module, spec)
        if lr is not None:
            self._add(f"{module}.lr", FloatDistribution(lr.low, lr.high, log=lr.log), parent, parent_values)
        for layer in self.layers:
            layer_parent, layer_values = parent, parent_values
            if placement == "per_module":
                self._add(f"{module}.layer_{layer}", IntDistribution(0, 1), parent, parent_values)
                layer_parent, layer_values = f"{module}.layer_{layer}", (1,)
            elif placement == "shared":
                layer_parent, layer_values = f"layer_{layer}", (1,)
            if per_layer:
                self._add(f"{module}.size_level.layer_{layer}", IntDistribution(0, len(self.grids[module]) - 1),
                          layer_parent, layer_values)

    # ------------------------------------------------------------- points
    @property
    def distributions(self) -> dict[str, BaseDistribution]:
        return {d.name: d.distribution for d in self.dimensions}

    def suggest(self, trial) -> dict[str, Any]:
        """Ask an Optuna trial for a point, define-by-run (conditional dimensions only when active)."""
        params: dict[str, Any] = {}
        for dim in self.dimensions:
            if dim.active(params):
                params[dim.name] = _suggest(trial, dim)
        return params

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """A uniformly random point (each active dimension independently)."""
        params: dict[str, Any] = {}
        for dim in self.dimensions:
            if not dim.active(params):
                continue
            dist = dim.distribution
            if isinstance(dist, IntDistribution):
                params[dim.name] = int(rng.integers(dist.low, dist.high + 1))
            elif isinstance(dist, CategoricalDistribution):
                params[dim.name] = dist.choices[int(rng.integers(len(dist.choices)))]
            else:
                low, high = (math.log(dist.low), math.log(dist.high)) if dist.log else (dist.low, dist.high)
                value = float(rng.uniform(low, high))
                params[dim.name] = math.exp(value) if dist.log else value
        return params

    def active_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """Only the parameters that exist for this point (drops values under inactive parents)."""
        active: dict[str, Any] = {}
        for dim in self.dimensions:
            if dim.active(active) and dim.name in params:
                active[dim.name] = params[dim.name]
        return active

    def validate_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """Check a user-given point (e.g. an enqueued baseline); returns the active parameters."""
        known = self.distributions
        unknown = [k for k in params if k not in known]
        if unknown:
            raise SpaceError(f"{self.source}: point has unknown parameter(s) {unknown}")
        active = self.active_params(params)
        for dim in self.dimensions:
            if dim.active(active):
                if dim.name not in active:
                    raise SpaceError(f"{self.source}: point is missing parameter '{dim.name}'")
                if not dim.distribution._contains(dim.distribution.to_internal_repr(active[dim.name])):
                    raise SpaceError(f"{self.source}: point value {active[dim.name]!r} is outside '{dim.name}'")
        return active

    def decode(self, params: dict[str, Any]) -> PeftPoint:
        params = self.active_params(params)
        try:
            return self._decode(params)
        except KeyError as exc:  # a dimension the point needs is not in it
            raise SpaceError(f"{self.source}: point is missing parameter '{exc.args[0]}'") from None

    def _decode(self, params: dict[str, Any]) -> PeftPoint:
        modules: dict[str, ModuleChoice] = {}
        for module, spec in self.spec.modules.items():
            choice = self._decode_module(module, spec, params)
            if choice is not None:
                modules[module] = choice
        training = {}
        for key, value in self.spec.training.items():
            training[key] = params[f"training.{key}"] if isinstance(value, (Range, Choice)) else value
        data = {}
        if self.spec.data is not None:
            for key in ("strategy", "size"):
                value = getattr(self.spec.data, key)
                data[key] = params[f"data.{key}"] if isinstance(value, Choice) else value
        return PeftPoint(modules=modules, training=training, data=data)

    def _option(self, module: str, name: str, value, params, default):
        if isinstance(value, Choice):
            return params[f"{module}.{name}"]
        return default if value is None else value

    def _decode_module(self, module: str, spec: ModuleSpec, params: dict) -> ModuleChoice | None:
        if spec.optional and not params.get(f"{module}.on"):
            return None
        placement = self.spec.placement.mode
        on_layers = [
            layer for layer in self.layers
            if placement == "all"
            or (placement == "shared" and params.get(f"layer_{layer}"))
            or (placement == "per_module" and params.get(f"{module}.layer_{layer}"))
        ]
        size = spec.size
        sizes: dict[int, float] = {}
        if isinstance(size, SizeGrid):
            grid = self.grids[module]
            if size.tie == "per_layer":
                sizes = {layer: grid[params[f"{module}.size_level.layer_{layer}"]] for layer in on_layers}
            else:
                sizes = dict.fromkeys(on_layers, grid[params[f"{module}.size_level"]])
        elif size is not None:
            sizes = dict.fromkeys(on_layers, size)
        else:
            sizes = dict.fromkeys(on_layers, 1)
        sizes = {layer: value for layer, value in sizes.items() if value}
        if not sizes:
            return None
        kind = get_module_type(module)
        targets = self._option(module, "targets", spec.targets, params, kind.targets)
        if isinstance(targets, str):
            targets = targets.split("+")
        options = {}
        for option, default in kind.options.items():
            value = self._option(module, option, getattr(spec, option), params, default)
            options[option] = float(value) if isinstance(default, float) else value
        lr = params[f"{module}.lr"] if self._lr_range(module, spec) is not None else spec.lr
        return ModuleChoice(module, sizes, tuple(targets) if targets else (), options,
                            None if lr is None else float(lr))

    # ------------------------------------------------------------ summary
    def cardinality(self) -> float:
        """Number of distinct parameter settings (inf with a continuous dimension)."""
        children: dict[str | None, list[Dimension]] = {}
        for dim in self.dimensions:
            children.setdefault(dim.parent, []).append(dim)

        def count(dim: Dimension) -> float:
            dist = dim.distribution
            if isinstance(dist, FloatDistribution):
                return math.inf
            values = range(dist.low, dist.high + 1) if isinstance(dist, IntDistribution) else dist.choices
            total = 0.0
            for value in values:
                sub = 1.0
                for child in children.get(dim.name, []):
                    if value in child.parent_values:
                        sub *= count(child)
                total += sub
            return total

        result = 1.0
        for dim in children.get(None, []):
            result *= count(dim)
        return result

"""A super-adapter: every configuration of a search space as a sub-network of one trained PEFT model.

The space's largest configuration (every nestable module type on, at its largest size, on every layer the space
allows, on the union of its target choices) is built with :mod:`autopeft.builders` like any point; each of its
tuner layers gets a :class:`~autopeft.priors.oneshot.nesting.Nest` that switches it to a leading slice. Activating a
point (:meth:`SuperAdapter.activate`) sets every nest to the point's size there (0 where the point has nothing), so
the model then computes that point with the super-adapter's leading weights: exactly what the stand-alone point
built with those weights computes (:meth:`SuperAdapter.extract` builds it; ``tests/test_oneshot.py`` checks the
logits to 1e-6).

Training (:func:`autopeft.priors.oneshot.train_super_adapter`) samples a configuration per optimiser step, so
smaller configurations learn to work on their own. Module types that do not nest (see
:mod:`~autopeft.priors.oneshot.nesting`) are left out of the super-adapter: screening scores the space with them
off, which needs them to be switchable off (``optional``, or 0 in their size grid).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from autopeft.builders import build_adapter
from autopeft.builders.build import TASK_TYPES
from autopeft.errors import SpaceError
from autopeft.modules import Target, get_module_type
from autopeft.priors.oneshot.nesting import NESTS, Nest
from autopeft.space import SearchSpace, count_trainable_params
from autopeft.space.point import ModuleChoice, PeftPoint
from autopeft.space.schema import OPTION_FIELDS, Choice, SizeGrid

NESTED_OPTIONS = ("targets", "alpha", "scaling", "location")
"""Options a space may search on a nested module: a target set is a subset of their union, alpha and scaling a factor
on the output, and each searched location gets its own module in the super-adapter."""

SANDWICH = (0.25, 0.25)
"""Chances that a training step trains the largest and the smallest configuration (the sandwich rule of BigNAS,
Yu et al. 2020, spread over steps); the other steps train a configuration drawn uniformly from the space."""

MAX_DRAWS = 50   # draws of the space for a step before it falls back to the smallest configuration


def plain_name(name: str) -> str:
    """A parameter's name with the wrappers of shared modules dropped: in a super-adapter LoRA sits inside the
    bottleneck layer of the same Linear (``...output.dense.base_layer.lora_A...``), stand-alone it does not."""
    return name.replace(".base_layer.", ".")


class SuperAdapter:
    """A PEFT model of a space's largest configuration whose nested modules switch to any configuration's slice."""

    def __init__(self, space: SearchSpace, kind: str):
        self.space = space
        self.kind = kind
        self.nested, self.left_out = self.screened_modules(space)
        self.target = Target(space.arch, space.dims, TASK_TYPES[kind])
        self.largest = self._largest()
        self.smallest = self._smallest()
        self.model: nn.Module | None = None
        self.nests: dict[tuple[str, str], Nest] = {}   # (module type, module name) -> nest
        self.active: PeftPoint | None = None
        self.pinned: PeftPoint | None = None         # what eval-mode forwards compute (None: the largest)
        self._sampling = False
        self._by_holder: dict[nn.Module, list[Nest]] = {}   # a tuner layer -> the nests it holds

    # ------------------------------------------------------------------ the space
    @staticmethod
    def screened_modules(space: SearchSpace) -> tuple[list[str], dict[str, str]]:
        """The space's modules a super-adapter nests, and those it leaves out with why; raises SpaceError when the
        space cannot be screened at all."""
        nested, left_out = [], {}
        for name, spec in space.spec.modules.items():
            kind = get_module_type(name)
            if name not in NESTS or kind.size is None:
                left_out[name] = "its sizes do not nest" if kind.size is not None else "unsized: nothing to nest"
                can_be_off = spec.optional or (isinstance(spec.size, SizeGrid) and 0 in space.grids.get(name, ()))
                if not can_be_off:
                    raise SpaceError(f"{space.source}: '{name}' cannot be nested in a super-adapter and is always on; "
                                     "one-shot screening needs it optional (or 0 in its size grid)")
                continue
            searched = [option for option in ("targets", *OPTION_FIELDS)
                        if isinstance(getattr(spec, option, None), Choice) and option not in NESTED_OPTIONS]
            if searched:
                raise SpaceError(f"{space.source}: '{name}' searches its {searched[0]}, which a super-adapter cannot "
                                 "nest; fix it for one-shot screening")
            nested.append(name)
        if not nested:
            raise SpaceError(f"{space.source}: no module type of the space nests in a super-adapter "
                             f"(those that do: {', '.join(NESTS)})")
        return nested, left_out

    def screened(self, point: PeftPoint) -> PeftPoint:
        """``point`` without the modules the super-adapter leaves out (what a one-shot score is of)."""
        return PeftPoint({k: m for k, m in point.modules.items() if m.type in self.nested}, point.training, point.data)

    def _module_at(self, name: str, sizes: dict[int, float], targets: list[str] | None,
                   options: dict | None = None) -> ModuleChoice:
        kind = get_module_type(name)
        spec = self.space.spec.modules[name]
        defaults = {}
        for option, default in kind.options.items():
            value = getattr(spec, option, None)
            defaults[option] = (value.choices[0] if isinstance(value, Choice) else default if value is None else value)
        return ModuleChoice(name, sizes, tuple(targets or ()), {**defaults, **(options or {})})

    def _target_sets(self, name: str) -> list[list[str]]:
        spec_targets = self.space.spec.modules[name].targets
        if isinstance(spec_targets, Choice):
            return [list(t) for t in spec_targets.choices]
        default = get_module_type(name).targets
        return [list(spec_targets if spec_targets is not None else default or [])]

    def _sizes(self, name: str) -> list[float]:
        size = self.space.spec.modules[name].size
        if isinstance(size, SizeGrid):
            return [v for v in self.space.grids[name] if v]
        return [size]

    def _largest(self) -> PeftPoint:
        """Every nested module at its largest size on every layer, on the union of its target sets; a module whose
        location is searched once per location (``serial_adapter@attention``, ...)."""
        modules = {}
        for name in self.nested:
            roles = set().union(*map(set, self._target_sets(name)))
            targets = [role for role in self.space.arch.matrices if role in roles]   # table order
            sizes = dict.fromkeys(self.space.layers, max(self._sizes(name)))
            location = getattr(self.space.spec.modules[name], "location", None)
            if isinstance(location, Choice):
                for site in location.choices:
                    modules[f"{name}@{site}"] = self._module_at(name, sizes, targets or None, {"location": site})
            else:
                modules[name] = self._module_at(name, sizes, targets or None)
        return PeftPoint(modules)

    def _smallest(self) -> PeftPoint:
        """The configuration with the fewest parameters among single modules at their smallest size."""
        placement = self.space.spec.placement.mode
        layers = self.space.layers if placement == "all" else self.space.layers[:1]
        candidates = []
        for name in self.nested:
            targets = min(self._target_sets(name), key=len) or None
            point = PeftPoint({name: self._module_at(name, dict.fromkeys(layers, min(self._sizes(name))), targets)})
            candidates.append((count_trainable_params(point, self.space.model_config), point))
        return min(candidates, key=lambda c: c[0])[1]

    def draw(self, rng: np.random.Generator) -> PeftPoint:
        """A configuration drawn uniformly from the space (each dimension independently), screened."""
        for _ in range(MAX_DRAWS):
            point = self.screened(self.space.decode(self.space.sample(rng)))
            if not point.is_empty:
                return point
        return self.smallest

    # ------------------------------------------------------------------ the model
    def build(self, model: nn.Module) -> nn.Module:
        """Build the largest configuration on ``model`` (a fresh base-model copy) and nest its modules."""
        self.model = build_adapter(self.largest, self.space.model_config, self.kind)(model)
        for module in self.largest.modules.values():
            nest_cls = NESTS[module.type]
            for site in get_module_type(module.type).nested_sites(module, self.target):
                self.nests[(module.type, site)] = nest_cls(self._holder(site, nest_cls))
        self._by_holder = {}
        for nest in self.nests.values():
            self._by_holder.setdefault(nest.holder, []).append(nest)
        self.model.register_forward_pre_hook(self._before_forward)
        self.active = self.largest
        return self.model

    def _holder(self, site: str, nest_cls: type[Nest]) -> nn.Module:
        """The tuner layer at ``site`` holding ``nest_cls``'s module (inside other tuner layers of the same Linear, or
        of a block around it: a parallel adapter on Llama's whole MLP)."""
        for name, module in self.model.named_modules():
            name = plain_name(name)
            if name == site or name.endswith("." + site):
                while module is not None:
                    if nest_cls.holds(module):
                        return module
                    module = getattr(module, "base_layer", None)
        raise SpaceError(f"the super-adapter has no {nest_cls.module_type} module at '{site}'")

    def activate(self, point: PeftPoint) -> None:
        """Make the model compute ``point`` (screened: modules the super-adapter leaves out are ignored)."""
        self.active = point
        point = self.screened(point)
        wanted: dict[tuple[str, str], tuple[int, ModuleChoice]] = {}
        for module in point.modules.values():
            for site, size in get_module_type(module.type).nested_sites(module, self.target).items():
                if (module.type, site) not in self.nests:
                    raise SpaceError(f"{point.describe()} puts {module.type} on '{site}', outside the super-adapter")
                wanted[(module.type, site)] = (size, module)
        for key, nest in self.nests.items():
            size, module = wanted.get(key, (0, None))
            nest.set(size, module)
        for holder, nests in self._by_holder.items():
            # a tuner layer whose modules are all off skips them (PEFT's per-layer switch): no compute spent on
            # zeros, and no gradient, so AdamW's momentum does not move weights the step did not use
            holder._disable_adapters = all(nest.size == 0 for nest in nests)

    def pin(self, point: PeftPoint | None) -> None:
        """What the model computes outside training (scoring); None: the largest configuration."""
        self.pinned = point
        self.activate(point if point is not None else self.largest)

    def train_sampling(self, enabled: bool = True) -> None:
        """Whether each training forward draws its configuration (the largest, the smallest or a uniform one).

        The draws use torch's generator, which a resumed training restores (:mod:`autopeft.trial.loop`), so a
        training continued from a checkpoint draws what an uninterrupted one would."""
        self._sampling = enabled

    def _before_forward(self, module, args, kwargs=None):
        if module.training and self._sampling:
            u = float(torch.rand(()))
            if u < SANDWICH[0]:
                self.activate(self.largest)
            elif u < SANDWICH[0] + SANDWICH[1]:
                self.activate(self.smallest)
            else:
                self.activate(self.draw(np.random.default_rng(int(torch.randint(2**31 - 1, ())))))
        elif not module.training:
            wanted = self.pinned if self.pinned is not None else self.largest
            if self.active is not wanted:
                self.activate(wanted)
        return None

    # ---------------------------------------------------------------- slices
    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {name: p.detach() for name, p in self.model.named_parameters() if p.requires_grad}

    def extract(self, point: PeftPoint, model: nn.Module) -> nn.Module:
        """``point`` built stand-alone on ``model`` (a fresh base-model copy), its modules and task head holding the
        super-adapter's slices: what :meth:`activate` makes the super-adapter compute, as a plain PEFT model."""
        point = self.screened(point)
        if point.is_empty:
            raise SpaceError("the point has no module the super-adapter holds")
        built = build_adapter(point, self.space.model_config, self.kind)(model)
        source = {plain_name(name): tensor for name, tensor in self.trainable_state().items()}
        copy_slices(built, source, point.describe(), strict=True)
        return built


def copy_slices(built: nn.Module, source: dict[str, torch.Tensor], description: str, *, strict: bool) -> int:
    """Copy into every trainable parameter of ``built`` the leading slice of the same-named tensor of ``source`` (a
    super-adapter's trainable state keyed by :func:`plain_name`); returns how many parameters were copied.

    ``strict``: a parameter the super-adapter has no tensor for, or a larger one, raises SpaceError; otherwise it
    keeps its own initialisation (a module type the super-adapter leaves out)."""
    copied = 0
    with torch.no_grad():
        for name, parameter in built.named_parameters():
            if not parameter.requires_grad:
                continue
            weights = source.get(plain_name(name))
            if weights is None:
                if strict:
                    raise SpaceError(f"the super-adapter has no parameter '{name}' of {description}")
                continue
            if parameter.dim() != weights.dim() or any(s > w for s, w in zip(parameter.shape, weights.shape)):
                if strict:
                    raise SpaceError(f"'{name}' of {description} is larger than the super-adapter's "
                                     f"({tuple(parameter.shape)} vs {tuple(weights.shape)})")
                continue
            parameter.copy_(weights[tuple(slice(0, s) for s in parameter.shape)])
            copied += 1
    return copied

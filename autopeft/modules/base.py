"""The one interface every searchable PEFT module type implements, and the module-type registry.

A module type says everything the search needs of it, in one file (``autopeft/modules/<type>.py``):

- what its ``size`` means and how large it may be on a model (:attr:`ModuleType.size`, :meth:`~ModuleType.max_size`);
- its options with their defaults (:attr:`~ModuleType.options`) and default matrix roles (:attr:`~ModuleType.targets`),
  from which :class:`autopeft.space.SearchSpace` makes its search dimensions;
- its exact trainable-parameter count from the model config alone (:meth:`~ModuleType.count_params`);
- how a decoded choice builds into PEFT config(s) — PEFT's own or one of :mod:`autopeft.tuners`
  (:meth:`~ModuleType.build`);
- its learning-rate prior (:attr:`~ModuleType.learning_rate`): a trial trains each module type's parameters in
  their own optimizer group at that type's rate (:func:`autopeft.builders.parameter_groups`), telling them apart on
  the built model by name (:attr:`~ModuleType.parameter_names`, :meth:`~ModuleType.owns`).

A new module type is one new file with a ``@register``-ed subclass (plus its tuner folder if PEFT lacks the
method), imported in ``autopeft/modules/__init__.py``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from autopeft.arch import Architecture, Dimensions
from autopeft.errors import SpaceError

if TYPE_CHECKING:
    from peft import PeftConfig

    from autopeft.space.point import ModuleChoice  # the space imports this package, not the other way round
    from autopeft.tuners.lofit.ranking import HeadRanking

Shapes = dict[str, tuple[tuple[int, int], ...]]
"""matrix role -> ((out_features, in_features), ...), as :meth:`Architecture.matrix_shapes` gives."""


@dataclass(frozen=True)
class LearningRate:
    """A module type's learning-rate prior: a default and a range worth searching, and where they come from."""

    default: float   # what a trial uses when neither the space nor ``--lr`` gives a rate
    low: float       # the range a space's ``lr: prior`` searches (log scale)
    high: float
    source: str      # where the values come from: papers' settings and our own short-budget measurements

    def __post_init__(self):
        if not 0 < self.low <= self.default <= self.high:
            raise ValueError(f"learning-rate prior needs 0 < low <= default <= high, got {self}")


@dataclass(frozen=True)
class BuildContext:
    """Priors some module types need; computed once per (model, task) and reused for every point."""

    head_ranking: HeadRanking | None = None   # LoFiT: which heads matter (``autopeft select-heads``)
    sensitivity: Any = None                   # SPT: an autopeft.priors.SensitivityMap;
                                              # sparse masks take its top entries
    sparse_seed: int = 0                      # sparse tuning: seed of the random mask when there is no sensitivity
    initial_weights: Any = None               # one-shot: an autopeft.priors.oneshot.SliceWeights; a built point
                                              # starts from its slice of a trained super-adapter (--inherit-weights)


@dataclass(frozen=True)
class Target:
    """Where a module is built: the architecture table, the model's sizes and the PEFT task type."""

    arch: Architecture
    dims: Dimensions
    task_type: str        # PEFT task type, "SEQ_CLS" or "CAUSAL_LM"


class ModuleType(ABC):
    """A searchable PEFT module type (LoRA, a bottleneck adapter, prefix tuning, ...)."""

    name: ClassVar[str] = ""
    size: ClassVar[str | None] = None
    """What a size means ("rank", "bottleneck", ...); None for an unsized module (one unit per layer)."""
    integer_sizes: ClassVar[bool] = True
    targets: ClassVar[tuple[str, ...] | None] = None
    """Default matrix roles; None when the module type does not act on chosen matrices."""
    options: ClassVar[dict[str, Any]] = {}
    """Option name -> default, for the options a space may fix or search (``alpha``, ``location``, ``scaling``)."""
    learning_rate: ClassVar[LearningRate]
    parameter_names: ClassVar[tuple[str, ...]] = ()
    """Attribute names of the trainable tensors (or of the modules holding them) this type adds to a model, e.g.
    LoRA's ``lora_A``/``lora_B``: a name no other type uses, so a built model's parameters say which type they are."""

    reference_size: ClassVar[float | None] = None
    """The size :attr:`learning_rate`'s default is for, when a type's stable rate falls with its size (LoRA's rank, a
    bottleneck's width); None: one rate for every size."""

    def default_rate(self, size: float | None) -> float:
        """The rate a module of this type and ``size`` (its largest per-layer size; None: unsized or unknown) trains at
        when neither the space nor ``--lr`` gives one: :attr:`learning_rate`'s default, times
        sqrt(:attr:`reference_size` / size) for a sized type wider than its reference, within the type's range.

        Why 1/sqrt(size): LoRA's B·A and a bottleneck's up·down are sums over ``size`` rank-one terms whose output
        scale does not shrink with the size (lora_alpha = alpha x rank; an adapter's fixed scaling), and under Adam
        every entry moves by about the rate per step, so one step changes the layer's output more the wider the
        module. Kalajdzievski 2023 ("A Rank Stabilization Scaling Factor for Fine-Tuning with LoRA") show the
        stable scale is 1/sqrt(rank) and divide LoRA's output by it (rsLoRA); dividing the rate instead keeps the
        exported modules plain (PEFT's LoRA with alpha as given). Measured: in bench_fidelity (medium, 376 steps)
        the wide modules at one rate per type were the ones that learned, then collapsed to the majority class.
        Narrower modules keep the default, not more: the defaults were measured at the reference size, and a
        searched 6-wide serial adapter beside LoRA r2 at 2x its default (1.3e-2, the head with it) collapsed on
        one of three seeds in bench_quality (medium, TREC)."""
        rate = self.learning_rate
        if not size or not self.reference_size or size <= self.reference_size:
            return rate.default
        return max(rate.low, rate.default * math.sqrt(self.reference_size / float(size)))

    def owns(self, parameter_name: str) -> bool:
        """Whether a (trainable) parameter of a built model, by its full dotted name, is one this type added."""
        return any(part in self.parameter_names for part in parameter_name.split("."))

    def max_size(self, dims: Dimensions, num_layers: int) -> float | None:
        """The largest size that fits the model (``num_layers``: layers the space places modules on); None: no limit."""
        return None

    def unsupported(self, arch: Architecture) -> str | None:
        """Why this module type cannot be used on ``arch``, or None."""
        return None

    @abstractmethod
    def count_params(self, module: ModuleChoice, arch: Architecture, dims: Dimensions, shapes: Shapes) -> int:
        """Exact trainable parameters of ``module`` (no model is built)."""

    @abstractmethod
    def build(self, module: ModuleChoice, target: Target, context: BuildContext) -> list[PeftConfig]:
        """The PEFT config(s) of ``module`` (several when one tuner config cannot hold per-layer sizes)."""

    def nested_sites(self, module: ModuleChoice, target: Target) -> dict[str, int] | None:
        """Where :meth:`build` puts ``module`` and how large, for one-shot screening (:mod:`autopeft.priors.oneshot`):
        module name (:meth:`Architecture.module_name`, relative to the base model) -> size there. A smaller module of
        this type is then the leading slice of a larger one (LoRA's first ``r`` rank components, a bottleneck's first
        ``m`` hidden units), so one trained largest module holds every smaller one. None: sizes of this type do not
        nest (the default), and a super-adapter leaves the type out."""
        return None

    def build_alone(self, module: ModuleChoice, target: Target) -> PeftConfig | None:
        """A plain PEFT config for a point made of this module alone, where one fits better than :meth:`build`'s
        (e.g. PEFT's own prefix tuning on a decoder); None: use :meth:`build`."""
        return None


MODULE_TYPES: dict[str, ModuleType] = {}
"""Registered module types by name, in registration order (the order reports and error messages list them)."""


def register(cls: type[ModuleType]) -> type[ModuleType]:
    """Class decorator: make a module type available to spaces, parameter counts and builders by its ``name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    MODULE_TYPES[cls.name] = cls()
    return cls


def get_module_type(name: str) -> ModuleType:
    if name not in MODULE_TYPES:
        raise SpaceError(f"unknown module type '{name}' (known: {', '.join(MODULE_TYPES)})")
    return MODULE_TYPES[name]


def most_common(sizes: dict[int, float]) -> float:
    """The size most layers have: a config's default size, the other layers' sizes going into its per-layer pattern."""
    values = list(sizes.values())
    return max(set(values), key=values.count)

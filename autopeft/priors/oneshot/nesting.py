"""How each nestable module type switches to a leading slice inside a trained super-adapter.

A :class:`Nest` wraps one tuner layer of a super-adapter (built at the largest size) for one module type and sets,
per configuration, how much of it is on: LoRA's first ``r`` rank components (a hook scaling ``lora_A``'s output by a
mask), a bottleneck adapter's first ``m`` hidden units (a hook masking the up-projection's input, and scaling its
output so that the bias and a different ``scaling`` come out as a stand-alone adapter's). Size 0 switches it off.

Hooks, not new layers: the super-adapter is built by :mod:`autopeft.builders` like any point, with the same tuners
(PEFT's LoRA, our bottleneck tuner), so a slice is the stand-alone module with the leading weights, which
:meth:`autopeft.priors.oneshot.SuperAdapter.extract` copies out. The hooks cost one elementwise product each.

Which types nest is :meth:`autopeft.modules.ModuleType.nested_sites` (where a module goes, how large) plus a
``@register``-ed Nest here (how a layer is switched). Prefix tuning (leading virtual tokens would need the attention
mask of every layer rewritten), IA3, BitFit, LN tuning (unsized: nothing to nest), LoFiT (per-head offsets, placed by
a ranking) and sparse deltas (a mask of entries, not leading slices) are not nested.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import nn

from autopeft.space.point import ModuleChoice

ADAPTER = "default"   # the adapter name PEFT gives a model built by get_peft_model

NESTS: dict[str, type[Nest]] = {}
"""Module type name -> its Nest class; the types a super-adapter can hold."""


def register(cls: type[Nest]) -> type[Nest]:
    NESTS[cls.module_type] = cls
    return cls


class Nest(ABC):
    """One nested module of a super-adapter: its largest size, and the slice a configuration switches on."""

    module_type: ClassVar[str] = ""

    def __init__(self, holder: nn.Module):
        self.holder = holder
        self.full_size = self._full_size()
        self.size = self.full_size
        self._mask: torch.Tensor | None = None     # None: the whole module at the super-adapter's own scale
        self._factor = 1.0
        self._cast: dict[tuple, torch.Tensor] = {}
        self._handles = self._install()

    @classmethod
    @abstractmethod
    def holds(cls, module: nn.Module) -> bool:
        """Whether ``module`` is a tuner layer holding this type's module (under PEFT's default adapter name)."""

    @abstractmethod
    def _full_size(self) -> int: ...

    @abstractmethod
    def _install(self) -> list: ...

    @abstractmethod
    def _scale(self, module: ModuleChoice) -> float:
        """The stand-alone module's output scale over the super-adapter's (alpha / scaling options)."""

    def set(self, size: int, module: ModuleChoice | None = None) -> None:
        """Switch on the leading ``size`` units (0: off), scaled as a stand-alone ``module`` would be."""
        if not 0 <= size <= self.full_size:
            raise ValueError(f"size {size} is outside this nested module (0 to {self.full_size})")
        factor = 0.0 if size == 0 else (1.0 if module is None else self._scale(module))
        if size == self.size and factor == self._factor:
            return
        self.size, self._factor = size, factor
        if size == self.full_size:
            self._mask = None
        else:
            self._mask = torch.zeros(self.full_size)
            self._mask[:size] = 1.0
        self._cast = {}

    def _mask_like(self, tensor: torch.Tensor) -> torch.Tensor:
        key = (tensor.device, tensor.dtype)
        if key not in self._cast:
            self._cast[key] = self._mask.to(device=tensor.device, dtype=tensor.dtype)
        return self._cast[key]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


@register
class LoraNest(Nest):
    """PEFT's LoRA layer: ``B(A x) * scaling``; the slice of rank ``r`` keeps A's first ``r`` outputs."""

    module_type = "lora"

    @classmethod
    def holds(cls, module):
        return ADAPTER in getattr(module, "lora_A", {})

    def _full_size(self):
        return self.holder.lora_A[ADAPTER].out_features

    def _install(self):
        return [self.holder.lora_A[ADAPTER].register_forward_hook(self._hook)]

    def _hook(self, module, args, output):
        if self._mask is not None:
            output = output * self._mask_like(output)
        return output * self._factor if self._factor != 1.0 else output

    def _scale(self, module):
        # PEFT's scaling is lora_alpha / r with lora_alpha = alpha x r (autopeft.modules.lora): alpha at every rank
        return float(module.options.get("alpha", 2.0)) / self.holder.scaling[ADAPTER]


class _BottleneckNest(Nest):
    """Our bottleneck layer: ``scaling * up(act(down(h)))``; the slice of width ``m`` keeps the first ``m`` units."""

    placement: ClassVar[str] = ""

    @classmethod
    def holds(cls, module):
        return ADAPTER in getattr(module, f"bottleneck_{cls.placement}_up", {})

    def _up(self) -> nn.Linear:
        return getattr(self.holder, f"bottleneck_{self.placement}_up")[ADAPTER]

    def _full_size(self):
        return self._up().in_features

    def _install(self):
        up = self._up()
        return [up.register_forward_pre_hook(self._mask_input), up.register_forward_hook(self._scale_output)]

    def _mask_input(self, module, args):
        if self._mask is None:
            return None
        return (args[0] * self._mask_like(args[0]), *args[1:])

    def _scale_output(self, module, args, output):
        # after up's bias, so that an adapter switched off adds nothing and another scaling scales the bias too
        return output * self._factor if self._factor != 1.0 else output

    def _scale(self, module):
        from autopeft.tuners.bottleneck.config import DEFAULT_SCALING

        scaling = module.options.get("scaling")
        own = DEFAULT_SCALING[self.placement] if scaling is None else float(scaling)
        return own / getattr(self.holder, f"bottleneck_{self.placement}_scaling")[ADAPTER]


@register
class SerialAdapterNest(_BottleneckNest):
    module_type = "serial_adapter"
    placement = "serial"


@register
class ParallelAdapterNest(_BottleneckNest):
    module_type = "parallel_adapter"
    placement = "parallel"

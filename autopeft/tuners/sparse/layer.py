"""SparseLayer: an nn.Linear whose weight is ``W + scatter(delta)`` over a fixed set of flat indices."""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from peft.tuners._buffer_dict import BufferDict
from peft.tuners.tuners_utils import BaseTunerLayer, check_adapters_to_merge
from torch import nn

from autopeft.errors import AutopeftError

# How the sparse update is applied. Measured on this project's 2-core CPU (torch 2.13), input of 32x64 tokens
# that requires grad (as inside a network), 1% density; median ms of forward+backward (no_grad forward):
#                                       384x384          1536x384
#   plain nn.Linear (reference)         6.2  (3.3)       21.6  (9.8)
#   W.flatten().index_add(delta) + mm   9.1  (2.7)       34.3 (10.7)   <- used
#   base(x) + sparse COO mm             22.1 (15.1)      93.5 (60.4)
#   base(x) + gather/index_add on x     70.0 (14.5)     218.0 (68.3)
# Building the effective weight costs one weight-sized copy and, in backward, the dense weight gradient
# (gathered at the indices); both are cheaper on CPU than sparse kernels at this density.


def _size_to_checkpoint(module: SparseLayer, state_dict: dict[str, torch.Tensor], prefix: str, *args: Any) -> None:
    """Load hook: a checkpoint decides how many entries each adapter has (masks differ in size per module).

    Lives on the layer, so it works whichever tuner (sparse, composite, ...) drives the loading.
    """
    for adapter_name in list(module.sparse_indices.keys()):
        saved = state_dict.get(f"{prefix}sparse_indices.{adapter_name}")
        if saved is not None:
            module.resize_adapter(adapter_name, saved.numel())


class SparseLayer(nn.Module, BaseTunerLayer):
    """Trainable deltas at fixed flat (row-major) indices of the wrapped Linear's weight.

    ``sparse_indices`` are saved with the adapter weights (a persistent buffer), so a saved adapter is
    self-contained.
    """

    adapter_layer_names = ("sparse_delta",)
    other_param_names = ("sparse_indices",)

    def __init__(
        self,
        base_layer: nn.Module,
        adapter_name: str,
        indices: torch.Tensor,
        inference_mode: bool = False,
    ) -> None:
        super().__init__()
        self.base_layer = base_layer
        linear = self.get_base_layer()
        if not isinstance(linear, nn.Linear):
            raise AutopeftError(f"sparse tuning adapts nn.Linear modules, got {type(linear).__name__}")
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.sparse_delta = nn.ParameterDict({})
        self.sparse_indices = BufferDict({}, persistent=True)
        self._disable_adapters = False
        self.merged_adapters = []
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, indices, inference_mode)
        self.register_load_state_dict_pre_hook(_size_to_checkpoint)

    def update_layer(self, adapter_name: str, indices: torch.Tensor, inference_mode: bool = False) -> None:
        weight = self.get_base_layer().weight
        indices = torch.as_tensor(indices, dtype=torch.long)
        if indices.numel() and (indices.min() < 0 or indices.max() >= weight.numel()):
            raise AutopeftError(f"sparse indices out of range for a weight of shape {tuple(weight.shape)}")
        self.sparse_indices[adapter_name] = indices.to(weight.device)
        self.sparse_delta[adapter_name] = nn.Parameter(
            torch.zeros(indices.numel(), dtype=weight.dtype, device=weight.device)
        )
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters, inference_mode=inference_mode)

    def resize_adapter(self, adapter_name: str, num_entries: int) -> None:
        """Re-create empty index/delta storage of ``num_entries`` so a checkpoint of that size can be loaded."""
        indices = self.sparse_indices[adapter_name]
        if indices.numel() == num_entries:
            return
        delta = self.sparse_delta[adapter_name]
        self.sparse_indices[adapter_name] = torch.zeros(num_entries, dtype=indices.dtype, device=indices.device)
        self.sparse_delta[adapter_name] = nn.Parameter(
            torch.zeros(num_entries, dtype=delta.dtype, device=delta.device), requires_grad=delta.requires_grad
        )

    def _active_with_entries(self) -> list[str]:
        return [
            name for name in self.active_adapters if name in self.sparse_delta and self.sparse_delta[name].numel() > 0
        ]

    def effective_weight(self, weight: torch.Tensor, adapter_names: list[str]) -> torch.Tensor:
        """``weight`` plus the adapters' deltas at their indices (out of place, differentiable in the deltas)."""
        flat = weight.flatten()
        for name in adapter_names:
            flat = flat.index_add(0, self.sparse_indices[name], self.sparse_delta[name].to(weight.dtype))
        return flat.view_as(weight)

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        """The dense ``[out, in]`` update of one adapter."""
        weight = self.get_base_layer().weight
        return self.effective_weight(torch.zeros_like(weight), [adapter_name])

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return self.base_layer(x, *args, **kwargs)
        adapter_names = self._active_with_entries()
        if self.merged or not adapter_names:
            return self.base_layer(x, *args, **kwargs)
        linear = self.get_base_layer()
        if self.base_layer is linear:
            weight = self.effective_weight(linear.weight, adapter_names)
            return F.linear(x, weight, linear.bias)
        # Another tuner's layer sits in between: keep its forward and add the sparse update on top.
        delta = self.effective_weight(torch.zeros_like(linear.weight), adapter_names)
        return self.base_layer(x, *args, **kwargs) + F.linear(x, delta.to(x.dtype))

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        adapter_names = check_adapters_to_merge(self, adapter_names)
        linear = self.get_base_layer()
        for name in adapter_names:
            if name not in self.sparse_delta:
                continue
            merged = self.effective_weight(linear.weight.data, [name]).detach()
            if safe_merge and not torch.isfinite(merged).all():
                raise ValueError(f"NaNs or infs when merging sparse adapter {name}")
            linear.weight.data = merged
            self.merged_adapters.append(name)

    def unmerge(self) -> None:
        if not self.merged:
            warnings.warn("Already unmerged. Nothing to do.", stacklevel=1)
            return
        linear = self.get_base_layer()
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            if name in self.sparse_delta:
                flat = linear.weight.data.flatten()
                flat = flat.index_add(0, self.sparse_indices[name], -self.sparse_delta[name].detach().to(flat.dtype))
                linear.weight.data = flat.view_as(linear.weight)

    def __repr__(self) -> str:
        return "sparse." + super().__repr__()

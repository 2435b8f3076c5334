from __future__ import annotations

import warnings
from typing import Any, Optional

import torch
from peft.tuners.tuners_utils import BaseTunerLayer, check_adapters_to_merge
from torch import nn
from transformers.pytorch_utils import Conv1D

from autopeft.errors import AutopeftError


def _is_last_dim_norm(module: nn.Module) -> bool:
    # BatchNorm/GroupNorm normalise over channels (dim 1), so a bias added to the last dim would be wrong for them
    return isinstance(module, (nn.LayerNorm, nn.RMSNorm)) or type(module).__name__.endswith(("LayerNorm", "RMSNorm"))


def bias_shape(module: nn.Module, add_missing_bias: bool) -> Optional[torch.Size]:
    """Shape of the bias BitFit trains on ``module``, or ``None`` when BitFit does not apply to it."""
    if isinstance(module, nn.Linear):
        shape = (module.out_features,)
    elif isinstance(module, Conv1D):
        shape = (module.nf,)
    elif _is_last_dim_norm(module):
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor):
            shape = tuple(weight.shape)
        elif getattr(module, "normalized_shape", None) is not None:
            shape = tuple(module.normalized_shape)
        else:
            return None
    else:
        return None
    has_bias = isinstance(getattr(module, "bias", None), torch.Tensor)
    return torch.Size(shape) if has_bias or add_missing_bias else None


class BitFitLayer(nn.Module, BaseTunerLayer):
    """Adds a trainable bias delta to the output of a Linear, Conv1D or last-dimension norm."""

    adapter_layer_names = ("bitfit_bias",)

    def __init__(
        self, base_layer: nn.Module, adapter_name: str, init_weights: bool = True, inference_mode: bool = False
    ) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.bitfit_bias = nn.ParameterDict()
        self._disable_adapters = False
        self.merged_adapters = []
        self._active_adapter = adapter_name
        shape = bias_shape(self.get_base_layer(), add_missing_bias=True)
        if shape is None:
            raise AutopeftError(f"BitFit does not apply to {type(self.get_base_layer()).__name__}")
        self.bias_shape = shape
        self.update_layer(adapter_name, init_weights=init_weights, inference_mode=inference_mode)

    def update_layer(self, adapter_name: str, init_weights: bool = True, inference_mode: bool = False) -> None:
        delta = torch.zeros(self.bias_shape)
        if not init_weights:
            nn.init.normal_(delta, std=0.02)
        self.bitfit_bias[adapter_name] = nn.Parameter(delta)
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters, inference_mode=inference_mode)

    @property
    def supports_merging(self) -> bool:
        """A delta can only be folded into a bias the module actually uses."""
        return isinstance(getattr(self.get_base_layer(), "bias", None), torch.Tensor)

    def merge(self, safe_merge: bool = False, adapter_names: Optional[list[str]] = None) -> None:
        adapter_names = check_adapters_to_merge(self, adapter_names)
        if not adapter_names:
            return
        if not self.supports_merging:
            raise AutopeftError(
                f"cannot merge BitFit into {type(self.get_base_layer()).__name__}: it has no bias of its own"
            )
        bias = self.get_base_layer().bias
        for name in adapter_names:
            if name not in self.bitfit_bias:
                continue
            merged = bias.data + self.bitfit_bias[name].data.to(bias.dtype)
            if safe_merge and not torch.isfinite(merged).all():
                raise ValueError(f"NaNs detected in the merged bias; adapter '{name}' seems to be broken")
            bias.data = merged
            self.merged_adapters.append(name)

    def unmerge(self) -> None:
        if not self.merged:
            warnings.warn("Already unmerged. Nothing to do.", stacklevel=1)
            return
        bias = self.get_base_layer().bias
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            if name in self.bitfit_bias:
                bias.data -= self.bitfit_bias[name].data.to(bias.dtype)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return self.base_layer(x, *args, **kwargs)
        result = self.base_layer(x, *args, **kwargs)
        if self.merged:
            return result
        for name in self.active_adapters:
            if name in self.bitfit_bias:
                result = result + self.bitfit_bias[name].to(result.dtype)
        return result

    def __repr__(self) -> str:
        return "bitfit." + super().__repr__()

"""LofitLayer: wraps an attention output projection and edits its input head by head."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from peft.tuners._buffer_dict import BufferDict
from peft.tuners.tuners_utils import BaseTunerLayer, check_adapters_to_merge
from torch import nn

from autopeft.errors import AutopeftError

from .config import LofitConfig


class LofitLayer(nn.Module, BaseTunerLayer):
    """``o_proj(x)`` becomes ``o_proj(x')`` with ``x'_h = (1 + A_h) * x_h + v_h`` for the selected heads ``h``.

    The input of the output projection is the concatenation of the heads' ``softmax(QK^T)V`` outputs, so
    head ``h`` is the slice ``[h * head_dim, (h + 1) * head_dim)``. ``lofit_scale`` / ``lofit_offset`` hold
    ``[n_selected, head_dim]`` rows for the heads listed in ``lofit_heads`` (same order).
    """

    adapter_layer_names = ("lofit_scale", "lofit_offset")
    other_param_names = ("lofit_heads",)

    def __init__(self, base_layer: nn.Module, adapter_name: str, config: LofitConfig, heads: list[int]) -> None:
        super().__init__()
        self.base_layer = base_layer
        linear = self.get_base_layer()
        if not isinstance(linear, nn.Linear):
            raise AutopeftError(f"LoFiT wraps the attention output projection (nn.Linear), got {type(linear).__name__}")
        self.num_heads = config.num_heads
        self.head_dim = config.head_dim
        if linear.in_features != self.num_heads * self.head_dim:
            raise AutopeftError(
                f"output projection has {linear.in_features} inputs, expected num_heads * head_dim = "
                f"{self.num_heads} * {self.head_dim}; is target_modules pointing at the attention output projection?"
            )
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.lofit_scale = nn.ParameterDict({})
        self.lofit_offset = nn.ParameterDict({})
        # Not saved: the selection is part of the config, which is saved.
        self.lofit_heads = BufferDict({}, persistent=False)
        self._disable_adapters = False
        self.merged_adapters = []
        self._created_bias = False  # merging into a bias-less projection (Llama) adds a bias
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, config, heads)

    def update_layer(self, adapter_name: str, config: LofitConfig, heads: list[int]) -> None:
        if any(head >= self.num_heads for head in heads):
            raise AutopeftError(f"LoFiT heads {heads} out of range for {self.num_heads} heads")
        weight = self.get_base_layer().weight
        shape = (len(heads), self.head_dim)
        self.lofit_heads[adapter_name] = torch.tensor(heads, dtype=torch.long, device=weight.device)
        if config.train_scale:
            scale = torch.randn(shape, device=weight.device) * config.scale_init_std
            self.lofit_scale[adapter_name] = nn.Parameter(scale.to(weight.dtype))
        if config.train_offset:
            self.lofit_offset[adapter_name] = nn.Parameter(torch.zeros(shape, device=weight.device, dtype=weight.dtype))
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    def _full(self, rows: torch.Tensor, adapter_name: str, dtype: torch.dtype) -> torch.Tensor:
        """``[num_heads, head_dim]`` tensor with the selected heads' rows and zeros elsewhere."""
        full = torch.zeros(self.num_heads, self.head_dim, dtype=dtype, device=rows.device)
        return full.index_copy(0, self.lofit_heads[adapter_name], rows.to(dtype))

    def scale_and_offset(
        self, adapter_name: str, dtype: torch.dtype
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Per-input-feature ``A`` and ``v`` (``[in_features]``, zeros for unselected heads); None if not trained."""
        scale = offset = None
        if adapter_name in self.lofit_scale:
            scale = self._full(self.lofit_scale[adapter_name], adapter_name, dtype).flatten()
        if adapter_name in self.lofit_offset:
            offset = self._full(self.lofit_offset[adapter_name], adapter_name, dtype).flatten()
        return scale, offset

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return self.base_layer(x, *args, **kwargs)
        if self.merged:
            return self.base_layer(x, *args, **kwargs)
        for adapter_name in self.active_adapters:
            if adapter_name not in self.lofit_heads:
                continue
            scale, offset = self.scale_and_offset(adapter_name, x.dtype)
            # Unselected heads see scale 0 and offset 0, i.e. exactly x (x * 1 + 0).
            if scale is not None:
                x = x * (1 + scale)
            if offset is not None:
                x = x + offset
        return self.base_layer(x, *args, **kwargs)

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        """Fold into the projection: ``W' = W diag(1 + A)``, ``b' = b + W v`` (adds a bias if there is none)."""
        adapter_names = check_adapters_to_merge(self, adapter_names)
        base = self.get_base_layer()
        # forward applies adapters in order, so the last one sits next to W and is folded first
        for adapter_name in reversed(adapter_names):
            if adapter_name not in self.lofit_heads:
                continue
            weight = base.weight.data
            scale, offset = self.scale_and_offset(adapter_name, torch.float32)
            new_weight = weight.float() * (1 + scale) if scale is not None else weight.float()
            bias_delta = weight.float() @ offset if offset is not None else None
            if safe_merge and not torch.isfinite(new_weight).all():
                raise ValueError(f"NaNs or infs when merging LoFiT adapter {adapter_name}")
            base.weight.data = new_weight.to(weight.dtype)
            if bias_delta is not None:
                if base.bias is None:
                    base.bias = nn.Parameter(torch.zeros_like(bias_delta, dtype=weight.dtype), requires_grad=False)
                    self._created_bias = True
                base.bias.data = (base.bias.data.float() + bias_delta).to(base.bias.dtype)
            self.merged_adapters.append(adapter_name)

    def unmerge(self) -> None:
        if not self.merged:
            warnings.warn("Already unmerged. Nothing to do.", stacklevel=1)
            return
        base = self.get_base_layer()
        while self.merged_adapters:
            adapter_name = self.merged_adapters.pop()
            if adapter_name not in self.lofit_heads:
                continue
            scale, offset = self.scale_and_offset(adapter_name, torch.float32)
            weight = base.weight.data.float()
            if scale is not None:
                weight = weight / (1 + scale)
            if offset is not None:
                base.bias.data = (base.bias.data.float() - weight @ offset).to(base.bias.dtype)
            base.weight.data = weight.to(base.weight.dtype)
        if self._created_bias:
            base.bias = None
            self._created_bias = False

    def __repr__(self) -> str:
        return "lofit." + super().__repr__()

from __future__ import annotations

from typing import Any, Optional

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn
from torch.utils.hooks import RemovableHandle
from transformers.activations import ACT2FN
from transformers.pytorch_utils import Conv1D

from autopeft.errors import AutopeftError


def linear_widths(module: nn.Module) -> list[tuple[int, int]]:
    """``(in_features, out_features)`` of the Linear layers in ``module``, in registration order.

    A Linear is its own answer; a block such as LlamaMLP (gate, up, down) reads its first Linear's input width and
    writes its last Linear's output width. Tuner layers are looked through to the module they wrap.
    """
    if isinstance(module, BaseTunerLayer):
        module = module.get_base_layer()
    if isinstance(module, nn.Linear):
        return [(module.in_features, module.out_features)]
    if isinstance(module, Conv1D):
        return [(module.weight.shape[0], module.nf)]
    return [widths for child in module.children() for widths in linear_widths(child)]


class InputCapture:
    """Forward pre-hook keeping the latest input of one module, for a parallel adapter placed on another module."""

    def __init__(self, module_name: str) -> None:
        self.module_name = module_name
        self.tensor: Optional[torch.Tensor] = None
        self.handle: Optional[RemovableHandle] = None

    def attach(self, module: nn.Module) -> None:
        self.handle = module.register_forward_pre_hook(self, with_kwargs=True)

    def detach(self) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None
        self.tensor = None

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        # the module's first tensor argument, whether passed positionally (the usual case) or by keyword
        tensors = [value for value in (*args, *kwargs.values()) if isinstance(value, torch.Tensor)]
        self.tensor = tensors[0] if tensors else None

    def take(self) -> torch.Tensor:
        # hand the tensor over and forget it, so activations are not kept alive between forward passes
        tensor, self.tensor = self.tensor, None
        if tensor is None:
            raise RuntimeError(f"the parallel adapter reads the input of '{self.module_name}', which did not run first")
        return tensor


class BottleneckLayer(nn.Module, BaseTunerLayer):
    """Wraps a module (a Linear, or a whole block such as LlamaMLP) and adds bottleneck adapters to its output.

    Per adapter name it holds at most one serial adapter (reads the module's output) and one parallel adapter (reads
    the module's input, or the captured input of another module); serial adapters are applied first.
    """

    adapter_layer_names = (
        "bottleneck_serial_down",
        "bottleneck_serial_up",
        "bottleneck_parallel_down",
        "bottleneck_parallel_up",
    )
    other_param_names = (
        "bottleneck_serial_act",
        "bottleneck_parallel_act",
        "bottleneck_serial_scaling",
        "bottleneck_parallel_scaling",
        "bottleneck_input",
    )
    # the adapters are non-linear, so there is nothing to fold into the base weights
    supports_merging = False

    def __init__(self, base_layer: nn.Module, adapter_name: str, **adapter_settings: Any) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.bottleneck_serial_down = nn.ModuleDict()
        self.bottleneck_serial_up = nn.ModuleDict()
        self.bottleneck_parallel_down = nn.ModuleDict()
        self.bottleneck_parallel_up = nn.ModuleDict()
        self.bottleneck_serial_act = nn.ModuleDict()
        self.bottleneck_parallel_act = nn.ModuleDict()
        self.bottleneck_serial_scaling: dict[str, float] = {}
        self.bottleneck_parallel_scaling: dict[str, float] = {}
        self.bottleneck_input: dict[str, InputCapture] = {}
        self._disable_adapters = False
        self.merged_adapters = []
        self._active_adapter = adapter_name

        widths = linear_widths(self.get_base_layer())
        if not widths:
            raise AutopeftError(
                f"cannot infer the width of {type(self.get_base_layer()).__name__}: "
                "bottleneck adapters need a Linear layer or a block containing Linear layers"
            )
        self.in_features, self.out_features = widths[0][0], widths[-1][1]
        self.update_layer(adapter_name, **adapter_settings)

    def update_layer(
        self,
        adapter_name: str,
        *,
        placement: str,
        size: int,
        non_linearity: str,
        scaling: float,
        init_weights: bool = True,
        inference_mode: bool = False,
        input_module: Optional[nn.Module] = None,
        input_module_name: Optional[str] = None,
    ) -> None:
        downs = getattr(self, f"bottleneck_{placement}_down")
        if adapter_name in downs:
            raise AutopeftError(f"this module already has a {placement} bottleneck adapter named '{adapter_name}'")
        if placement == "serial":
            in_features = self.out_features
        elif input_module is not None:
            input_widths = linear_widths(input_module)
            if not input_widths:
                raise AutopeftError(f"cannot infer the input width of '{input_module_name}' (no Linear layer inside)")
            in_features = input_widths[0][0]
        else:
            in_features = self.in_features

        down, up = nn.Linear(in_features, size), nn.Linear(size, self.out_features)
        if init_weights:
            # down keeps nn.Linear's Kaiming init (as LoRA's A); a zero up-projection makes the adapter an identity
            nn.init.zeros_(up.weight)
            nn.init.zeros_(up.bias)
        downs[adapter_name] = down
        getattr(self, f"bottleneck_{placement}_up")[adapter_name] = up
        getattr(self, f"bottleneck_{placement}_act")[adapter_name] = ACT2FN[non_linearity]
        getattr(self, f"bottleneck_{placement}_scaling")[adapter_name] = float(scaling)
        if input_module is not None:
            capture = InputCapture(input_module_name or type(input_module).__name__)
            capture.attach(input_module)
            self.bottleneck_input[adapter_name] = capture

        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters, inference_mode=inference_mode)

    def _get_base_layer_device_and_dtype(self, base_layer: nn.Module):
        device, dtype = super()._get_base_layer_device_and_dtype(base_layer)
        if device is None:
            # a whole block such as LlamaMLP has no `weight` of its own; its parameters tell where it lives
            param = next(base_layer.parameters(), None)
            if param is not None:
                device, dtype = param.device, param.dtype
        return device, dtype

    def _adapter_output(self, placement: str, adapter_name: str, hidden: torch.Tensor) -> torch.Tensor:
        down = getattr(self, f"bottleneck_{placement}_down")[adapter_name]
        up = getattr(self, f"bottleneck_{placement}_up")[adapter_name]
        act = getattr(self, f"bottleneck_{placement}_act")[adapter_name]
        scaling = getattr(self, f"bottleneck_{placement}_scaling")[adapter_name]
        return scaling * up(act(down(hidden.to(down.weight.dtype))))

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)
        if not self.disable_adapters:
            if not isinstance(result, torch.Tensor):
                raise TypeError(
                    f"bottleneck adapters need a module returning one tensor, {type(self.get_base_layer()).__name__} "
                    f"returned {type(result).__name__}"
                )
            for name in self.active_adapters:
                if name in self.bottleneck_serial_down:
                    result = result + self._adapter_output("serial", name, result).to(result.dtype)
            for name in self.active_adapters:
                if name in self.bottleneck_parallel_down:
                    source = self.bottleneck_input[name].take() if name in self.bottleneck_input else x
                    result = result + self._adapter_output("parallel", name, source).to(result.dtype)
        for capture in self.bottleneck_input.values():
            capture.tensor = None  # inactive or disabled adapters' captures must not outlive this pass
        return result

    def merge(self, safe_merge: bool = False, adapter_names: Optional[list[str]] = None) -> None:
        raise AutopeftError("bottleneck adapters are non-linear and cannot be merged into the base weights")

    def unmerge(self) -> None:
        # merge() never succeeds, so there is never anything to undo
        return None

    def delete_adapter(self, adapter_name: str) -> None:
        if adapter_name in self.bottleneck_input:
            self.bottleneck_input[adapter_name].detach()
        super().delete_adapter(adapter_name)

    def unload_and_optionally_merge_module(
        self, merge: bool, safe_merge: bool, adapter_names: Optional[list[str]]
    ) -> nn.Module:
        """Called by PEFT's unload: release the input hooks on other modules and hand back the wrapped module."""
        if merge:
            self.merge(safe_merge=safe_merge, adapter_names=adapter_names)
        for capture in self.bottleneck_input.values():
            capture.detach()
        return self.base_layer

    def __repr__(self) -> str:
        return "bottleneck." + super().__repr__()

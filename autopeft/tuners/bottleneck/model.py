from __future__ import annotations

from typing import Any, Optional

from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer
from peft.utils.other import get_pattern_key
from torch import nn

from autopeft.errors import AutopeftError

from .config import BottleneckConfig
from .layer import BottleneckLayer


def input_module_name(input_modules: Optional[dict[str, str]], target_key: str) -> Optional[str]:
    """Name of the module whose input feeds a parallel adapter on ``target_key`` (``None``: the target's own input).

    ``{"output.dense": "intermediate"}`` maps ``bert.encoder.layer.3.output.dense`` to
    ``bert.encoder.layer.3.intermediate``.
    """
    if not input_modules:
        return None
    for suffix, input_suffix in input_modules.items():
        if target_key == suffix or target_key.endswith("." + suffix):
            return target_key[: len(target_key) - len(suffix)] + input_suffix
    raise AutopeftError(f"no input_modules entry matches target '{target_key}' (keys: {sorted(input_modules)})")


class BottleneckModel(BaseTuner):
    """Adds serial or parallel bottleneck adapters (see ``BottleneckConfig``) to the targeted modules."""

    prefix: str = "bottleneck_"
    tuner_layer_cls = BottleneckLayer
    target_module_mapping: dict[str, list[str]] = {}
    # In a composite sharing a module with other methods, the adapter sits outside every other method (BitFit 0,
    # sparse 1, LoRA 2, IA3 3, LoFiT 4): it reads and adds to the module's finished output.
    composite_nesting_rank = 5
    # A serial and a parallel component may target the same module: one BottleneckLayer holds both.
    composite_shares_layers = True

    def _create_and_replace(
        self,
        peft_config: BottleneckConfig,
        adapter_name: str,
        target: nn.Module,
        target_name: str,
        parent: nn.Module,
        current_key: str,
        **optional_kwargs: Any,
    ) -> None:
        size_key = get_pattern_key(peft_config.size_pattern.keys(), current_key)
        input_name = input_module_name(peft_config.input_modules, current_key)
        input_module = None
        if input_name is not None:
            try:
                input_module = self.model.get_submodule(input_name)
            except AttributeError as exc:
                raise AutopeftError(
                    f"the parallel adapter on '{current_key}' reads the input of '{input_name}', which does not exist"
                ) from exc
        settings = dict(
            placement=peft_config.placement,
            size=peft_config.size_pattern.get(size_key, peft_config.bottleneck_size),
            non_linearity=peft_config.non_linearity,
            scaling=peft_config.scaling,
            init_weights=peft_config.init_weights,
            inference_mode=peft_config.inference_mode,
            input_module=input_module,
            input_module_name=input_name,
        )
        if isinstance(target, BottleneckLayer):
            target.update_layer(adapter_name, **settings)
            return
        new_module = BottleneckLayer(target, adapter_name, **settings)
        if adapter_name not in self.active_adapters:
            # an additional adapter is not trainable until it is activated
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)

    def _replace_module(self, parent: nn.Module, child_name: str, new_module: nn.Module, child: nn.Module) -> None:
        if isinstance(new_module, BaseTunerLayer):
            super()._replace_module(parent, child_name, new_module, child)
        else:
            # unloading puts the wrapped module back as it was; PEFT's version would copy a `weight` onto it, which a
            # block such as LlamaMLP does not have
            setattr(parent, child_name, new_module)

    def _check_merge_allowed(self) -> None:
        raise AutopeftError("bottleneck adapters are non-linear and cannot be merged into the base weights")

from __future__ import annotations

from typing import Any, Optional

import torch
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer
from torch import nn

from autopeft.errors import AutopeftError

from .config import BitFitConfig
from .layer import BitFitLayer, bias_shape


class BitFitModel(BaseTuner):
    """Trains bias deltas of the targeted modules (see ``BitFitConfig``)."""

    prefix: str = "bitfit_"
    tuner_layer_cls = BitFitLayer
    target_module_mapping: dict[str, list[str]] = {}
    # In a composite sharing a module with other methods, BitFit is innermost: its delta belongs to the module's own
    # bias, so LoRA/IA3/adapters around it see the module as if its bias had been trained.
    composite_nesting_rank = 0

    @staticmethod
    def accepts_module(peft_config: BitFitConfig, module: nn.Module) -> bool:
        """Whether BitFit adapts ``module`` once its name matched (patterns also match containers, dropout, ...)."""
        return isinstance(module, BitFitLayer) or bias_shape(module, peft_config.add_missing_bias) is not None

    def _create_and_replace(
        self,
        peft_config: BitFitConfig,
        adapter_name: str,
        target: nn.Module,
        target_name: str,
        parent: nn.Module,
        current_key: str,
        **optional_kwargs: Any,
    ) -> None:
        if isinstance(target, BitFitLayer):
            target.update_layer(adapter_name, peft_config.init_weights, peft_config.inference_mode)
            return
        if isinstance(target, BaseTunerLayer):
            raise AutopeftError(
                f"BitFit must wrap '{current_key}' before other adapters do (it is already a {type(target).__name__})"
            )
        if not self.accepts_module(peft_config, target):
            return
        new_module = BitFitLayer(target, adapter_name, peft_config.init_weights, peft_config.inference_mode)
        if adapter_name not in self.active_adapters:
            # an additional adapter is not trainable until it is activated
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)

    def inject_adapter(
        self,
        model: nn.Module,
        adapter_name: str,
        autocast_adapter_dtype: bool = True,
        low_cpu_mem_usage: bool = False,
        state_dict: Optional[dict[str, torch.Tensor]] = None,
    ) -> None:
        super().inject_adapter(
            model,
            adapter_name,
            autocast_adapter_dtype=autocast_adapter_dtype,
            low_cpu_mem_usage=low_cpu_mem_usage,
            state_dict=state_dict,
        )
        layers = {name: m for name, m in model.named_modules() if isinstance(m, BitFitLayer)}
        if not any(adapter_name in layer.bitfit_bias for layer in layers.values()):
            config = self.peft_config[adapter_name]
            with_bias = "" if config.add_missing_bias else " with a bias"
            raise AutopeftError(
                f"BitFit target_modules={config.target_modules} matched no Linear/Conv1D/LayerNorm/RMSNorm{with_bias}"
            )
        # the name patterns also matched modules BitFit skipped (containers, dropout, ...): report the adapted ones
        self.targeted_module_names = [name for name in self.targeted_module_names if name in layers]

    def _check_merge_allowed(self) -> None:
        super()._check_merge_allowed()
        for name, module in self.model.named_modules():
            if isinstance(module, BitFitLayer) and not module.supports_merging:
                raise AutopeftError(f"cannot merge BitFit into '{name}': the module has no bias of its own")

"""SparseModel: wraps every targeted nn.Linear in a :class:`SparseLayer` with indices from the configured mask."""

from __future__ import annotations

import torch
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer, check_target_module_exists
from torch import nn

from autopeft.errors import AutopeftError

from .config import SparseConfig
from .layer import SparseLayer
from .mask import SparseMask, random_indices

# All attention and MLP projections of the transformer blocks (not the pooler or task head).
SPARSE_TARGET_MODULES: dict[str, list[str]] = {
    "bert": ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"],
    "roberta": ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"],
    "xlm-roberta": ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"],
    "electra": ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen3": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}


def _linear_of(module: nn.Module) -> nn.Linear | None:
    base = module.get_base_layer() if isinstance(module, BaseTunerLayer) else module
    return base if isinstance(base, nn.Linear) else None


class SparseModel(BaseTuner):
    """Sparse tuning of individual weight entries; see :class:`~autopeft.tuners.sparse.config.SparseConfig`."""

    prefix: str = "sparse_"
    tuner_layer_cls = SparseLayer
    target_module_mapping = SPARSE_TARGET_MODULES
    # Composite tuner: a weight reparametrisation, like LoRA (BitFit's bias layer sits inside it).
    composite_nesting_rank = 1

    @staticmethod
    def _check_target_module_exists(peft_config: SparseConfig, key: str):
        mask = peft_config.masks if isinstance(peft_config.masks, SparseMask) else None
        if peft_config.target_modules is None:
            # before _prepare_model pins them, a mask alone names the targets; otherwise the model type does
            return mask is not None and mask.lookup(key) is not None
        matched = check_target_module_exists(peft_config, key)
        if matched and mask is not None:
            return mask.lookup(key) is not None
        return matched

    def _prepare_adapter_config(self, peft_config: SparseConfig, model_config: dict) -> SparseConfig:
        if isinstance(peft_config.masks, SparseMask) and peft_config.target_modules is None:
            return peft_config  # the mask itself says which modules to adapt, see _prepare_model
        return super()._prepare_adapter_config(peft_config, model_config)

    def _prepare_model(self, peft_config: SparseConfig, model: nn.Module) -> None:
        mask = peft_config.masks
        if not isinstance(mask, SparseMask):
            return
        # Pin target_modules to the exact adapted names, so the saved config ("from_checkpoint") rebuilds them.
        names = [
            name
            for name, module in model.named_modules()
            if _linear_of(module) is not None
            and mask.lookup(name) is not None
            and (peft_config.target_modules is None or check_target_module_exists(peft_config, name))
        ]
        if not names:
            raise AutopeftError("no nn.Linear module of the model is both targeted and present in the sparse mask")
        peft_config.target_modules = set(names)

    def _indices_for(self, peft_config: SparseConfig, linear: nn.Linear, key: str) -> torch.Tensor:
        if peft_config.indices_from_checkpoint:
            return torch.zeros(0, dtype=torch.long)  # sized and filled when the adapter weights are loaded
        if isinstance(peft_config.masks, SparseMask):
            return peft_config.masks.lookup(key)
        return random_indices(linear.weight.numel(), peft_config.density, peft_config.mask_seed, key)

    def _create_and_replace(
        self,
        peft_config: SparseConfig,
        adapter_name: str,
        target: nn.Module,
        target_name: str,
        parent: nn.Module,
        current_key: str,
        **kwargs,
    ) -> None:
        linear = _linear_of(target)
        if linear is None:
            raise AutopeftError(f"sparse tuning adapts nn.Linear modules; {current_key!r} is {type(target).__name__}")
        indices = self._indices_for(peft_config, linear, current_key)
        if isinstance(target, SparseLayer):
            target.update_layer(adapter_name, indices, peft_config.inference_mode)
            return
        new_module = SparseLayer(target, adapter_name, indices, peft_config.inference_mode)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)

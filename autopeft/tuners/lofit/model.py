"""LofitModel plus the helpers LoFiT's two steps need: L1 penalty, head norms, offset folding."""

from __future__ import annotations

import re

import torch
from peft.tuners.tuners_utils import BaseTuner
from torch import nn

from autopeft.errors import AutopeftError

from .config import LofitConfig
from .layer import LofitLayer

# Attention output projections per model type (their input is the concatenated per-head outputs).
LOFIT_TARGET_MODULES: dict[str, list[str]] = {
    "bert": ["attention.output.dense"],
    "roberta": ["attention.output.dense"],
    "xlm-roberta": ["attention.output.dense"],
    "electra": ["attention.output.dense"],
    "llama": ["o_proj"],
    "mistral": ["o_proj"],
    "qwen2": ["o_proj"],
    "qwen3": ["o_proj"],
}

_LAYER_INDEX = re.compile(r"(?:^|\.)(\d+)\.")


def layer_index_from_key(key: str) -> int | None:
    """Index of the transformer block a module belongs to: the first numbered path segment (``layers.3.``)."""
    match = _LAYER_INDEX.search(key)
    return int(match.group(1)) if match else None


class LofitModel(BaseTuner):
    """Wraps the attention output projection of every layer that has selected heads in a :class:`LofitLayer`."""

    prefix: str = "lofit_"
    tuner_layer_cls = LofitLayer
    target_module_mapping = LOFIT_TARGET_MODULES
    # Composite tuner: LoFiT edits the projection's input, so the weight- and activation-level layers (BitFit 0,
    # sparse 1, LoRA 2, IA3 3) sit inside it and see the edited heads; bottleneck adapters (5) sit outside.
    composite_nesting_rank = 4

    def _prepare_adapter_config(self, peft_config: LofitConfig, model_config: dict) -> LofitConfig:
        peft_config = super()._prepare_adapter_config(peft_config, model_config)
        if peft_config.num_heads is None:
            peft_config.num_heads = model_config["num_attention_heads"]
        if peft_config.head_dim is None:
            peft_config.head_dim = model_config.get("head_dim") or model_config["hidden_size"] // peft_config.num_heads
        if peft_config.heads is not None:
            num_layers = model_config.get("num_hidden_layers")
            out_of_range = {
                layer: heads
                for layer, heads in peft_config.heads.items()
                if heads[-1] >= peft_config.num_heads or (num_layers is not None and layer >= num_layers)
            }
            if out_of_range:
                raise AutopeftError(
                    f"LoFiT heads out of range for {num_layers} layers of {peft_config.num_heads} heads: {out_of_range}"
                )
        return peft_config

    @staticmethod
    def _check_target_module_exists(peft_config: LofitConfig, key: str):
        if peft_config.target_modules is None:
            return False  # resolved per model type in _prepare_adapter_config
        matched = BaseTuner._check_target_module_exists(peft_config, key)
        if not matched or peft_config.heads is None:
            return matched
        layer = layer_index_from_key(key)
        return layer is not None and layer in peft_config.heads

    def _create_and_replace(
        self,
        peft_config: LofitConfig,
        adapter_name: str,
        target: nn.Module,
        target_name: str,
        parent: nn.Module,
        current_key: str,
        **kwargs,
    ) -> None:
        layer = layer_index_from_key(current_key)
        if layer is None:
            raise AutopeftError(f"cannot tell which layer {current_key!r} belongs to (no numbered path segment)")
        heads = peft_config.heads_for_layer(layer)
        if isinstance(target, LofitLayer):
            target.update_layer(adapter_name, peft_config, heads)
            return
        new_module = LofitLayer(target, adapter_name, peft_config, heads)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)


def _lofit_layers(model: nn.Module) -> list[tuple[str, LofitLayer]]:
    return [(name, module) for name, module in model.named_modules() if isinstance(module, LofitLayer)]


def _adapters(layer: LofitLayer, adapter_name: str | None) -> list[str]:
    return [adapter_name] if adapter_name is not None else list(layer.active_adapters)


def lofit_l1_penalty(peft_model: nn.Module, adapter_name: str | None = None) -> torch.Tensor:
    """Sum of ``|A|`` over all scale vectors (active adapters by default); add ``lambda *`` this to the step-1 loss."""
    terms = [
        layer.lofit_scale[name].abs().sum()
        for _, layer in _lofit_layers(peft_model)
        for name in _adapters(layer, adapter_name)
        if name in layer.lofit_scale
    ]
    if not terms:
        raise AutopeftError("no LoFiT scales found: the L1 penalty needs an adapter with train_scale=True")
    return torch.stack([term.float() for term in terms]).sum()


def head_norms(peft_model: nn.Module, adapter_name: str | None = None) -> torch.Tensor:
    """``[num_layers, num_heads]`` tensor of ``||A_h||_2`` (0 for unselected heads) to rank heads after step 1."""
    layers = _lofit_layers(peft_model)
    if not layers:
        raise AutopeftError("the model has no LoFiT layers")
    num_heads = layers[0][1].num_heads
    config = getattr(peft_model, "config", None)
    num_layers = getattr(config, "num_hidden_layers", None)
    if num_layers is None:
        num_layers = 1 + max(layer_index_from_key(name) for name, _ in layers)
    norms = torch.zeros(num_layers, num_heads)
    found = False
    for name, layer in layers:
        index = layer_index_from_key(name)
        for adapter in _adapters(layer, adapter_name):
            if adapter in layer.lofit_scale:
                found = True
                heads = layer.lofit_heads[adapter].cpu()
                norms[index, heads] = layer.lofit_scale[adapter].detach().float().norm(dim=1).cpu()
    if not found:
        raise AutopeftError("no LoFiT scales found: head norms need an adapter with train_scale=True")
    return norms


def _base_model_key(name: str) -> str:
    return name.removeprefix("base_model.model.")


def fold_offsets_into_bias(peft_model: nn.Module, adapter_name: str | None = None) -> dict[str, torch.Tensor]:
    """Bias that makes each wrapped projection absorb its offsets: ``b + W_o v`` (``b = 0`` when it has none).

    Together with the scales folded into the weight (``W_o diag(1 + A)``) it reproduces the adapter; with
    several active adapters the offsets are composed in forward order. Keys are module names in the base
    model (e.g. ``model.layers.0.self_attn.o_proj``). ``peft_model.merge_and_unload()`` applies both folds
    and adds the bias to bias-less projections such as Llama's ``o_proj``.
    """
    biases: dict[str, torch.Tensor] = {}
    for name, layer in _lofit_layers(peft_model):
        base = layer.get_base_layer()
        weight = base.weight.detach().float()
        total_offset = torch.zeros(layer.in_features, device=weight.device)
        for adapter in _adapters(layer, adapter_name):
            if adapter not in layer.lofit_heads:
                continue
            scale, offset = layer.scale_and_offset(adapter, torch.float32)
            if scale is not None:
                total_offset = total_offset * (1 + scale.detach())
            if offset is not None:
                total_offset = total_offset + offset.detach()
        bias = weight @ total_offset
        if base.bias is not None:
            bias = bias + base.bias.detach().float()
        biases[_base_model_key(name)] = bias.cpu()
    return biases


__all__ = [
    "LOFIT_TARGET_MODULES",
    "LofitModel",
    "fold_offsets_into_bias",
    "head_norms",
    "layer_index_from_key",
    "lofit_l1_penalty",
]

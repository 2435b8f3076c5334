"""PrefixModel: attaches a :class:`PrefixLayer` to every targeted self-attention module."""

from __future__ import annotations

from peft.tuners.tuners_utils import BaseTuner
from torch import nn

from autopeft.errors import AutopeftError

from .config import PrefixConfig
from .layer import PREFIX_LAYER_ATTR, PrefixLayer, install_prefix_attention, uninstall_prefix_attention

# Self-attention modules per model type (attention modules that call transformers' AttentionInterface).
PREFIX_TARGET_MODULES: dict[str, list[str]] = {
    "bert": ["attention.self"],
    "roberta": ["attention.self"],
    "xlm-roberta": ["attention.self"],
    "electra": ["attention.self"],
    "llama": ["self_attn"],
    "mistral": ["self_attn"],
    "qwen2": ["self_attn"],
    "qwen3": ["self_attn"],
}


def attention_geometry(attention_module: nn.Module) -> tuple[int, int, int]:
    """``(num_kv_heads, head_dim, hidden_size)`` of a BERT- or Llama-style attention module."""
    config = attention_module.config
    hidden_size = config.hidden_size
    num_heads = getattr(attention_module, "num_attention_heads", None) or config.num_attention_heads
    head_dim = (
        getattr(attention_module, "head_dim", None)
        or getattr(attention_module, "attention_head_size", None)
        or getattr(config, "head_dim", None)
        or hidden_size // num_heads
    )
    num_kv_heads = getattr(config, "num_key_value_heads", None) or num_heads
    return num_kv_heads, head_dim, hidden_size


class PrefixModel(BaseTuner):
    """Prefix tuning for encoder (BERT-family) and decoder (Llama-family) self-attention, as a normal tuner.

    The attention modules are not replaced: each gets a child ``prefix_kv_layer`` and a config view that
    routes its attention call through :func:`~autopeft.tuners.prefix.layer.prefix_attention_forward`.
    """

    prefix: str = "prefix_kv_"
    tuner_layer_cls = PrefixLayer
    target_module_mapping = PREFIX_TARGET_MODULES

    @staticmethod
    def _check_target_module_exists(peft_config: PrefixConfig, key: str):
        if peft_config.target_modules is None:
            return False  # resolved per model type in _prepare_adapter_config
        return BaseTuner._check_target_module_exists(peft_config, key)

    def _create_and_replace(
        self,
        peft_config: PrefixConfig,
        adapter_name: str,
        target: nn.Module,
        target_name: str,
        parent: nn.Module,
        current_key: str,
        **kwargs,
    ) -> None:
        layer = getattr(target, PREFIX_LAYER_ATTR, None)
        if layer is None:
            install_prefix_attention(target)
            layer = PrefixLayer(*attention_geometry(target))
            layer._active_adapter = adapter_name
            setattr(target, PREFIX_LAYER_ATTR, layer)
        reference = next(target.parameters())
        layer.update_layer(adapter_name, peft_config, device=reference.device, dtype=reference.dtype)

    def _prefixed_attention_modules(self) -> list[nn.Module]:
        modules = self.model.modules()
        return [module for module in modules if isinstance(getattr(module, PREFIX_LAYER_ATTR, None), PrefixLayer)]

    def delete_adapter(self, adapter_name: str) -> None:
        # PEFT's generic deletion skips modules whose name contains the prefix, which is where our layers live.
        if adapter_name not in self.peft_config:
            raise ValueError(f"Adapter {adapter_name} does not exist")
        del self.peft_config[adapter_name]
        remaining: list[str] | None = None
        for attention in self._prefixed_attention_modules():
            layer = getattr(attention, PREFIX_LAYER_ATTR)
            layer.delete_adapter(adapter_name)
            if remaining is None:
                remaining = layer.active_adapters[:]
        self.active_adapter = remaining or []

    def _unload_and_optionally_merge(
        self,
        merge: bool = True,
        progressbar: bool = False,
        safe_merge: bool = False,
        adapter_names: list[str] | None = None,
    ) -> nn.Module:
        if merge:
            raise AutopeftError("prefix tuning cannot be merged into the base weights; use unload() to remove it")
        for attention in self._prefixed_attention_modules():
            delattr(attention, PREFIX_LAYER_ATTR)
            uninstall_prefix_attention(attention)
        if hasattr(self.model, "peft_config"):
            del self.model.peft_config
        return self.model

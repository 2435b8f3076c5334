"""Prefix key/value states for one self-attention module, and the attention function that uses them.

Mechanism (transformers 5): attention modules (``BertSelfAttention``, ``LlamaAttention``, ...) compute
q/k/v (and RoPE) themselves, then call ``ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation,
eager_attention_forward)``. A targeted module is left in place; it gets

- a child :class:`PrefixLayer` (attribute :data:`PREFIX_LAYER_ATTR`) holding the learned prefixes, and
- a :class:`PrefixAttentionConfig` view as its ``config``, identical to the model config except that
  ``_attn_implementation`` names :func:`prefix_attention_forward`.

That function prepends the prefix to the keys/values it receives (so RoPE is never applied to them),
widens the mask so every query sees the prefix, and calls the implementation the model is really
configured with ("sdpa" or "eager"). Not wrapping the attention module keeps its q/k/v/o projections
reachable for other tuners (LoRA, IA3, ...) injected before or after this one.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

from autopeft.errors import AutopeftError

from .config import PrefixConfig

PREFIX_ATTENTION_NAME = "autopeft_prefix"
# Child attribute on the attention module. It starts with PrefixModel.prefix so PEFT's state-dict-driven
# injection (``k.rsplit("." + prefix)``) resolves checkpoint keys to the attention module itself.
PREFIX_LAYER_ATTR = "prefix_kv_layer"
# Mask formats below are those of the two implementations that were checked; others are refused loudly.
SUPPORTED_IMPLEMENTATIONS = ("sdpa", "eager", None)


class PrefixProjection(nn.Module):
    """PEFT's prefix reparameterisation, per layer: embedding -> Linear -> tanh -> Linear -> (keys, values)."""

    def __init__(
        self, num_virtual_tokens: int, hidden_size: int, encoder_hidden_size: int, num_kv_heads: int, head_dim: int
    ) -> None:
        super().__init__()
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.embedding = nn.Parameter(torch.empty(num_virtual_tokens, hidden_size))
        self.mlp = nn.Sequential(
            nn.Linear(hidden_size, encoder_hidden_size),
            nn.Tanh(),
            nn.Linear(encoder_hidden_size, 2 * num_kv_heads * head_dim),
        )

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        num_tokens = self.embedding.shape[0]
        states = self.mlp(self.embedding).view(num_tokens, 2, self.num_kv_heads, self.head_dim)
        states = states.permute(1, 2, 0, 3)  # [2, kv_heads, tokens, head_dim]
        return states[0], states[1]


class PrefixLayer(nn.Module, BaseTunerLayer):
    """Learned prefix keys/values ``[num_kv_heads, num_virtual_tokens, head_dim]`` per adapter.

    Lives as a child of the attention module (it wraps nothing, so it has no ``base_layer``). Several
    active adapters concatenate their prefixes.
    """

    adapter_layer_names = ("prefix_keys", "prefix_values", "prefix_projection")
    supports_merging = False

    def __init__(self, num_kv_heads: int, head_dim: int, hidden_size: int) -> None:
        super().__init__()
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.hidden_size = hidden_size
        self.prefix_keys = nn.ParameterDict({})
        self.prefix_values = nn.ParameterDict({})
        self.prefix_projection = nn.ModuleDict({})
        self._disable_adapters = False
        self.merged_adapters = []

    def update_layer(
        self, adapter_name: str, config: PrefixConfig, device: torch.device, dtype: torch.dtype
    ) -> None:
        shape = (self.num_kv_heads, config.num_virtual_tokens, self.head_dim)
        if config.prefix_projection:
            projection = PrefixProjection(
                config.num_virtual_tokens,
                self.hidden_size,
                config.encoder_hidden_size or self.hidden_size,
                self.num_kv_heads,
                self.head_dim,
            )
            nn.init.normal_(projection.embedding, std=config.init_std)
            self.prefix_projection[adapter_name] = projection.to(device=device, dtype=dtype)
        else:
            for states in (self.prefix_keys, self.prefix_values):
                states[adapter_name] = nn.Parameter(torch.randn(shape, device=device, dtype=dtype) * config.init_std)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        raise AutopeftError("prefix tuning adds key/value states, there are no weights to merge it into")

    def unmerge(self) -> None:
        return None  # merge() never succeeds, so there is nothing to undo

    def unload_and_optionally_merge_module(
        self, merge: bool, safe_merge: bool, adapter_names: list[str] | None
    ) -> None:
        """Called by a generic unload: this layer wraps nothing, so it is replaced by nothing.

        The attention module keeps its config view, which passes straight through once the layer is gone.
        """
        if merge:
            self.merge(safe_merge=safe_merge, adapter_names=adapter_names)
        return None

    def prefix_states(self, batch_size: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Active prefixes as ``[batch, kv_heads, tokens, head_dim]`` keys and values, or None when there are none."""
        if self.disable_adapters:
            return None
        keys, values = [], []
        for name in self.active_adapters:
            if name in self.prefix_keys:
                keys.append(self.prefix_keys[name])
                values.append(self.prefix_values[name])
            elif name in self.prefix_projection:
                key, value = self.prefix_projection[name]()
                keys.append(key)
                values.append(value)
        if not keys:
            return None
        key = torch.cat(keys, dim=1).to(dtype)
        value = torch.cat(values, dim=1).to(dtype)
        return key.expand(batch_size, -1, -1, -1), value.expand(batch_size, -1, -1, -1)

    def __repr__(self) -> str:
        return "prefix." + super().__repr__()


class PrefixAttentionConfig:
    """The model config as seen by one prefixed attention module: only ``_attn_implementation`` differs.

    Everything else, reads and writes, goes to the shared model config, so e.g. a later
    ``model.set_attn_implementation("eager")`` still decides which implementation runs underneath.
    """

    def __init__(self, wrapped_config: Any, eager_fallback: Callable) -> None:
        object.__setattr__(self, "wrapped_config", wrapped_config)
        object.__setattr__(self, "eager_fallback", eager_fallback)

    @property
    def _attn_implementation(self) -> str:
        return PREFIX_ATTENTION_NAME

    def __getattr__(self, name: str) -> Any:
        # Dunder lookups (copy/pickle protocol) and our own slots must not recurse into the wrapped config.
        if name.startswith("__") or name in ("wrapped_config", "eager_fallback"):
            raise AttributeError(name)
        return getattr(self.wrapped_config, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.wrapped_config, name, value)


def eager_fallback_for(attention_module: nn.Module) -> Callable:
    """The ``eager_attention_forward`` of the module's modeling file (what transformers falls back to for "eager")."""
    modeling_module = sys.modules.get(type(attention_module).__module__)
    eager = getattr(modeling_module, "eager_attention_forward", None)
    config = getattr(attention_module, "config", None)
    if eager is None or not hasattr(config, "_attn_implementation"):
        raise AutopeftError(
            f"prefix tuning needs an attention module that dispatches through transformers' AttentionInterface "
            f"(a `config` attribute and an `eager_attention_forward` in its modeling file); "
            f"{type(attention_module).__name__} has not"
        )
    return eager


def install_prefix_attention(attention_module: nn.Module) -> None:
    """Route the module's attention call through :func:`prefix_attention_forward` (idempotent)."""
    if not isinstance(attention_module.config, PrefixAttentionConfig):
        eager = eager_fallback_for(attention_module)
        attention_module.config = PrefixAttentionConfig(attention_module.config, eager)


def uninstall_prefix_attention(attention_module: nn.Module) -> None:
    if isinstance(attention_module.config, PrefixAttentionConfig):
        attention_module.config = attention_module.config.wrapped_config


def extend_attention_mask(
    attention_mask: torch.Tensor | None,
    query: torch.Tensor,
    key_length: int,
    num_prefix: int,
    sdpa_causal: bool,
) -> torch.Tensor | None:
    """Widen ``attention_mask`` by ``num_prefix`` leading key columns that every query may attend to.

    ``sdpa_causal``: the mask is None and sdpa would have applied its own (top-left aligned) causal mask;
    that mask must now be explicit because the keys grew.
    """
    if attention_mask is None:
        if not sdpa_causal:
            return None
        query_positions = torch.arange(query.shape[2], device=query.device)
        key_positions = torch.arange(key_length, device=query.device)
        attention_mask = (query_positions[:, None] >= key_positions[None, :])[None, None]
    if attention_mask.dim() != 4:
        raise AutopeftError(f"prefix tuning expects a 4-D attention mask, got shape {tuple(attention_mask.shape)}")
    prefix_shape = (*attention_mask.shape[:-1], num_prefix)
    if attention_mask.dtype == torch.bool:
        visible = torch.ones(prefix_shape, dtype=torch.bool, device=attention_mask.device)
    else:  # additive float mask: 0 means visible
        visible = torch.zeros(prefix_shape, dtype=attention_mask.dtype, device=attention_mask.device)
    return torch.cat([visible, attention_mask], dim=-1)


def prefix_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Attention with the module's prefix prepended; dispatches to the model's configured implementation."""
    view: PrefixAttentionConfig = module.config
    implementation = view.wrapped_config._attn_implementation
    inner = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, view.eager_fallback)
    layer: PrefixLayer | None = getattr(module, PREFIX_LAYER_ATTR, None)
    prefix = layer.prefix_states(key.shape[0], key.dtype) if layer is not None else None
    if prefix is None:
        return inner(module, query, key, value, attention_mask, **kwargs)
    if implementation not in SUPPORTED_IMPLEMENTATIONS:
        raise AutopeftError(
            f"prefix tuning supports the 'sdpa' and 'eager' attention implementations, not {implementation!r}"
        )
    prefix_keys, prefix_values = prefix
    if prefix_keys.shape[1] != key.shape[1]:
        raise AutopeftError(
            f"prefix has {prefix_keys.shape[1]} key/value heads but the attention module produced {key.shape[1]}"
        )
    is_causal = kwargs.get("is_causal")
    is_causal = getattr(module, "is_causal", True) if is_causal is None else is_causal
    sdpa_causal = implementation == "sdpa" and is_causal and query.shape[2] > 1
    attention_mask = extend_attention_mask(attention_mask, query, key.shape[2], prefix_keys.shape[2], sdpa_causal)
    key = torch.cat([prefix_keys.to(key.device), key], dim=2)
    value = torch.cat([prefix_values.to(value.device), value], dim=2)
    return inner(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(PREFIX_ATTENTION_NAME, prefix_attention_forward)

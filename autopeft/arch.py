"""What autopeft needs to know about a model architecture, in one table.

Each family maps the roles a search space speaks of (query, key, value, attention_output,
ffn_in, ffn_out) to module names inside one transformer layer, and gives the shape of every
role from the model config alone, so parameter counts are analytic and builders never branch
on ``model_type``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from autopeft.errors import SpaceError

MATRIX_ROLES = ("query", "key", "value", "attention_output", "ffn_in", "ffn_out")


@dataclass(frozen=True)
class Dimensions:
    hidden: int
    intermediate: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int


@dataclass(frozen=True)
class AdapterSite:
    """Where a bottleneck adapter attaches for one location (ffn / attention)."""

    serial_target: str              # Linear whose output a serial adapter transforms
    parallel_target: str            # module whose output a parallel adapter adds to
    parallel_input: str | None      # module whose input feeds a parallel adapter (None: the target's own)


@dataclass(frozen=True)
class Architecture:
    family: str
    model_types: tuple[str, ...]
    layer_prefix: str                      # regex prefix of the transformer layers, up to the index
    matrices: dict[str, tuple[str, ...]]   # role -> Linear module names relative to a layer
    attention: str                         # self-attention module (prefix, head count)
    adapter_sites: dict[str, AdapterSite]  # location -> where bottleneck adapters attach
    layer_norms: tuple[str, ...]           # norms inside a layer
    norm_has_bias: bool
    linear_has_bias: bool
    encoder: bool                          # bidirectional (prefix must not be causal-masked)

    def dims(self, config) -> Dimensions:
        hidden = config.hidden_size
        heads = config.num_attention_heads
        return Dimensions(
            hidden=hidden,
            intermediate=config.intermediate_size,
            num_layers=config.num_hidden_layers,
            num_heads=heads,
            num_kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=getattr(config, "head_dim", None) or hidden // heads,
        )

    def matrix_shapes(self, config) -> dict[str, tuple[tuple[int, int], ...]]:
        """role -> ((out_features, in_features), ...) for the Linear modules of that role."""
        d = self.dims(config)
        attention, kv = d.num_heads * d.head_dim, d.num_kv_heads * d.head_dim
        ffn_in_count = len(self.matrices["ffn_in"])
        return {
            "query": ((attention, d.hidden),),
            "key": ((kv, d.hidden),),
            "value": ((kv, d.hidden),),
            "attention_output": ((d.hidden, attention),),
            "ffn_in": ((d.intermediate, d.hidden),) * ffn_in_count,
            "ffn_out": ((d.hidden, d.intermediate),),
        }

    def module_name(self, layer: int, relative: str) -> str:
        return f"{self.layer_prefix}.{layer}.{relative}"

    def module_names(self, layers, relative: str) -> list[str]:
        """``relative`` inside each of ``layers``, in layer order."""
        return [self.module_name(layer, relative) for layer in sorted(layers)]

    def role_modules(self, roles) -> list[str]:
        """Module names (relative to a layer) of the given matrix roles, in table order."""
        return [name for role in roles for name in self.matrices[role]]

    def layer_regex(self, layers, relative_names) -> str:
        """A full-match regex over module names for ``relative_names`` inside ``layers``."""
        layer_part = "|".join(str(layer) for layer in sorted(layers))
        module_part = "|".join(re.escape(name) for name in relative_names)
        return rf"(.*\.)?{re.escape(self.layer_prefix)}\.({layer_part})\.({module_part})"


BERT = Architecture(
    family="bert",
    model_types=("bert", "roberta", "xlm-roberta", "electra", "camembert"),
    layer_prefix="encoder.layer",
    matrices={
        "query": ("attention.self.query",),
        "key": ("attention.self.key",),
        "value": ("attention.self.value",),
        "attention_output": ("attention.output.dense",),
        "ffn_in": ("intermediate.dense",),
        "ffn_out": ("output.dense",),
    },
    attention="attention.self",
    adapter_sites={
        "ffn": AdapterSite("output.dense", "output.dense", "intermediate"),
        "attention": AdapterSite("attention.output.dense", "attention.output.dense", "attention.self"),
    },
    layer_norms=("attention.output.LayerNorm", "output.LayerNorm"),
    norm_has_bias=True,
    linear_has_bias=True,
    encoder=True,
)

LLAMA = Architecture(
    family="llama",
    model_types=("llama", "mistral", "qwen2", "qwen3"),
    layer_prefix="layers",
    matrices={
        "query": ("self_attn.q_proj",),
        "key": ("self_attn.k_proj",),
        "value": ("self_attn.v_proj",),
        "attention_output": ("self_attn.o_proj",),
        "ffn_in": ("mlp.gate_proj", "mlp.up_proj"),
        "ffn_out": ("mlp.down_proj",),
    },
    attention="self_attn",
    adapter_sites={
        "ffn": AdapterSite("mlp.down_proj", "mlp", None),
        "attention": AdapterSite("self_attn.o_proj", "self_attn.o_proj", "self_attn"),
    },
    layer_norms=("input_layernorm", "post_attention_layernorm"),
    norm_has_bias=False,
    linear_has_bias=False,
    encoder=False,
)

ARCHITECTURES = (BERT, LLAMA)


def architecture_for(config) -> Architecture:
    model_type = getattr(config, "model_type", None)
    for arch in ARCHITECTURES:
        if model_type in arch.model_types:
            if arch is LLAMA and (getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False)):
                raise SpaceError(f"model type '{model_type}' with attention/mlp biases is not supported yet")
            return arch
    supported = ", ".join(t for a in ARCHITECTURES for t in a.model_types)
    raise SpaceError(f"model type '{model_type}' is not supported (supported: {supported})")

"""Configuration of per-layer prefix tuning (learned key/value vectors prepended inside self-attention)."""

from __future__ import annotations

from dataclasses import dataclass, field

from peft.config import PeftConfig

from autopeft.errors import AutopeftError
from autopeft.tuners._registry import add_peft_type

PEFT_TYPE = add_peft_type("prefix")


@dataclass
class PrefixConfig(PeftConfig):
    """Prefix tuning as a normal (injectable) tuner.

    Every targeted self-attention module gets ``num_virtual_tokens`` learned key and value vectors per
    key/value head, prepended to that layer's keys and values after RoPE (so prefixes carry no position)
    and visible to every query. Trainable parameters per targeted layer:

    - without projection: ``2 * num_virtual_tokens * num_kv_heads * head_dim``
    - with ``prefix_projection``: ``P*D + (D*E + E) + (E*2*num_kv_heads*head_dim + 2*num_kv_heads*head_dim)``
      with ``P = num_virtual_tokens``, ``D`` the model's hidden size, ``E = encoder_hidden_size``.
    """

    num_virtual_tokens: int = field(default=10, metadata={"help": "Prefix length per targeted layer."})
    target_modules: list[str] | str | None = field(
        default=None,
        metadata={
            "help": "Self-attention modules to prefix (names, suffixes or a regex). Defaults per model type, "
            "e.g. 'attention.self' for BERT and 'self_attn' for Llama."
        },
    )
    layers_to_transform: list[int] | int | None = field(
        default=None, metadata={"help": "Only prefix these layer indices (None: all targeted layers)."}
    )
    init_std: float = field(
        default=0.02, metadata={"help": "Std of the normal init of the prefix (or of its embedding with projection)."}
    )
    prefix_projection: bool = field(
        default=False,
        metadata={
            "help": "Reparameterise each layer's prefix through an embedding + tanh MLP (as PEFT's PrefixEncoder)."
        },
    )
    encoder_hidden_size: int | None = field(
        default=None, metadata={"help": "Hidden size of the projection MLP; None uses the model's hidden size."}
    )
    modules_to_save: list[str] | None = field(
        default=None, metadata={"help": "Extra modules to train fully and save, e.g. a classifier head."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = PEFT_TYPE
        if self.num_virtual_tokens < 1:
            raise AutopeftError(f"num_virtual_tokens must be >= 1, got {self.num_virtual_tokens}")
        if self.init_std < 0:
            raise AutopeftError(f"init_std must be >= 0, got {self.init_std}")
        if self.encoder_hidden_size is not None and self.encoder_hidden_size < 1:
            raise AutopeftError(f"encoder_hidden_size must be >= 1, got {self.encoder_hidden_size}")
        if isinstance(self.target_modules, list):
            self.target_modules = set(self.target_modules)

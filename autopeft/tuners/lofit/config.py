"""Configuration of LoFiT (Yin et al., NeurIPS 2024): per-head scale and offset of attention outputs."""

from __future__ import annotations

from dataclasses import dataclass, field

from peft.config import PeftConfig

from autopeft.errors import AutopeftError
from autopeft.tuners._registry import add_peft_type

PEFT_TYPE = add_peft_type("lofit")

HeadSelection = dict[int, list[int]]


def normalize_heads(heads: list[list[int]] | dict[int | str, list[int]] | None) -> HeadSelection | None:
    """``list[layer] -> heads`` or ``{layer: heads}`` (JSON turns keys into strings) as ``{layer: sorted heads}``.

    Layers without heads are dropped: they are not adapted at all.
    """
    if heads is None:
        return None
    items = enumerate(heads) if isinstance(heads, list) else heads.items()
    selection: HeadSelection = {}
    for layer, layer_heads in items:
        layer = int(layer)
        unique_heads = sorted({int(head) for head in layer_heads})
        if layer < 0 or any(head < 0 for head in unique_heads):
            raise AutopeftError(f"LoFiT heads must be non-negative (layer {layer}: {list(layer_heads)})")
        if unique_heads:
            selection[layer] = unique_heads
    return selection


@dataclass
class LofitConfig(PeftConfig):
    """LoFiT: in each targeted attention layer, head ``h``'s output ``z_h`` (after softmax(QK^T)V, before the
    output projection) becomes ``(1 + A_h) * z_h + v_h``.

    Two steps, as in the paper: step 1 trains only the scales ``A`` on all heads (``train_offset=False``) with
    :func:`~autopeft.tuners.lofit.model.lofit_l1_penalty`, heads are ranked by ``||A_h||``
    (:class:`~autopeft.tuners.lofit.ranking.HeadRanking`); step 2 trains only the offsets ``v`` of the top-k
    heads (``train_scale=False``, ``heads=ranking.top_k(k)``). Vectors that are not trained do not exist, so the
    trainable parameters are exactly ``n_selected_heads * head_dim * (train_scale + train_offset)``.
    """

    target_modules: list[str] | str | None = field(
        default=None,
        metadata={
            "help": "Attention output projections (names, suffixes or a regex). Defaults per model type: "
            "'attention.output.dense' for BERT, 'o_proj' for Llama."
        },
    )
    heads: dict[int, list[int]] | list[list[int]] | None = field(
        default=None,
        metadata={
            "help": "Selected heads as {layer: [heads]} or [[heads of layer 0], [heads of layer 1], ...]; "
            "None selects all heads of every targeted layer. Layers without heads are not adapted."
        },
    )
    train_scale: bool = field(default=True, metadata={"help": "Learn the per-head scales A (step 1)."})
    train_offset: bool = field(default=True, metadata={"help": "Learn the per-head offsets v (step 2)."})
    scale_init_std: float = field(
        default=1e-3,
        metadata={"help": "A ~ N(0, scale_init_std) when trained (1e-3 as in the LoFiT code); v starts at 0."},
    )
    num_heads: int | None = field(
        default=None, metadata={"help": "Attention heads per layer; inferred from the model."}
    )
    head_dim: int | None = field(default=None, metadata={"help": "Size of one head; inferred from the model."})
    modules_to_save: list[str] | None = field(
        default=None, metadata={"help": "Extra modules to train fully and save, e.g. a classifier head."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = PEFT_TYPE
        if not (self.train_scale or self.train_offset):
            raise AutopeftError("LoFiT needs train_scale or train_offset (or both)")
        if self.scale_init_std < 0:
            raise AutopeftError(f"scale_init_std must be >= 0, got {self.scale_init_std}")
        self.heads = normalize_heads(self.heads)
        if isinstance(self.target_modules, list):
            self.target_modules = set(self.target_modules)

    def heads_for_layer(self, layer: int) -> list[int]:
        """Selected heads of ``layer`` (all heads when ``heads`` is None; needs ``num_heads``)."""
        if self.heads is None:
            return list(range(self.num_heads))
        return self.heads.get(layer, [])

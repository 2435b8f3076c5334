from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

from peft.config import PeftConfig
from transformers.activations import ACT2FN

from autopeft.errors import AutopeftError
from autopeft.tuners._registry import add_peft_type

PEFT_TYPE = add_peft_type("bottleneck")

PLACEMENTS = ("serial", "parallel")
# Houlsby/Pfeiffer serial adapters add their output unscaled; He et al. (2022) found s=4 best for parallel ones.
DEFAULT_SCALING = {"serial": 1.0, "parallel": 4.0}


@dataclass
class BottleneckConfig(PeftConfig):
    """Bottleneck adapters ``a(h) = up(act(down(h)))``, ``up`` zero-initialised so a fresh adapter is an identity.

    The adapter's result is added to the output ``f(x)`` of every target module:

    - ``placement="serial"`` (Houlsby / Pfeiffer, "after the FFN"): ``y = f(x) + s * a(f(x))``.
    - ``placement="parallel"`` (He et al. 2022, "parallel adapter on the FFN"): ``y = f(x) + s * a(x)``. With
      ``input_modules`` the adapter reads the input of another module instead of the target's own input: BERT has no
      single FFN module, so a parallel FFN adapter targets ``output.dense`` and reads the input of ``intermediate``
      (``input_modules={"output.dense": "intermediate"}``); on Llama it simply targets ``mlp``.

    One module can carry one serial and one parallel adapter of the same adapter name (two components of a composite);
    the serial one transforms the module's output first, then the parallel one adds its contribution.

    Trainable parameters of one adapter with bottleneck ``m``: ``d_in*m + m + m*d_out + d_out``, where ``d_out`` is the
    target's output width and ``d_in`` the width the adapter reads (``d_out`` for serial adapters).

    Args:
        target_modules: Modules whose output the adapter's result is added to (names, suffixes, or one regex).
        exclude_modules: Modules never targeted (e.g. ``["attention.output.dense"]`` next to ``["output.dense"]``).
        placement: ``"serial"`` or ``"parallel"``.
        input_modules: Parallel only. Maps a suffix of a target's name to the name of the module, relative to the same
            parent prefix, whose input feeds the adapter; ``None`` reads the target's own input.
        bottleneck_size: Default bottleneck width ``m``.
        size_pattern: Per-module bottleneck widths, keyed by regex like LoRA's ``rank_pattern``.
        non_linearity: Activation between the projections, any ``transformers.activations.ACT2FN`` name.
        scaling: Factor ``s``; ``None`` means 1.0 for serial and 4.0 for parallel adapters.
        layers_to_transform / layers_pattern: Restrict list-form ``target_modules`` to these layer indices (as in PEFT).
        modules_to_save: Extra modules trained in full and saved (e.g. a classification head).
        init_weights: ``False`` initialises ``up`` randomly instead of with zeros (tests only).
    """

    target_modules: Optional[Union[list[str], str]] = field(
        default=None,
        metadata={"help": "Modules whose output the adapter's result is added to: names/suffixes, or one regex."},
    )
    exclude_modules: Optional[Union[list[str], str]] = field(
        default=None, metadata={"help": "Modules never targeted: names/suffixes, or one regex."}
    )
    placement: str = field(default="serial", metadata={"help": "'serial' (reads the output) or 'parallel'."})
    input_modules: Optional[dict[str, str]] = field(
        default=None,
        metadata={
            "help": "Parallel only: target-name suffix -> name (relative to the same prefix) of the module whose "
            "input feeds the adapter, e.g. {'output.dense': 'intermediate'} for BERT's FFN."
        },
    )
    bottleneck_size: int = field(default=64, metadata={"help": "Default bottleneck width."})
    size_pattern: dict[str, int] = field(
        default_factory=dict, metadata={"help": "Regex of module name -> bottleneck width, like LoRA's rank_pattern."}
    )
    non_linearity: str = field(default="relu", metadata={"help": "Activation name from transformers' ACT2FN."})
    scaling: Optional[float] = field(
        default=None, metadata={"help": "Output scaling; None: 1.0 for serial, 4.0 for parallel adapters."}
    )
    layers_to_transform: Optional[Union[list[int], int]] = field(
        default=None, metadata={"help": "Layer indices to adapt (list-form target_modules only)."}
    )
    layers_pattern: Optional[Union[list[str], str]] = field(
        default=None, metadata={"help": "Name of the layer list, used with layers_to_transform."}
    )
    modules_to_save: Optional[list[str]] = field(
        default=None, metadata={"help": "Modules trained in full and saved, e.g. a classification head."}
    )
    init_weights: bool = field(default=True, metadata={"help": "Zero-initialise the up-projection (identity)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = PEFT_TYPE
        if isinstance(self.target_modules, list):
            self.target_modules = set(self.target_modules)
        if isinstance(self.exclude_modules, list):
            self.exclude_modules = set(self.exclude_modules)
        if self.placement not in PLACEMENTS:
            raise AutopeftError(f"bottleneck placement must be one of {PLACEMENTS}, got {self.placement!r}")
        if self.input_modules and self.placement != "parallel":
            raise AutopeftError("input_modules only applies to parallel bottleneck adapters")
        sizes = {"bottleneck_size": self.bottleneck_size}
        sizes.update({f"size_pattern[{key!r}]": size for key, size in self.size_pattern.items()})
        for name, size in sizes.items():
            if not isinstance(size, int) or size < 1:
                raise AutopeftError(
                    f"{name} must be a positive int, got {size!r} (leave a layer out with layers_to_transform)"
                )
        if self.non_linearity not in ACT2FN:
            raise AutopeftError(f"unknown non_linearity {self.non_linearity!r}; use a name from transformers' ACT2FN")
        if isinstance(self.target_modules, str) and (self.layers_to_transform is not None or self.layers_pattern):
            raise AutopeftError("layers_to_transform/layers_pattern need list-form target_modules, not a regex")
        if self.layers_pattern and self.layers_to_transform is None:
            raise AutopeftError("layers_pattern needs layers_to_transform")
        if self.scaling is None:
            self.scaling = DEFAULT_SCALING[self.placement]

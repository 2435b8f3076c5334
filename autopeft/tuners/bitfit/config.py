from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

from peft.config import PeftConfig

from autopeft.errors import AutopeftError
from autopeft.tuners._registry import add_peft_type

PEFT_TYPE = add_peft_type("bitfit")


@dataclass
class BitFitConfig(PeftConfig):
    """BitFit (Ben Zaken et al. 2022): train only the bias vectors of the targeted modules.

    Each targeted Linear, Conv1D, LayerNorm or RMSNorm gets a trainable, zero-initialised delta added to its output
    (``y = f(x) + delta``): the base bias stays frozen and only the deltas are saved. A module without a bias (every
    Linear and norm of Llama) gets a new one when ``add_missing_bias`` is True and is skipped otherwise. Other modules
    matched by the name patterns (containers, dropout, activations) are skipped, so a regex such as
    ``r".*\\.layer\\.\\d+\\..*"`` means "every bias in these layers".

    Trainable parameters: the sum over the adapted modules of their bias size (a Linear's ``out_features``, a norm's
    width).

    Args:
        target_modules: Modules whose bias is trained (names, suffixes, or one regex).
        exclude_modules: Modules never targeted.
        add_missing_bias: Give bias-free modules a (zero-initialised) bias to train instead of skipping them.
        layers_to_transform / layers_pattern: Restrict list-form ``target_modules`` to these layer indices (as in PEFT).
        modules_to_save: Extra modules trained in full and saved (e.g. a classification head).
        init_weights: ``False`` initialises the deltas randomly instead of with zeros (tests only).
    """

    target_modules: Optional[Union[list[str], str]] = field(
        default=None, metadata={"help": "Modules whose bias is trained: names/suffixes, or one regex."}
    )
    exclude_modules: Optional[Union[list[str], str]] = field(
        default=None, metadata={"help": "Modules never targeted: names/suffixes, or one regex."}
    )
    add_missing_bias: bool = field(
        default=True, metadata={"help": "Give bias-free modules a zero-initialised bias to train (else skip them)."}
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
    init_weights: bool = field(default=True, metadata={"help": "Zero-initialise the bias deltas (identity)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = PEFT_TYPE
        if isinstance(self.target_modules, list):
            self.target_modules = set(self.target_modules)
        if isinstance(self.exclude_modules, list):
            self.exclude_modules = set(self.exclude_modules)
        if isinstance(self.target_modules, str) and (self.layers_to_transform is not None or self.layers_pattern):
            raise AutopeftError("layers_to_transform/layers_pattern need list-form target_modules, not a regex")
        if self.layers_pattern and self.layers_to_transform is None:
            raise AutopeftError("layers_pattern needs layers_to_transform")

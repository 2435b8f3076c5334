"""Configuration of sparse tuning (unstructured part of SPT): train a fixed set of weight entries."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import torch
from peft.config import PeftConfig

from autopeft.errors import AutopeftError
from autopeft.tuners._registry import add_peft_type

from .mask import SparseMask

PEFT_TYPE = add_peft_type("sparse")
# Written in place of a SparseMask when the config is saved: the indices travel in the adapter weights.
MASKS_FROM_CHECKPOINT = "from_checkpoint"


@dataclass
class SparseConfig(PeftConfig):
    """Each targeted ``nn.Linear`` gets a fixed set of flat indices into its weight and one trainable delta per
    index; its effective weight is ``W + scatter(delta)`` (deltas start at 0, so the model starts unchanged).
    Trainable parameters = total number of indices, exactly.

    Where the indices come from (``masks``):

    - a :class:`~autopeft.tuners.sparse.mask.SparseMask` (e.g. from gradient sensitivity): modules absent from
      the mask are not adapted; with ``target_modules=None`` exactly the mask's modules are adapted;
    - ``None``: a random mask of ``density`` per targeted module, seeded by ``mask_seed`` (baseline);
    - ``"from_checkpoint"``: what a saved config says; layers start empty and take their indices from the
      adapter weights, so ``PeftModel.from_pretrained`` needs nothing but the adapter folder.
    """

    target_modules: list[str] | str | None = field(
        default=None,
        metadata={"help": "nn.Linear modules to adapt (names, suffixes or a regex). Defaults per model type."},
    )
    exclude_modules: list[str] | str | None = field(
        default=None, metadata={"help": "Modules not to adapt (names, suffixes or a regex)."}
    )
    layers_to_transform: list[int] | int | None = field(
        default=None, metadata={"help": "Only adapt modules in these layer indices (list target_modules only)."}
    )
    masks: SparseMask | dict[str, torch.Tensor] | str | None = field(
        default=None,
        metadata={"help": "SparseMask, {module name or regex: flat indices}, 'from_checkpoint', or None for random."},
    )
    density: float = field(default=0.01, metadata={"help": "Fraction of each weight trained when masks is None."})
    mask_seed: int = field(default=0, metadata={"help": "Seed of the random mask (masks=None)."})
    modules_to_save: list[str] | None = field(
        default=None, metadata={"help": "Extra modules to train fully and save, e.g. a classifier head."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = PEFT_TYPE
        if not 0 < self.density <= 1:
            raise AutopeftError(f"density must be in (0, 1], got {self.density}")
        if isinstance(self.masks, dict):
            self.masks = SparseMask(self.masks)
        if isinstance(self.masks, str) and self.masks != MASKS_FROM_CHECKPOINT:
            raise AutopeftError(
                f"masks must be a SparseMask, a dict, {MASKS_FROM_CHECKPOINT!r} or None, got {self.masks!r}"
            )
        if isinstance(self.target_modules, list):
            self.target_modules = set(self.target_modules)

    @property
    def indices_from_checkpoint(self) -> bool:
        return self.masks == MASKS_FROM_CHECKPOINT

    def to_dict(self) -> dict:
        # Index tensors are not JSON; they are saved with the adapter weights instead.
        data = asdict(replace(self, masks=None))
        data["masks"] = MASKS_FROM_CHECKPOINT if self.masks is not None else None
        return data

"""LoFiT (localized fine-tuning of attention-head outputs) as a PEFT tuner (peft type "lofit")."""

from autopeft.tuners._registry import register_tuner

from .config import LofitConfig
from .layer import LofitLayer
from .model import LofitModel, fold_offsets_into_bias, head_norms, lofit_l1_penalty
from .ranking import HeadRanking

__all__ = [
    "HeadRanking",
    "LofitConfig",
    "LofitLayer",
    "LofitModel",
    "fold_offsets_into_bias",
    "head_norms",
    "lofit_l1_penalty",
]

register_tuner("lofit", LofitConfig, LofitModel, prefix=LofitModel.prefix)

"""Sparse tuning (SPT's unstructured part) as a PEFT tuner (peft type "sparse")."""

from autopeft.tuners._registry import register_tuner

from .config import MASKS_FROM_CHECKPOINT, SparseConfig
from .layer import SparseLayer
from .mask import SparseMask, random_mask, sparse_entries
from .model import SparseModel

__all__ = ["MASKS_FROM_CHECKPOINT", "SparseConfig", "SparseLayer", "SparseMask", "SparseModel", "random_mask",
           "sparse_entries"]

register_tuner("sparse", SparseConfig, SparseModel, prefix=SparseModel.prefix)

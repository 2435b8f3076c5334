"""Priors: task-specific knowledge computed once before a search and cached on disk (SPT's sensitivity map,
LoFiT's head ranking)."""

from autopeft.priors.cache import atomic_folder, cache_dir, cache_key, cached_path, read_entry
from autopeft.priors.heads import heads_plot, load_or_select_heads, ranked_heads, select_heads
from autopeft.priors.sensitivity import (
    SensitivityMap,
    compute_sensitivity,
    load_or_compute_sensitivity,
    model_signature,
    role_modules,
    sensitivity_batches,
)

__all__ = [
    "SensitivityMap",
    "atomic_folder",
    "cache_dir",
    "cache_key",
    "cached_path",
    "compute_sensitivity",
    "heads_plot",
    "load_or_compute_sensitivity",
    "load_or_select_heads",
    "model_signature",
    "ranked_heads",
    "read_entry",
    "role_modules",
    "select_heads",
    "sensitivity_batches",
]

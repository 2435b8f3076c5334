"""SparseMask: which entries of which weights sparse tuning may change (flat row-major indices into W)."""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from autopeft.errors import AutopeftError

MASK_FORMAT = "autopeft-sparse-mask"


def _as_index_tensor(module_name: str, indices: torch.Tensor) -> torch.Tensor:
    indices = torch.as_tensor(indices)
    if indices.dim() != 1 or indices.dtype.is_floating_point or indices.dtype == torch.bool:
        raise AutopeftError(f"mask of {module_name!r} must be a 1-D integer tensor of flat indices")
    indices = indices.to(torch.long).cpu()
    sorted_indices = indices.sort().values
    if sorted_indices.numel() and sorted_indices[0] < 0:
        raise AutopeftError(f"mask of {module_name!r} has negative indices")
    if sorted_indices.numel() > 1 and (sorted_indices[1:] == sorted_indices[:-1]).any():
        raise AutopeftError(f"mask of {module_name!r} repeats indices")
    return sorted_indices


@dataclass
class SparseMask:
    """``{module name: LongTensor of flat indices into that module's weight}``, sorted and unique.

    Module names are as in ``base_model.named_modules()`` (e.g. ``bert.encoder.layer.0.attention.self.query``).
    A key that is not a module name is tried as a regex (``re.fullmatch``), which applies one index set to
    every same-shaped module it matches.
    """

    indices: dict[str, torch.Tensor]

    def __post_init__(self) -> None:
        self.indices = {name: _as_index_tensor(name, idx) for name, idx in self.indices.items()}

    def __len__(self) -> int:
        return len(self.indices)

    def num_entries(self) -> int:
        return sum(idx.numel() for idx in self.indices.values())

    def lookup(self, module_name: str) -> torch.Tensor | None:
        """Indices for ``module_name``: the exact key, else the single key that fully matches it as a regex."""
        if module_name in self.indices:
            return self.indices[module_name]
        matches = [key for key in self.indices if _fullmatch(key, module_name)]
        if len(matches) > 1:
            raise AutopeftError(f"module {module_name!r} matches several mask patterns: {matches}")
        return self.indices[matches[0]] if matches else None

    def save(self, path: str | Path) -> None:
        """Write as safetensors (tensor name = module name); no pickle involved."""
        tensors = {name: idx.contiguous() for name, idx in self.indices.items()}
        save_file(tensors, str(path), metadata={"format": MASK_FORMAT})

    @classmethod
    def load(cls, path: str | Path) -> SparseMask:
        return cls(indices=load_file(str(path)))


def _fullmatch(pattern: str, name: str) -> bool:
    try:
        return re.fullmatch(pattern, name) is not None
    except re.error:
        return False


def sparse_entries(density: float, rows: int, cols: int) -> int:
    """Entries a mask of ``density`` keeps in a ``rows x cols`` matrix: ``round(density * rows * cols)``, at least 1
    (what random masks, sensitivity masks and the search's parameter counts all use)."""
    return max(1, round(density * rows * cols))


def random_indices(numel: int, density: float, seed: int, module_name: str) -> torch.Tensor:
    """:func:`sparse_entries` distinct sorted flat indices, reproducible per (seed, module name)."""
    if not 0 < density <= 1:
        raise AutopeftError(f"density must be in (0, 1], got {density}")
    count = sparse_entries(density, numel, 1)
    # crc32 rather than hash(): stable across processes, so the same seed always gives the same mask
    generator = torch.Generator().manual_seed(zlib.crc32(f"{seed}:{module_name}".encode()))
    return torch.randperm(numel, generator=generator)[:count].sort().values


def matches_targets(module_name: str, targets: str | list[str] | set[str]) -> bool:
    """PEFT's ``target_modules`` rule: a string is a full-match regex, a list holds names or name suffixes."""
    if isinstance(targets, str):
        return _fullmatch(targets, module_name)
    return any(module_name == target or module_name.endswith(f".{target}") for target in targets)


def random_mask(model: nn.Module, targets: str | list[str], density: float, seed: int = 0) -> SparseMask:
    """Uniformly random mask over the ``nn.Linear`` modules matching ``targets`` (a baseline, and for tests).

    Gives the same indices as ``SparseConfig(target_modules=targets, density=density, mask_seed=seed)``.
    """
    indices = {
        name: random_indices(module.weight.numel(), density, seed, name)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and matches_targets(name, targets)
    }
    if not indices:
        raise AutopeftError(f"no nn.Linear module matches {targets!r}")
    return SparseMask(indices)

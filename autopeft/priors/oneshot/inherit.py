"""Inherited weights: a stand-alone trial starts from its slice of a trained super-adapter instead of from scratch
(``autopeft search --prior oneshot --inherit-weights``).

The slice is what one-shot screening scored (:meth:`SuperAdapter.extract` copies the same tensors), so a trial
continues the training its configuration already had inside the super-adapter. Measured before it became a flag
(benchmarks/medium/oneshot-autopeft-space, TREC, 30 points trained at full fidelity both ways): +0.007 ± 0.012
accuracy, better on 21 of 30. Parameters the super-adapter does not hold (module types it leaves out: prefix, IA3,
LoFiT, ...) keep their usual initialisation.

The weights are read from the super-adapter's cache entry (safetensors), by path, so that the driver and every
Ray worker sharing the cache start their trials from the same tensors without rebuilding the super-adapter.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from autopeft.errors import AutopeftError
from autopeft.priors.oneshot.supernet import copy_slices, plain_name
from autopeft.priors.oneshot.train import WEIGHTS_FILE
from autopeft.space.point import PeftPoint


class SliceWeights:
    """:attr:`autopeft.builders.BuildContext.initial_weights` from a saved super-adapter (read once, lazily)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._source: dict[str, torch.Tensor] | None = None

    @property
    def source(self) -> dict[str, torch.Tensor]:
        if self._source is None:
            from safetensors.torch import load_file

            path = self.folder / WEIGHTS_FILE
            if not path.is_file():
                raise AutopeftError(f"inherited weights: no super-adapter at '{self.folder}' (a Ray worker on "
                                    "another machine needs the prior cache on a shared disk: AUTOPEFT_CACHE)")
            self._source = {plain_name(name): tensor for name, tensor in load_file(str(path)).items()}
        return self._source

    def apply(self, point: PeftPoint, model: nn.Module) -> int:
        """Copy the super-adapter's slices into ``model`` (``point`` built stand-alone); returns how many
        parameters came from it."""
        return copy_slices(model, self.source, point.describe(), strict=False)

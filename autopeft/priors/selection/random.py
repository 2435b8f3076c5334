"""``random``: a seeded uniform permutation of the pool (the baseline every other strategy is compared with)."""

from __future__ import annotations

import numpy as np

from autopeft.priors.selection.base import SelectionInputs, SelectionStrategy, register


@register
class RandomStrategy(SelectionStrategy):
    name = "random"

    def _order(self, inputs: SelectionInputs, seed: int) -> np.ndarray:
        return np.random.default_rng(seed).permutation(len(inputs))

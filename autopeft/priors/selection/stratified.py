"""``stratified``: random within each label, interleaved so that every prefix keeps the pool's label proportions.

Each label's examples are shuffled (seeded); the k-th example (0-based) of a label with ``n_c`` examples
gets the key ``(k + 0.5) / n_c`` and the pool is sorted by key (ties in a seeded random order). The first N
then hold ``N * n_c / n`` of label c, to within about one example, for every N. Regression targets are
stratified by quantile bins (:data:`REGRESSION_BINS`).
"""

from __future__ import annotations

import numpy as np

from autopeft.priors.selection.base import SelectionInputs, SelectionStrategy, register

REGRESSION_BINS = 10  # float labels are stratified by this many equal-count bins


def strata(labels: np.ndarray) -> np.ndarray:
    """Integer stratum per example: the class id, or the quantile bin of a float target."""
    labels = np.asarray(labels)
    if np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.bool_):
        return labels.astype(np.int64)
    values = labels.astype(np.float64)
    if np.array_equal(values, np.round(values)):
        return values.astype(np.int64)
    edges = np.unique(np.quantile(values, np.linspace(0, 1, REGRESSION_BINS + 1)[1:-1]))
    return np.searchsorted(edges, values, side="right").astype(np.int64)


@register
class StratifiedStrategy(SelectionStrategy):
    name = "stratified"
    needs_labels = True

    def settings(self) -> dict:
        return {"regression_bins": REGRESSION_BINS}

    def _order(self, inputs: SelectionInputs, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        groups = strata(inputs.pool_labels)
        keys = np.empty(len(groups), dtype=np.float64)
        for value in np.unique(groups):
            members = rng.permutation(np.flatnonzero(groups == value))
            keys[members] = (np.arange(len(members)) + 0.5) / len(members)
        tie_break = rng.random(len(groups))
        self.info["strata"] = int(len(np.unique(groups)))
        return np.lexsort((tie_break, keys))

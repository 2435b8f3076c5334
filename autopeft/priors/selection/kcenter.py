"""``kcenter``: the greedy k-center coreset (farthest-point traversal) in embedding space (Sener & Savarese, 2018).

Start from a seeded random example; each next example is the one farthest (Euclidean) from everything
chosen so far. The traversal order is the ranking, so every prefix is the greedy k-center set of its size.

Cost: one pass over the pool per chosen example, O(n^2 d) for a full order. To keep 100k-example pools at
minutes on a few CPU cores, two documented shortcuts:

- embeddings wider than :data:`PROJECTION_DIMS` are projected onto their top principal components first
  (the covariance's eigenvectors, no randomness); ``info["explained_variance"]`` says how much is kept;
- the traversal runs for the first :data:`GREEDY_LIMIT` examples; the rest follow by their distance to the
  nearest chosen example, descending (what the next greedy step would rank them by, without the updates).
  Selections up to ``GREEDY_LIMIT`` are exact greedy k-center.
"""

from __future__ import annotations

import time

import numpy as np

from autopeft.priors.selection.base import SelectionInputs, SelectionStrategy, register

PROJECTION_DIMS = 64
GREEDY_LIMIT = 20_000


def principal_projection(vectors: np.ndarray, dims: int) -> tuple[np.ndarray, float]:
    """Centred ``vectors`` projected on their top ``dims`` principal directions, and the variance fraction kept."""
    centred = vectors.astype(np.float64) - vectors.mean(axis=0, dtype=np.float64)
    covariance = centred.T @ centred
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)  # ascending
    top = eigenvectors[:, ::-1][:, :dims]
    total = float(eigenvalues.sum())
    kept = float(eigenvalues[::-1][:dims].sum()) / total if total > 0 else 1.0
    return (centred @ top).astype(np.float32), kept


@register
class KCenterStrategy(SelectionStrategy):
    name = "kcenter"
    needs_embeddings = True

    def __init__(self, projection_dims: int = PROJECTION_DIMS, greedy_limit: int = GREEDY_LIMIT) -> None:
        super().__init__()
        self.projection_dims = projection_dims
        self.greedy_limit = greedy_limit

    def settings(self) -> dict:
        return {"projection_dims": self.projection_dims, "greedy_limit": self.greedy_limit}

    def _order(self, inputs: SelectionInputs, seed: int) -> np.ndarray:
        points = np.asarray(inputs.pool_embeddings, dtype=np.float32)
        start = time.perf_counter()  # after the embeddings, which are the caller's cost
        explained = 1.0
        if points.shape[1] > self.projection_dims:
            points, explained = principal_projection(points, self.projection_dims)
        points = np.ascontiguousarray(points)
        n = len(points)
        squared_norms = np.einsum("ij,ij->i", points, points)
        nearest = np.full(n, np.inf, dtype=np.float32)  # squared distance to the nearest chosen example
        steps = min(n, self.greedy_limit)
        ranked = np.empty(n, dtype=np.int64)
        chosen = np.zeros(n, dtype=bool)
        current = int(np.random.default_rng(seed).integers(n))
        for step in range(steps):
            ranked[step] = current
            chosen[current] = True
            distances = squared_norms - 2.0 * (points @ points[current]) + squared_norms[current]
            np.minimum(nearest, distances, out=nearest)
            nearest[current] = -1.0  # chosen: never the farthest again (real distances are >= 0 up to rounding)
            if step + 1 < steps:
                current = int(np.argmax(nearest))
        if steps < n:
            rest = np.flatnonzero(~chosen)
            ranked[steps:] = rest[np.argsort(-nearest[rest], kind="stable")]
        self.info.update(dims=int(points.shape[1]), explained_variance=round(explained, 4), greedy_steps=steps,
                         seconds=round(time.perf_counter() - start, 3))
        return ranked

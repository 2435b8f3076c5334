"""``similarity``: pool examples by cosine similarity to the centroid of the target set's embeddings, highest first."""

from __future__ import annotations

import numpy as np

from autopeft.priors.selection.base import SelectionInputs, SelectionStrategy, descending, normalized, register


@register
class SimilarityStrategy(SelectionStrategy):
    name = "similarity"
    needs_target = True
    needs_embeddings = True

    def _order(self, inputs: SelectionInputs, seed: int) -> np.ndarray:
        pool = normalized(inputs.pool_embeddings)
        target = normalized(inputs.target_embeddings)
        if pool.shape[1] != target.shape[1]:
            raise ValueError(f"pool and target embeddings differ in width ({pool.shape[1]} vs {target.shape[1]})")
        centroid = target.mean(axis=0)
        centroid /= max(float(np.linalg.norm(centroid)), 1e-12)
        scores = pool @ centroid
        self.info.update(cosine_max=float(scores.max()), cosine_min=float(scores.min()),
                         cosine_mean=float(scores.mean()))
        return descending(scores, seed)

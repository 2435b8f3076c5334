"""Non-dominated sorting and hypervolume in a minimisation space (see :meth:`Objective.to_loss`).

Hypervolume comes from Optuna (``optuna._hypervolume``, exact WFG); ranks are a plain O(n^2)
sort, plenty for the few hundred trials of a search.
"""

from __future__ import annotations

import numpy as np
from optuna._hypervolume import compute_hypervolume


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all(a <= b) and np.any(a < b))


def nondominated_ranks(losses: np.ndarray) -> np.ndarray:
    """Rank 0 = the Pareto front, rank 1 = the front once rank 0 is removed, ..."""
    losses = np.asarray(losses, dtype=float)
    n = len(losses)
    ranks = np.full(n, -1)
    remaining = set(range(n))
    rank = 0
    while remaining:
        front = [i for i in remaining if not any(dominates(losses[j], losses[i]) for j in remaining if j != i)]
        ranks[front] = rank
        remaining.difference_update(front)
        rank += 1
    return ranks


def pareto_mask(losses: np.ndarray) -> np.ndarray:
    return nondominated_ranks(losses) == 0 if len(losses) else np.zeros(0, dtype=bool)


def reference_point(losses: np.ndarray, margin: float = 0.1) -> np.ndarray:
    """Slightly worse than the worst observed value of every objective."""
    losses = np.asarray(losses, dtype=float)
    worst, best = losses.max(axis=0), losses.min(axis=0)
    span = np.where(worst > best, worst - best, np.maximum(np.abs(worst), 1.0))
    return worst + margin * span


def hypervolume(losses: np.ndarray, reference: np.ndarray) -> float:
    losses = np.asarray(losses, dtype=float)
    inside = losses[np.all(losses < reference, axis=1)] if len(losses) else losses
    if len(inside) == 0:
        return 0.0
    return float(compute_hypervolume(inside, np.asarray(reference, dtype=float)))


def hypervolume_contributions(losses: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Hypervolume lost when each point is removed (0 for dominated points)."""
    losses = np.asarray(losses, dtype=float)
    total = hypervolume(losses, reference)
    return np.array([total - hypervolume(np.delete(losses, i, axis=0), reference) for i in range(len(losses))])


def promotion_order(losses: np.ndarray) -> np.ndarray:
    """Indices best first: by non-dominated rank, ties broken by larger hypervolume contribution (MO-ASHA)."""
    losses = np.asarray(losses, dtype=float)
    if len(losses) == 0:
        return np.zeros(0, dtype=int)
    ranks = nondominated_ranks(losses)
    reference = reference_point(losses)
    contribution = np.zeros(len(losses))
    for rank in np.unique(ranks):
        members = np.flatnonzero(ranks == rank)
        contribution[members] = hypervolume_contributions(losses[members], reference)
    return np.lexsort((-contribution, ranks))

"""``ot``: GOT-D (Kang et al., ICLR 2024, "Get more for less: Principled Data Selection for Warming Up
Fine-Tuning in LLMs"): pick the pool examples that move the model's data distribution toward the target most.

GOT-D's argument: after pre-training on P and a short warm-up on a selection S, the model has effectively seen
a mixture ``(1 − λ) P + λ S`` with small λ. To first order in λ, the best S to bring that mixture closest to
the target T (in optimal-transport distance) puts its mass where the gradient of ``OT(P, T)`` with respect to
P's probability masses is most negative: on examples from the regions that T has and P lacks. The pool
stands in for P (the pre-training data is not available; the paper does the same), so:

1. embed pool and target (mean-pooled, L2-normalised), cost = cosine distance ``1 − ⟨x, y⟩``, scaled by
   its mean so that :data:`REG` is relative to the typical cost;
2. solve entropic OT between uniform masses on the pool and on the target with POT's Sinkhorn
   (``ot.sinkhorn``, standard domain on a float32/float64 cost matrix; the log-domain solver
   ``sinkhorn_log`` if the scalings under/overflow), torch backend, so it uses every CPU core;
3. the pool-side dual potential ``f = reg · log u``; its calibrated gradient (LAVA, Just et al. ICLR 2023)
   ``f_i − mean_{j≠i} f_j`` is the gradient of the OT distance with respect to example i's mass under the
   constraint that the masses sum to one;
4. rank by calibrated gradient, most negative first (equal values in a seeded random order).

One solve ranks the whole pool, so every budget afterwards is free. The cost matrix is pool × target floats:
1k × 100k is 400 MB in float32; a target larger than :data:`MAX_COST_ENTRIES` allows is subsampled (seeded,
``info["target_used"]``). When the target is the pool itself, OT(P, T) = 0 and its gradient is flat: the
ranking is then just the seeded tie order, i.e. random (``info["gradient_std"]`` shows it).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from autopeft.priors.selection.base import SelectionInputs, SelectionStrategy, descending, normalized, register

REG = 0.1  # entropic regularisation, relative to the mean cosine distance
MAX_ITER = 2000
TOL = 1e-4  # stop when ‖target marginal − b‖₂ ≤ TOL · ‖b‖₂
MAX_COST_ENTRIES = 250_000_000  # 1 GB in float32; beyond it the target is subsampled
FLOAT64_ENTRIES = 10_000_000  # small problems are solved in float64
CHUNK_ROWS = 8192


def cosine_cost(pool: torch.Tensor, target: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``1 − pool @ targetᵀ`` (rows unit-norm), clamped at 0, filled chunk by chunk into one [n, m] matrix."""
    cost = torch.empty(len(pool), len(target), dtype=dtype)
    target = target.to(dtype)
    for start in range(0, len(pool), CHUNK_ROWS):
        block = cost[start : start + CHUNK_ROWS]
        torch.matmul(pool[start : start + CHUNK_ROWS].to(dtype), target.T, out=block)
        block.neg_().add_(1.0).clamp_(min=0.0)
    return cost


def calibrated_gradient(potential: np.ndarray) -> np.ndarray:
    """``f_i − mean_{j≠i} f_j`` for every i (0 for a single example)."""
    n = len(potential)
    if n < 2:
        return np.zeros(n)
    total = potential.sum()
    return potential - (total - potential) / (n - 1)


@register
class OTStrategy(SelectionStrategy):
    name = "ot"
    needs_target = True
    needs_embeddings = True

    def __init__(self, reg: float = REG, max_iter: int = MAX_ITER, tol: float = TOL,
                 max_cost_entries: int = MAX_COST_ENTRIES) -> None:
        super().__init__()
        self.reg, self.max_iter, self.tol, self.max_cost_entries = reg, max_iter, tol, max_cost_entries

    def settings(self) -> dict:
        return {"reg": self.reg, "max_iter": self.max_iter, "tol": self.tol, "max_cost_entries": self.max_cost_entries,
                "cost": "cosine"}

    def _order(self, inputs: SelectionInputs, seed: int) -> np.ndarray:
        import ot

        pool = torch.from_numpy(normalized(inputs.pool_embeddings))
        target = torch.from_numpy(normalized(inputs.target_embeddings))
        start = time.perf_counter()  # the embeddings are the caller's cost, not the solver's
        if pool.shape[1] != target.shape[1]:
            raise ValueError(f"pool and target embeddings differ in width ({pool.shape[1]} vs {target.shape[1]})")
        n, m = len(pool), len(target)
        if n * m > self.max_cost_entries:
            keep = max(1, self.max_cost_entries // n)
            rows = np.sort(np.random.default_rng(seed).choice(m, size=keep, replace=False))
            target = target[torch.from_numpy(rows)]
        m_used = len(target)
        dtype = torch.float64 if n * m_used <= FLOAT64_ENTRIES else torch.float32
        cost = cosine_cost(pool, target, dtype)
        scale = float(cost.mean())
        if scale > 0:
            cost.div_(scale)
        cost_seconds = time.perf_counter() - start

        a = torch.full((n,), 1.0 / n, dtype=dtype)
        b = torch.full((m_used,), 1.0 / m_used, dtype=dtype)
        stop = self.tol * float(torch.linalg.vector_norm(b))
        solve_start = time.perf_counter()
        method = "sinkhorn"
        _, log = ot.sinkhorn(a, b, cost, self.reg, method=method, numItermax=self.max_iter, stopThr=stop,
                             log=True, warn=False)
        potential = self.reg * torch.log(log["u"])
        if not torch.isfinite(potential).all():  # the scalings under- or overflowed: solve in the log domain
            method = "sinkhorn_log"
            _, log = ot.sinkhorn(a, b, cost, self.reg, method=method, numItermax=self.max_iter, stopThr=stop,
                                 log=True, warn=False)
            potential = self.reg * log["log_u"]
        solve_seconds = time.perf_counter() - solve_start
        del cost
        errors = [float(e) for e in log.get("err", [])]
        potential = potential.double().numpy() * (scale if scale > 0 else 1.0)  # back in cosine-distance units
        gradient = calibrated_gradient(potential)
        self.info.update(
            method=method, reg=self.reg, reg_absolute=self.reg * scale, cost_scale=scale, dtype=str(dtype),
            pool_points=n, target_points=m, target_used=m_used, iterations=int(log.get("niter", self.max_iter)),
            marginal_error=errors[-1] if errors else None, stop_threshold=stop,
            converged=bool(errors and errors[-1] <= stop), cost_seconds=round(cost_seconds, 3),
            solve_seconds=round(solve_seconds, 3), gradient_min=float(gradient.min()),
            gradient_max=float(gradient.max()), gradient_std=float(gradient.std()),
        )
        return descending(-gradient, seed)

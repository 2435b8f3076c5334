"""BoTorch GP + expected hypervolume improvement over a pool of whole candidate points.

Only the objectives that need training (the task metric, and measured costs if asked for) get a
GP; the adapter size is known exactly, so it is never modelled: for the usual two objectives
(metric, params) the expected hypervolume improvement has a closed form with a Gaussian metric
and a known size (:func:`expected_improvement_2d`); with more objectives BoTorch's qLogEHVI runs
with the size as a deterministic model. qLogNEHVI was measured too slow for this loop: its box
decompositions per posterior sample grow with the observed front (20-40 s per suggestion at
50-100 trials on 2 busy CPU cores, against milliseconds for the closed form).

Candidates are drawn from the full conditional space (random points plus one-parameter mutations
of the current front), with points that cannot train (every module off, over ``--max-params``, a
module the search cannot build: :meth:`SamplerContext.infeasible`) and points already tried removed
before the acquisition sees them, so this sampler never proposes a point the search would reject.
Without that filter the acquisition loves the empty point (0 parameters is the best possible size,
and an all-off point with a new learning rate is "new"): on the unified space 37 of 43 proposals
were empty. Trials told infeasible are no data for the GP, only points never to propose again. The
chosen point is handed to Optuna through ``sample_independent``.
"""
from __future__ import annotations

import json
import math
import warnings
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from autopeft._imports import optional_dependency
from autopeft.search import records as R
from autopeft.search.objectives import PARAMS
from autopeft.search.pareto import reference_point
from autopeft.search.samplers._whole_point import WholePointSampler

DESCRIPTION = ("BoTorch GP on the measured objectives + exact parameter count, "
               "expected hypervolume improvement (default)")
N_RANDOM_CANDIDATES = 384
N_MUTATIONS_PER_FRONT_POINT = 16
N_STARTUP = 3  # distinct finished points before the GP takes over
REFIT_GROWTH = 1.15  # re-optimise GP hyperparameters once the data grew by 15% (every trial early on)


def create(context) -> optuna.samplers.BaseSampler:
    with optional_dependency("botorch", "sampler 'botorch'"):
        import botorch  # noqa: F401
    return KnownCostBoTorchSampler(context)




class PointEncoder:
    """Optuna params of a conditional space -> a vector in [0, 1]^d (inactive dimensions = 0)."""

    def __init__(self, space, log_params_scale: float):
        self.space = space
        self.log_params_scale = log_params_scale
        self.width = sum(len(d.distribution.choices) if isinstance(d.distribution, CategoricalDistribution) else 1
                         for d in space.dimensions) + 1

    def encode(self, params: dict[str, Any], adapter_params: int) -> np.ndarray:
        row: list[float] = []
        for dim in self.space.dimensions:
            dist, value = dim.distribution, params.get(dim.name)
            if isinstance(dist, CategoricalDistribution):
                row += [float(value is not None and c == value) for c in dist.choices]
            elif value is None:
                row.append(0.0)
            else:
                row.append(_unit(dist, value))
        row.append(self.log_params(adapter_params))
        return np.asarray(row)

    def log_params(self, adapter_params: int) -> float:
        return math.log10(adapter_params + 1) / self.log_params_scale


def _draw(dist: BaseDistribution, rng: np.random.Generator):
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[int(rng.integers(len(dist.choices)))]
    if isinstance(dist, IntDistribution):
        return int(rng.integers(dist.low, dist.high + 1))
    if dist.log:
        return float(math.exp(rng.uniform(math.log(dist.low), math.log(dist.high))))
    return float(rng.uniform(dist.low, dist.high))


def _unit(dist: BaseDistribution, value) -> float:
    low, high = float(dist.low), float(dist.high)
    if high == low:
        return 0.0
    if isinstance(dist, FloatDistribution) and dist.log:
        return (math.log(value) - math.log(low)) / (math.log(high) - math.log(low))
    return (float(value) - low) / (high - low)


class KnownCostBoTorchSampler(WholePointSampler):
    def __init__(self, context):
        super().__init__(context.seed)
        self.context = context
        self.space = context.space
        scale = math.log10(max(context.max_params or context.model_params, 10) + 1)
        self.encoder = PointEncoder(context.space, scale)
        self._rng = np.random.default_rng(context.seed)
        self._gp_state: dict[int, tuple[dict, int]] = {}   # objective index -> (fitted hyperparameters, on n points)

    # ------------------------------------------------------------ Optuna API
    # -------------------------------------------------------------- proposal
    def _key(self, params: dict[str, Any]) -> str:
        """Identity of the decoded point: parameter sets that build the same adapter are one point."""
        return json.dumps(self.space.decode(params).to_dict(), sort_keys=True, default=str)

    def _plan(self, study: optuna.Study) -> dict[str, Any]:
        trials = study.get_trials(deepcopy=False)
        tried = {self._key(t.params) for t in trials if t.params}
        finished = self._distinct_finished(trials)
        candidates = self._candidates(finished, tried)
        if not candidates:
            return self.space.sample(self._rng)  # nothing new fits: let the search reject or dedupe it
        if len(finished) < N_STARTUP:
            return candidates[int(self._rng.integers(len(candidates)))]
        try:
            scores = self._acquisition(finished, candidates)
        except Exception as exc:  # a singular GP must not end the search: fall back to a random candidate
            warnings.warn(f"BoTorch acquisition failed ({type(exc).__name__}: {exc}); using a random candidate",
                          stacklevel=2)
            return candidates[int(self._rng.integers(len(candidates)))]
        return candidates[int(np.argmax(scores))]

    def _distinct_finished(self, trials: list[FrozenTrial]) -> list[FrozenTrial]:
        seen, finished = set(), []
        for trial in trials:
            if trial.state != TrialState.COMPLETE or trial.values is None or trial.user_attrs.get(R.INFEASIBLE):
                continue
            key = self._key(trial.params)
            if key not in seen and all(math.isfinite(v) for v in trial.values):
                seen.add(key)
                finished.append(trial)
        return finished

    def _candidates(self, finished: list[FrozenTrial], tried: set[str]) -> list[dict[str, Any]]:
        pool = [self.space.sample(self._rng) for _ in range(N_RANDOM_CANDIDATES)]
        for trial in self._front(finished):
            for _ in range(N_MUTATIONS_PER_FRONT_POINT):
                pool.append(self._mutate(trial.params))
        chosen, keys = [], set(tried)
        for params in pool:
            params = self.space.active_params(params)
            key = self._key(params)
            if key in keys:
                continue
            keys.add(key)
            if self.context.infeasible(params) is not None:
                continue
            chosen.append(params)
        return chosen

    def _front(self, finished: list[FrozenTrial]) -> list[FrozenTrial]:
        from autopeft.search.pareto import pareto_mask

        if not finished:
            return []
        losses = np.array([[o.to_loss(v) for o, v in zip(self.context.objectives, t.values)] for t in finished])
        return [t for t, keep in zip(finished, pareto_mask(losses)) if keep]

    def _mutate(self, params: dict[str, Any]) -> dict[str, Any]:
        """Re-draw one dimension; children it switches on are drawn fresh, the rest is kept."""
        active = [d.name for d in self.space.dimensions if d.name in params]
        changed = active[int(self._rng.integers(len(active)))] if active else None
        mutated: dict[str, Any] = {}
        for dim in self.space.dimensions:
            if not dim.active(mutated):
                continue
            keep = dim.name in params and dim.name != changed
            mutated[dim.name] = params[dim.name] if keep else _draw(dim.distribution, self._rng)
        return mutated

    def _acquisition(self, finished: list[FrozenTrial], candidates: list[dict[str, Any]]) -> np.ndarray:
        """Expected hypervolume improvement of each candidate, in the objectives' loss space."""
        objectives = self.context.objectives
        count = self.context.count_params
        x = np.stack([self.encoder.encode(t.params, count(t.params)) for t in finished])
        pool = np.stack([self.encoder.encode(c, count(c)) for c in candidates])
        losses = np.array([[o.to_loss(v) for o, v in zip(objectives, t.values)] for t in finished])
        measured = [i for i, o in enumerate(objectives) if o.name != PARAMS]
        if len(objectives) == 2 and len(measured) == 1:
            # the common case (metric, params): exact EHVI with a Gaussian metric and a known size
            mean, std = self._fit_predict(x, losses[:, measured[0]], pool, slot=measured[0])
            known = np.array([objectives[1 - measured[0]].to_loss(count(c)) for c in candidates])
            if measured[0] == 1:
                losses = losses[:, ::-1]
            return expected_improvement_2d(losses, reference_point(losses), mean, std, known)
        return self._botorch_ehvi(x, losses, pool, measured)

    def _fit_predict(self, x: np.ndarray, y: np.ndarray, pool: np.ndarray, slot: int) -> tuple[np.ndarray, np.ndarray]:
        """A BoTorch GP on one measured objective; warm-started from the previous fit to keep suggestions cheap."""
        import torch

        gp = self._fit_gp(torch.tensor(x), torch.tensor(y).unsqueeze(-1), slot)
        with torch.no_grad():
            posterior = gp.posterior(torch.tensor(pool))
        return posterior.mean.squeeze(-1).numpy(), posterior.variance.clamp_min(1e-12).sqrt().squeeze(-1).numpy()

    def _fit_gp(self, x, y, slot: int):
        from botorch.fit import fit_gpytorch_mll
        from botorch.models import SingleTaskGP
        from botorch.models.transforms import Standardize
        from gpytorch.mlls import ExactMarginalLogLikelihood

        with warnings.catch_warnings():  # BoTorch warns about flat outcomes and slow fits; neither is actionable here
            warnings.simplefilter("ignore")
            gp = SingleTaskGP(x.double(), y.double(), outcome_transform=Standardize(m=1))
            previous, fitted_on = self._gp_state.get(slot, (None, 0))
            if previous is not None:
                gp.load_state_dict({k: v for k, v in previous.items() if "outcome_transform" not in k}, strict=False)
                if len(x) < fitted_on * REFIT_GROWTH:
                    return gp  # hyperparameters barely change between refits; conditioning on new data is enough
            fit_gpytorch_mll(ExactMarginalLogLikelihood(gp.likelihood, gp),
                             optimizer_kwargs={"options": {"maxiter": 100}})
        self._gp_state[slot] = ({k: v.clone() for k, v in gp.state_dict().items()}, len(x))
        return gp

    def _botorch_ehvi(self, x: np.ndarray, losses: np.ndarray, pool: np.ndarray, measured: list[int]) -> np.ndarray:
        """More than one measured objective: BoTorch's qLogEHVI over a GP per measured objective."""
        import torch
        from botorch.acquisition.multi_objective.logei import qLogExpectedHypervolumeImprovement
        from botorch.models import ModelList
        from botorch.models.deterministic import GenericDeterministicModel
        from botorch.utils.multi_objective.box_decompositions.non_dominated import FastNondominatedPartitioning

        objectives = self.context.objectives
        tx = torch.tensor(x, dtype=torch.double)
        models = []
        for index, objective in enumerate(objectives):
            if objective.name == PARAMS:  # exact: the last input feature is the normalised log size
                scale = self.encoder.log_params_scale
                models.append(GenericDeterministicModel(lambda z, s=scale: -z[..., -1:] * s, num_outputs=1))
            else:  # BoTorch maximises: model -loss
                models.append(self._fit_gp(tx, -torch.tensor(losses[:, index:index + 1], dtype=torch.double), index))
        maximised = -torch.tensor(losses, dtype=torch.double)
        reference = -torch.tensor(reference_point(losses), dtype=torch.double)
        acquisition = qLogExpectedHypervolumeImprovement(
            ModelList(*models), ref_point=reference,
            partitioning=FastNondominatedPartitioning(ref_point=reference, Y=maximised),
        )
        candidates = torch.tensor(pool, dtype=torch.double)
        with torch.no_grad():
            return torch.cat([acquisition(chunk.unsqueeze(1)) for chunk in candidates.split(256)]).numpy()


def expected_improvement_2d(losses: np.ndarray, reference: np.ndarray, mean: np.ndarray, std: np.ndarray,
                            known: np.ndarray) -> np.ndarray:
    """Exact expected hypervolume improvement in 2-D (minimisation) when the second coordinate is known.

    For a candidate at (A, b) with A ~ N(mean, std^2), the improvement is the integral over x from A
    to the reference of g(x) = max(0, min(ref_b, m(x)) - b), where m(x) is the smallest second
    coordinate of the front among points with first coordinate <= x. g is a step function, so
    E[HVI] = sum over its steps of g * std * [psi(z_hi) - psi(z_lo)], psi(z) = z Phi(z) + phi(z).
    Candidates far from the front can underflow to 0; ties are broken by the optimistic bound.
    """
    from scipy.stats import norm

    from autopeft.search.pareto import pareto_mask

    front = losses[pareto_mask(losses)]
    front = front[np.all(front < reference, axis=1)]
    front = front[np.argsort(front[:, 0])]
    # steps: (-inf, a1) -> ref_b; [a_k, a_k+1) -> b_k; capped at ref_a
    edges = np.concatenate([[-np.inf], front[:, 0], [reference[0]]])
    heights = np.concatenate([[reference[1]], np.minimum(front[:, 1], reference[1])])

    def psi(z):
        finite = np.where(np.isneginf(z), 0.0, z)
        return np.where(np.isneginf(z), 0.0, finite * norm.cdf(finite) + norm.pdf(finite))

    std = np.maximum(std, 1e-9)
    total = np.zeros(len(mean))
    for lo, hi, height in zip(edges[:-1], edges[1:], heights):
        if hi <= lo:
            continue
        gain = np.maximum(height - known, 0.0)
        z_hi = (hi - mean) / std
        z_lo = (lo - mean) / std if np.isfinite(lo) else np.full(len(mean), -np.inf)
        total += gain * std * (psi(z_hi) - psi(z_lo))
    if total.max() <= 0:
        return -(mean - 2 * std) - 1e-6 * known  # nobody improves in expectation: most optimistic, then smallest
    return total

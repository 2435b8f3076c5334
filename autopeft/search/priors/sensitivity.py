"""``--prior sensitivity``: SPT's gradient² map. Sparse modules take its most sensitive entries, placement may be
restricted to the most sensitive layers (``--sensitive-layers``), and the space points nearest to SPT's
allocations at ``--prior-budgets`` start the search."""

from __future__ import annotations

from typing import Any

from autopeft.errors import AutopeftError
from autopeft.search.priors.base import SearchPrior, StartingPoint, register

SENSITIVITY_BATCH_SIZE = 32  # SPT's


@register
class SensitivityPrior(SearchPrior):
    name = "sensitivity"
    description = "SPT: sparse masks, starting points"

    def prepare(self, base, task) -> str:
        from autopeft.priors.sensitivity import load_or_compute_sensitivity

        self.sensitivity_map, cached = load_or_compute_sensitivity(
            base, task, batches=self.settings.priors.prior_batches, batch_size=SENSITIVITY_BATCH_SIZE,
            max_length=self.settings.fidelity.max_length, seed=self.settings.seed)
        self.model_config = base.config
        seconds = self.sensitivity_map.meta["seconds"]
        return "sensitivity map " + ("read from the cache" if cached else f"computed in {seconds:.1f} s")

    def build_context(self) -> dict[str, Any]:
        return {"sensitivity": self.sensitivity_map}

    def restrict_space(self, space, note):
        from autopeft.priors.spt import most_sensitive_layers
        from autopeft.space import SearchSpace

        if self.settings.priors.sensitive_layers is None:
            return space
        layers = most_sensitive_layers(self.sensitivity_map.scores, self.model_config,
                                       self.settings.priors.sensitive_layers)
        placement = space.spec.placement.model_copy(update={"layers": layers})
        space = SearchSpace(space.spec.model_copy(update={"placement": placement}), self.model_config, space.source)
        note(f"placement restricted to the {len(layers)} most sensitive layers: {layers}")
        return space

    def starting_points(self, space, max_params, note) -> list[StartingPoint]:
        import numpy as np

        from autopeft.priors.spt import nearest_space_params, spt_allocation
        from autopeft.space import count_model_params, parse_max_params

        model_params = count_model_params(self.model_config)
        points = []
        for text in self.settings.priors.prior_budgets:
            budget = parse_max_params(text, model_params)
            if max_params is not None and budget > max_params:
                note(f"SPT point at {text} skipped: over --max-params")
                continue
            try:
                allocation = spt_allocation(self.sensitivity_map.scores, self.model_config, budget)
            except AutopeftError as exc:
                note(f"SPT point at {text} skipped: {exc}")
                continue
            params = nearest_space_params(space, allocation, np.random.default_rng(self.settings.seed),
                                          max_params=max_params)
            if params is None:
                note("the space has neither LoRA nor sparse tuning: no SPT starting points")
                break
            points.append((params, f"prior:spt-{text}"))
        return points

"""``--prior heads``: LoFiT's step-1 head ranking (defaults of ``autopeft select-heads``) for LoFiT modules."""

from __future__ import annotations

from typing import Any

from autopeft.search.priors.base import SearchPrior, register


@register
class HeadRankingPrior(SearchPrior):
    name = "heads"
    description = "LoFiT head ranking"

    def prepare(self, base, task) -> str:
        from autopeft.priors.heads import HeadSelectionDefaults, load_or_select_heads

        defaults = HeadSelectionDefaults.for_kind(base.kind)
        ranking, meta, cached = load_or_select_heads(base, task, max_length=self.settings.fidelity.max_length,
                                                     seed=self.settings.seed, probe_epochs=defaults.probe_epochs)
        self.ranking = ranking.within_layers() if defaults.within_layers else ranking
        how = "within layers" if defaults.within_layers else "globally"
        return f"LoFiT head ranking ({how}) " + ("read from the cache" if cached
                                                 else f"learned in {meta['seconds']:.1f} s")

    def build_context(self) -> dict[str, Any]:
        return {"head_ranking": self.ranking}

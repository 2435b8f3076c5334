"""LoFiT (Yin et al., 2024): learned offsets on the outputs of the K attention heads that matter most.

Which heads matter is a prior (``autopeft select-heads`` / ``--prior heads``): the K best-ranked heads among the
layers a point places LoFiT on get one offset vector each (:mod:`autopeft.tuners.lofit`).
"""

from __future__ import annotations

from autopeft.errors import SpaceError
from autopeft.modules.base import LearningRate, ModuleType, register
from autopeft.tuners.lofit import LofitConfig
from autopeft.tuners.lofit.ranking import HeadRanking


@register
class Lofit(ModuleType):
    name = "lofit"
    size = "heads (K)"
    # offsets start at zero and are one vector per head: they need far larger steps than step 1's scales
    learning_rate = LearningRate(5e-2, 1e-2, 2e-1, source="measured (scripts/bench_lofit.py): SmolLM2-135M on SST-2 "
                                 "as verbalised classification, K = 5 %, 2000 examples: 0.790 / 0.793 / 0.780 "
                                 "accuracy at 5e-2 / 1e-1 / 2e-1, the majority class at 5e-3 (500 examples); MiniLM "
                                 "on SST-2: 0.74 at 5e-2, 0.64 at 5e-3")
    parameter_names = ("lofit_scale", "lofit_offset")

    def max_size(self, dims, num_layers):
        return dims.num_heads * num_layers

    def count_params(self, module, arch, dims, shapes):
        # K heads chosen over the placed layers; one offset vector per head
        return int(next(iter(module.sizes.values()))) * dims.head_dim

    def build(self, module, target, context):
        if context.head_ranking is None:
            raise SpaceError("LoFiT needs a head ranking: search with `--prior heads` (or pass one to the builder)")
        ranking = context.head_ranking
        on_layers = set(module.layers)
        scores = [row if layer in on_layers else [float("-inf")] * len(row) for layer, row in enumerate(ranking.scores)]
        k = int(next(iter(module.sizes.values())))
        heads = HeadRanking(ranking.model_id, scores).top_k(k)
        arch = target.arch
        output = arch.matrices["attention_output"][0]
        return [LofitConfig(target_modules=arch.module_names(heads, output), heads=heads, train_scale=False,
                            train_offset=True, task_type=target.task_type)]

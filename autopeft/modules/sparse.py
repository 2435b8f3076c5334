"""Sparse tuning (SPT's unstructured part, He et al., 2023): train a fixed subset of the entries of chosen matrices.

Which entries: a point's own mask file (an SPT allocation), else the most sensitive entries at the point's density
when a sensitivity map is known (``--prior sensitivity``), else a seeded random mask (:mod:`autopeft.tuners.sparse`).
"""

from __future__ import annotations

from autopeft.errors import SpaceError
from autopeft.modules.base import LearningRate, ModuleType, register
from autopeft.tuners.sparse import SparseConfig, SparseMask
from autopeft.tuners.sparse.mask import sparse_entries


def _scored_names(scores: dict, targets: list[str]) -> list[str]:
    """Full module names in a sensitivity map for layer-relative names (``encoder.layer.0...`` ->
    ``bert.encoder.layer.0...``)."""
    names = []
    for target in targets:
        found = [name for name in scores if name == target or name.endswith("." + target)]
        if len(found) != 1:
            raise SpaceError(f"the sensitivity map has {len(found)} matrices named like '{target}' (expected 1)")
        names.append(found[0])
    return names


@register
class Sparse(ModuleType):
    name = "sparse"
    size = "density"
    integer_sizes = False
    targets = ("query", "key", "value", "attention_output", "ffn_in", "ffn_out")
    learning_rate = LearningRate(3e-4, 3e-5, 3e-3, source=(
        "prior: an order above full fine-tuning's 2e-5 to 5e-5 (the deltas are entries of the same weights). The "
        "sweep (benchmarks/medium/lr.md) does not confirm it: at 50 steps a 0.5 % density learned almost nothing at "
        "any rate (best: 3e-4 on SST-2, 0.63 vs 0.61 majority; 2.7e-3 on TREC, 0.27 vs 0.24); it needs longer "
        "training or the sensitivity prior"))
    parameter_names = ("sparse_delta",)

    def max_size(self, dims, num_layers):
        return 1.0

    def count_params(self, module, arch, dims, shapes):
        if "mask" in module.options:   # a mask file (SPT): exactly its entries
            return int(module.options["entries"])
        return sum(sparse_entries(density, fan_out, fan_in) for density in module.sizes.values()
                   for role in module.targets for fan_out, fan_in in shapes[role])

    def build(self, module, target, context):
        if "mask" in module.options:
            mask = SparseMask.load(module.options["mask"])
            return [SparseConfig(target_modules=sorted(mask.indices), masks=mask, task_type=target.task_type)]
        arch = target.arch
        names = arch.role_modules(module.targets)
        groups: dict[float, list[int]] = {}
        for layer, density in module.sizes.items():
            groups.setdefault(float(density), []).append(layer)
        configs = []
        for density, layers in sorted(groups.items()):
            targets = [arch.module_name(layer, name) for layer in layers for name in names]
            if context.sensitivity is not None:
                scored = _scored_names(context.sensitivity.scores, targets)
                mask = context.sensitivity.top_fraction_mask(scored, density)
                configs.append(SparseConfig(target_modules=scored, masks=mask, density=density,
                                            task_type=target.task_type))
            else:
                configs.append(SparseConfig(target_modules=targets, density=density, mask_seed=context.sparse_seed,
                                            task_type=target.task_type))
        return configs

"""LoRA (Hu et al., 2021): a rank-r update B·A beside each chosen matrix, as PEFT's own ``LoraConfig``.

A LoRA-only point therefore exports as a plain PEFT adapter that loads without autopeft.
"""

from __future__ import annotations

import re

from peft import LoraConfig

from autopeft.modules.base import LearningRate, ModuleType, most_common, register


def matrices_per_layer(module) -> dict[int, list[str]]:
    """The roles each layer adapts: ``targets`` everywhere, unless the point names them per layer
    (``options['matrices']``, e.g. an SPT allocation that puts LoRA on different matrices per layer)."""
    explicit = module.options.get("matrices")
    if explicit is None:
        return {layer: list(module.targets) for layer in module.sizes}
    return {int(layer): list(roles) for layer, roles in explicit.items()}


@register
class Lora(ModuleType):
    name = "lora"
    size = "rank"
    targets = ("query", "value")
    options = {"alpha": 2.0}   # lora_alpha as a multiple of the rank
    reference_size = 8         # the default rate is rank 8's (the LoRA baseline); rank r > 8 trains at it * sqrt(8 / r)
    learning_rate = LearningRate(1.4e-3, 2e-4, 1e-2, source=(
        "the rate at rank <= 8; rank r > 8 takes it * sqrt(8 / r) (ModuleType.default_rate). Over 376 steps of "
        "batch 16 (bench_fidelity medium, SST-2, 20 points, one rate for every rank) every LoRA point with "
        "rate * sqrt(rank) >= 9.6e-3 learned, then collapsed to the majority class, and every one <= 7.9e-3 trained; "
        "4e-3 / sqrt(rank) keeps the space's largest lr_scale (2x) under that line. Short trainings like more: the "
        "50-step sweep (benchmarks/medium/lr.md, rank 8) was best at 6e-3 to 1e-2 and at the majority class <= 7e-4. "
        "Hu et al. 2021 used 4e-4 to 5e-4 on RoBERTa-base GLUE over 30-80 epochs, a budget 100x ours"))
    parameter_names = ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector")

    def max_size(self, dims, num_layers):
        return min(dims.hidden, dims.num_kv_heads * dims.head_dim)

    def count_params(self, module, arch, dims, shapes):
        roles = matrices_per_layer(module)
        return sum(int(rank) * (fan_in + fan_out) for layer, rank in module.sizes.items()
                   for role in roles[layer] for fan_out, fan_in in shapes[role])

    def nested_sites(self, module, target):
        arch = target.arch
        return {arch.module_name(layer, name): int(module.sizes[layer])
                for layer, roles in matrices_per_layer(module).items() for name in arch.role_modules(roles)}

    def build(self, module, target, context):
        if "matrices" in module.options:
            return [self._on_named_matrices(module, target)]
        arch = target.arch
        names = arch.role_modules(module.targets)
        ranks = {layer: int(rank) for layer, rank in module.sizes.items()}
        default_rank = most_common(ranks)
        alpha = module.options.get("alpha", self.options["alpha"])
        rank_pattern, alpha_pattern = {}, {}
        for rank in sorted(set(ranks.values()) - {default_rank}):
            key = arch.layer_regex([layer for layer, r in ranks.items() if r == rank], names).removeprefix(r"(.*\.)?")
            rank_pattern[key] = rank
            alpha_pattern[key] = alpha * rank
        # PEFT matches list targets by suffix: "output.dense" would also catch BERT's "attention.output.dense"
        others = [n for n in arch.role_modules(arch.matrices) if n not in names]
        excluded = [n for n in others if any(n.endswith("." + t) for t in names)]
        return [LoraConfig(
            r=default_rank,
            lora_alpha=alpha * default_rank,
            lora_dropout=0.0,
            target_modules=names,
            exclude_modules=excluded or None,
            layers_to_transform=sorted(ranks),
            layers_pattern=arch.layer_prefix.rsplit(".", 1)[-1],
            rank_pattern=rank_pattern,
            alpha_pattern=alpha_pattern,
            task_type=target.task_type,
        )]

    def _on_named_matrices(self, module, target) -> LoraConfig:
        """LoRA on an explicit (layer, role) set: full module names, which PEFT matches exactly."""
        arch = target.arch
        ranks = {int(layer): int(rank) for layer, rank in module.sizes.items()}
        alpha = module.options.get("alpha", self.options["alpha"])
        names = {layer: [arch.module_name(layer, n) for n in arch.role_modules(roles)]
                 for layer, roles in matrices_per_layer(module).items()}
        default_rank = most_common(ranks)
        pattern = {re.escape(name): ranks[layer] for layer, layer_names in names.items() for name in layer_names
                   if ranks[layer] != default_rank}
        return LoraConfig(
            r=default_rank, lora_alpha=alpha * default_rank, lora_dropout=0.0,
            target_modules=sorted(name for layer_names in names.values() for name in layer_names),
            rank_pattern=pattern, alpha_pattern={k: alpha * r for k, r in pattern.items()}, task_type=target.task_type,
        )

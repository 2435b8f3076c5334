"""PEFT configs for the module types PEFT itself implements (LoRA, IA3, LayerNorm tuning).

A point that uses only one of these exports as a plain PEFT config that loads without autopeft.
"""

from __future__ import annotations

import re

from peft import IA3Config, LNTuningConfig, LoraConfig

from autopeft.arch import Architecture
from autopeft.space.params import matrices_per_layer
from autopeft.space.point import ModuleChoice


def role_modules(arch: Architecture, roles) -> list[str]:
    """Module names (relative to a layer) of the given matrix roles, in table order."""
    return [name for role in roles for name in arch.matrices[role]]


def layer_regex(arch: Architecture, layers, relative_names) -> str:
    """A full-match regex over module names for ``relative_names`` inside ``layers``."""
    layer_part = "|".join(str(l) for l in sorted(layers))
    module_part = "|".join(re.escape(n) for n in relative_names)
    return rf"(.*\.)?{re.escape(arch.layer_prefix)}\.({layer_part})\.({module_part})"


def _lora_on_named_matrices(module: ModuleChoice, arch: Architecture, task_type: str | None) -> LoraConfig:
    """LoRA on an explicit (layer, role) set: full module names, which PEFT matches exactly."""
    ranks = {int(layer): int(r) for layer, r in module.sizes.items()}
    alpha = module.options.get("alpha", 2.0)
    targets = {layer: [arch.module_name(layer, n) for n in role_modules(arch, roles)]
               for layer, roles in matrices_per_layer(module).items()}
    default_rank = max(set(ranks.values()), key=list(ranks.values()).count)
    pattern = {re.escape(name): ranks[layer] for layer, names in targets.items() for name in names
               if ranks[layer] != default_rank}
    return LoraConfig(
        r=default_rank, lora_alpha=alpha * default_rank, lora_dropout=0.0,
        target_modules=sorted(name for names in targets.values() for name in names),
        rank_pattern=pattern, alpha_pattern={k: alpha * r for k, r in pattern.items()}, task_type=task_type,
    )


def lora_config(module: ModuleChoice, arch: Architecture, task_type: str | None) -> LoraConfig:
    """LoRA on the chosen matrices of the chosen layers, with a rank per layer via ``rank_pattern``."""
    if "matrices" in module.options:
        return _lora_on_named_matrices(module, arch, task_type)
    names = role_modules(arch, module.targets)
    ranks = {layer: int(r) for layer, r in module.sizes.items()}
    default_rank = max(set(ranks.values()), key=list(ranks.values()).count)  # the most common rank
    alpha = module.options.get("alpha", 2.0)
    rank_pattern, alpha_pattern = {}, {}
    for rank in sorted(set(ranks.values()) - {default_rank}):
        key = layer_regex(arch, [l for l, r in ranks.items() if r == rank], names).removeprefix(r"(.*\.)?")
        rank_pattern[key] = rank
        alpha_pattern[key] = alpha * rank
    # PEFT matches list targets by suffix: "output.dense" would also catch BERT's "attention.output.dense"
    others = [n for n in role_modules(arch, arch.matrices) if n not in names]
    excluded = [n for n in others if any(n.endswith("." + t) for t in names)]
    return LoraConfig(
        r=default_rank,
        lora_alpha=alpha * default_rank,
        lora_dropout=0.0,
        target_modules=names,
        exclude_modules=excluded or None,
        layers_to_transform=sorted(ranks),
        layers_pattern=arch.layer_prefix.rsplit(".", 1)[-1],
        rank_pattern=rank_pattern,
        alpha_pattern=alpha_pattern,
        task_type=task_type,
    )


def ia3_config(module: ModuleChoice, arch: Architecture, task_type: str | None) -> IA3Config:
    names = role_modules(arch, module.targets)
    feedforward = role_modules(arch, [t for t in module.targets if t == "ffn_out"])
    return IA3Config(
        target_modules=layer_regex(arch, module.layers, names),
        feedforward_modules=layer_regex(arch, module.layers, feedforward) if feedforward else [],
        task_type=task_type,
    )


def ln_tuning_config(module: ModuleChoice, arch: Architecture, task_type: str | None) -> LNTuningConfig:
    return LNTuningConfig(target_modules=layer_regex(arch, module.layers, arch.layer_norms), task_type=task_type)

"""A decoded point -> one PEFT config -> a PEFT model.

A point with a single PEFT-native module type (LoRA, IA3, LN tuning; prefix on a decoder over
every layer) becomes that plain PEFT config, loadable without autopeft. Anything else becomes
autopeft's own tuner, or a ``CompositeConfig`` of several components that trains, saves and
loads as one model.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from peft import PeftConfig, PrefixTuningConfig, get_peft_model

from autopeft.arch import Architecture, architecture_for
from autopeft.builders.peft_native import ia3_config, layer_regex, ln_tuning_config, lora_config, role_modules
from autopeft.errors import SpaceError
from autopeft.space.point import ModuleChoice, PeftPoint
from autopeft.tuners.bitfit import BitFitConfig
from autopeft.tuners.bottleneck import BottleneckConfig
from autopeft.tuners.composite import CompositeConfig
from autopeft.tuners.lofit import LofitConfig
from autopeft.tuners.lofit.ranking import HeadRanking
from autopeft.tuners.prefix import PrefixConfig
from autopeft.tuners.sparse import SparseConfig, SparseMask

TASK_TYPES = {"classification": "SEQ_CLS", "regression": "SEQ_CLS", "causal_lm": "CAUSAL_LM"}


@dataclass(frozen=True)
class BuildContext:
    """Priors some module types need; computed once per (model, task) and reused for every point."""

    head_ranking: HeadRanking | None = None   # LoFiT: which heads matter (``autopeft select-heads``)
    sensitivity: Any = None                   # SPT: an autopeft.priors.SensitivityMap; sparse masks take its top entries
    sparse_seed: int = 0                      # sparse tuning: seed of the random mask when there is no sensitivity


def _qualified(arch: Architecture, layers, relative: str) -> list[str]:
    return [arch.module_name(layer, relative) for layer in sorted(layers)]


def _pattern_key(arch: Architecture, layer: int, relative: str) -> str:
    return re.escape(arch.module_name(layer, relative))


def _bottleneck(module: ModuleChoice, arch: Architecture, task_type) -> BottleneckConfig:
    site = arch.adapter_sites[module.options.get("location", "ffn")]
    serial = module.type == "serial_adapter"
    relative = site.serial_target if serial else site.parallel_target
    sizes = {layer: int(size) for layer, size in module.sizes.items()}
    default = max(set(sizes.values()), key=list(sizes.values()).count)
    return BottleneckConfig(
        target_modules=_qualified(arch, sizes, relative),
        placement="serial" if serial else "parallel",
        input_modules=None if serial or site.parallel_input is None else {relative: site.parallel_input},
        bottleneck_size=default,
        size_pattern={_pattern_key(arch, l, relative): m for l, m in sizes.items() if m != default},
        scaling=module.options.get("scaling", 1.0 if serial else 4.0),
        task_type=task_type,
    )


def _prefix(module: ModuleChoice, arch: Architecture, task_type) -> list[PeftConfig]:
    """One prefix config per distinct length (a per-layer length is several same-length groups)."""
    groups: dict[int, list[int]] = {}
    for layer, length in module.sizes.items():
        groups.setdefault(int(length), []).append(layer)
    return [
        PrefixConfig(num_virtual_tokens=length, target_modules=_qualified(arch, layers, arch.attention),
                     task_type=task_type)
        for length, layers in sorted(groups.items())
    ]


def _bitfit(module: ModuleChoice, arch: Architecture, task_type) -> BitFitConfig:
    """The biases of the chosen matrices and of the layer's norms (BitFit tunes every bias term)."""
    names = role_modules(arch, module.targets) + list(arch.layer_norms)
    targets = [arch.module_name(layer, name) for layer in module.layers for name in names]
    return BitFitConfig(target_modules=targets, add_missing_bias=False, task_type=task_type)


def _lofit(module: ModuleChoice, arch: Architecture, task_type, context: BuildContext) -> LofitConfig:
    if context.head_ranking is None:
        raise SpaceError("LoFiT needs a head ranking: search with `--prior heads` (or pass one to the builder)")
    ranking = context.head_ranking
    on_layers = set(module.layers)
    scores = [row if layer in on_layers else [float("-inf")] * len(row) for layer, row in enumerate(ranking.scores)]
    k = int(next(iter(module.sizes.values())))
    heads = HeadRanking(ranking.model_id, scores).top_k(k)
    output = arch.matrices["attention_output"][0]
    return LofitConfig(target_modules=_qualified(arch, heads, output), heads=heads, train_scale=False,
                       train_offset=True, task_type=task_type)


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


def _sparse(module: ModuleChoice, arch: Architecture, task_type, context: BuildContext) -> list[SparseConfig]:
    """The point's own mask file (an SPT allocation); else, at the point's density, the most sensitive entries
    of each matrix when a sensitivity map is known, or a seeded random mask."""
    if "mask" in module.options:
        mask = SparseMask.load(module.options["mask"])
        return [SparseConfig(target_modules=sorted(mask.indices), masks=mask, task_type=task_type)]
    names = role_modules(arch, module.targets)
    groups: dict[float, list[int]] = {}
    for layer, density in module.sizes.items():
        groups.setdefault(float(density), []).append(layer)
    configs = []
    for density, layers in sorted(groups.items()):
        targets = [arch.module_name(l, n) for l in layers for n in names]
        if context.sensitivity is not None:
            names = _scored_names(context.sensitivity.scores, targets)
            mask = context.sensitivity.top_fraction_mask(names, density)
            configs.append(SparseConfig(target_modules=names, masks=mask, density=density, task_type=task_type))
        else:
            configs.append(SparseConfig(target_modules=targets, density=density, mask_seed=context.sparse_seed,
                                        task_type=task_type))
    return configs


def component_configs(point: PeftPoint, model_config, kind: str, context: BuildContext = BuildContext()):
    """The PEFT config of every module in ``point`` (several for per-layer prefix lengths / densities)."""
    arch = architecture_for(model_config)
    task_type = TASK_TYPES[kind]
    configs: list[PeftConfig] = []
    for module in point.modules.values():
        kind_ = module.type
        if kind_ == "lora":
            configs.append(lora_config(module, arch, task_type))
        elif kind_ == "ia3":
            configs.append(ia3_config(module, arch, task_type))
        elif kind_ == "ln_tuning":
            configs.append(ln_tuning_config(module, arch, task_type))
        elif kind_ in ("serial_adapter", "parallel_adapter"):
            configs.append(_bottleneck(module, arch, task_type))
        elif kind_ == "prefix":
            configs.extend(_prefix(module, arch, task_type))
        elif kind_ == "bitfit":
            configs.append(_bitfit(module, arch, task_type))
        elif kind_ == "lofit":
            configs.append(_lofit(module, arch, task_type, context))
        elif kind_ == "sparse":
            configs.extend(_sparse(module, arch, task_type, context))
        else:
            raise SpaceError(f"no builder for module type '{kind_}'")
    return configs


def _whole_model_prefix(point: PeftPoint, model_config, arch: Architecture) -> PrefixTuningConfig | None:
    """PEFT's own prefix tuning, when a decoder point is prefix-only, on every layer, one length."""
    if arch.encoder or list(point.modules) != ["prefix"]:
        return None
    sizes = point.modules["prefix"].sizes
    if sorted(sizes) != list(range(model_config.num_hidden_layers)) or len(set(sizes.values())) != 1:
        return None
    return PrefixTuningConfig(num_virtual_tokens=int(next(iter(sizes.values()))), task_type="CAUSAL_LM")


def build_peft_config(point: PeftPoint, model_config, kind: str, context: BuildContext = BuildContext()) -> PeftConfig:
    if point.is_empty:
        raise SpaceError("the point has no PEFT module (every size or layer is off)")
    num_layers = model_config.num_hidden_layers
    for name, module in point.modules.items():
        outside = sorted(layer for layer in module.layers if not 0 <= layer < num_layers)
        if outside:
            raise SpaceError(f"module '{name}' of the point is placed on layer(s) {outside}, but the model has "
                             f"{num_layers} layers (0 to {num_layers - 1})")
    arch = architecture_for(model_config)
    native_prefix = _whole_model_prefix(point, model_config, arch)
    if native_prefix is not None:
        return native_prefix
    configs = component_configs(point, model_config, kind, context)
    if len(configs) == 1:
        return configs[0]
    return CompositeConfig(components=configs, task_type=TASK_TYPES[kind])


def build_adapter(point: PeftPoint, model_config, kind: str, context: BuildContext = BuildContext()) -> Callable:
    """The trial runner's adapter factory for ``point``: base model -> PEFT model."""
    config = build_peft_config(point, model_config, kind, context)
    return lambda model: get_peft_model(model, config)

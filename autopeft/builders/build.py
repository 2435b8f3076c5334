"""A decoded point -> one PEFT config -> a PEFT model.

Each module of the point builds its own PEFT config(s) (:meth:`autopeft.modules.ModuleType.build`). A point with a
single PEFT-native module type (LoRA, IA3, LN tuning; prefix on a decoder over every layer) becomes that plain PEFT
config, loadable without autopeft. Anything else becomes autopeft's own tuner, or a ``CompositeConfig`` of several
components that trains, saves and loads as one model.
"""

from __future__ import annotations

from collections.abc import Callable

from peft import PeftConfig, PrefixTuningConfig, get_peft_model

from autopeft.arch import Architecture, architecture_for
from autopeft.errors import SpaceError
from autopeft.modules import BuildContext, Target, get_module_type
from autopeft.space.point import PeftPoint
from autopeft.tuners.composite import CompositeConfig

TASK_TYPES = {"classification": "SEQ_CLS", "regression": "SEQ_CLS", "causal_lm": "CAUSAL_LM"}


def component_configs(point: PeftPoint, model_config, kind: str, context: BuildContext = BuildContext()):
    """The PEFT config of every module in ``point`` (several for per-layer prefix lengths / densities)."""
    arch = architecture_for(model_config)
    target = Target(arch, arch.dims(model_config), TASK_TYPES[kind])
    configs: list[PeftConfig] = []
    for module in point.modules.values():
        configs.extend(get_module_type(module.type).build(module, target, context))
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

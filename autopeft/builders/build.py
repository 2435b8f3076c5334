"""A decoded point -> one PEFT config -> a PEFT model.

Each module of the point builds its own PEFT config(s) (:meth:`autopeft.modules.ModuleType.build`). A point with a
single PEFT-native module type (LoRA, IA3, LN tuning; prefix on a decoder over every layer, through
:meth:`~autopeft.modules.ModuleType.build_alone`) becomes that plain PEFT config, loadable without autopeft.
Anything else becomes autopeft's own tuner, or a ``CompositeConfig`` of several components that trains, saves and
loads as one model.
"""

from __future__ import annotations

from collections.abc import Callable

from peft import PeftConfig, get_peft_model

from autopeft.arch import architecture_for
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


def build_peft_config(point: PeftPoint, model_config, kind: str, context: BuildContext = BuildContext()) -> PeftConfig:
    if point.is_empty:
        raise SpaceError("the point has no PEFT module (every size or layer is off)")
    num_layers = model_config.num_hidden_layers
    for name, module in point.modules.items():
        outside = sorted(layer for layer in module.layers if not 0 <= layer < num_layers)
        if outside:
            raise SpaceError(f"module '{name}' of the point is placed on layer(s) {outside}, but the model has "
                             f"{num_layers} layers (0 to {num_layers - 1})")
    if len(point.modules) == 1:
        (module,) = point.modules.values()
        arch = architecture_for(model_config)
        target = Target(arch, arch.dims(model_config), TASK_TYPES[kind])
        alone = get_module_type(module.type).build_alone(module, target)
        if alone is not None:
            return alone
    configs = component_configs(point, model_config, kind, context)
    if len(configs) == 1:
        return configs[0]
    return CompositeConfig(components=configs, task_type=TASK_TYPES[kind])


def build_adapter(point: PeftPoint, model_config, kind: str, context: BuildContext = BuildContext()) -> Callable:
    """The trial runner's adapter factory for ``point``: base model -> PEFT model (its trainable weights then taken
    from ``context.initial_weights`` where it holds them)."""
    config = build_peft_config(point, model_config, kind, context)

    def factory(model):
        built = get_peft_model(model, config)
        if context.initial_weights is not None:
            context.initial_weights.apply(point, built)
        return built

    return factory

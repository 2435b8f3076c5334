from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from typing import Any, Optional, Union

from peft.config import PeftConfig

from autopeft.errors import AutopeftError
from autopeft.tuners._registry import add_peft_type

PEFT_TYPE = add_peft_type("autopeft")

# Component settings that act outside the component's own layers, where the composite cannot keep them consistent.
_FORBIDDEN_COMPONENT_SETTINGS = {
    "modules_to_save": "set modules_to_save on the composite config instead",
    "trainable_token_indices": "trainable tokens are not supported inside a composite",
    "target_parameters": "targeting nn.Parameters is not supported inside a composite",
    "layer_replication": "it changes the layers the other components target",
}


def _component_config(component: Union[PeftConfig, dict[str, Any]]) -> PeftConfig:
    """A component as a PEFT config object; dicts (from adapter_config.json) are dispatched on their peft_type."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    if isinstance(component, PeftConfig):
        return component
    if isinstance(component, dict):
        peft_type = component.get("peft_type")
        if peft_type not in PEFT_TYPE_TO_CONFIG_MAPPING:
            raise AutopeftError(
                f"unknown component peft_type {peft_type!r} (autopeft's own methods register on `import autopeft`)"
            )
        return PeftConfig.from_peft_type(**component)
    raise AutopeftError(f"composite components must be PEFT configs or their dicts, got {type(component).__name__}")


def _check_component(index: int, component: PeftConfig) -> None:
    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING

    name = f"component {index} ({component.peft_type})"
    if component.is_prompt_learning or component.is_adaption_prompt:
        raise AutopeftError(
            f"{name}: prompt-learning methods run outside the model's modules and cannot be composite components "
            "(autopeft's own 'prefix' tuner can)"
        )
    if component.peft_type == PEFT_TYPE:
        raise AutopeftError(f"{name}: composites do not nest; list its components directly")
    tuner_cls = PEFT_TYPE_TO_TUNER_MAPPING.get(component.peft_type)
    if tuner_cls is None or tuner_cls.uses_shared_state:
        raise AutopeftError(f"{name}: only methods that inject self-contained layers can be composite components")
    if getattr(component, "target_modules", None) is None:
        raise AutopeftError(f"{name}: composite components need explicit target_modules")
    if getattr(component, "bias", "none") != "none":
        raise AutopeftError(f"{name}: bias={component.bias!r} is not supported; add a bitfit component instead")
    for setting, reason in _FORBIDDEN_COMPONENT_SETTINGS.items():
        if getattr(component, setting, None):
            raise AutopeftError(f"{name}: {setting} is set, but {reason}")


def _json_ready(config_dict: dict[str, Any]) -> dict[str, Any]:
    # PEFT converts top-level sets (e.g. target_modules) when writing JSON; nested ones are ours to convert
    return {key: sorted(value, key=str) if isinstance(value, set) else value for key, value in config_dict.items()}


@dataclass
class CompositeConfig(PeftConfig):
    """Several PEFT methods injected into one model as one adapter (PEFT type ``"AUTOPEFT"``).

    ``components`` are ordinary configs of other methods, PEFT's own (LoRA, IA3, LN tuning, ...) or autopeft's
    (bottleneck, bitfit, ...), each with explicit ``target_modules``. The mix builds, trains, saves and loads as ONE
    PeftModel: ``adapter_config.json`` holds each component's config under ``"components"``, and loading dispatches
    them on their ``peft_type`` through PEFT's ``PEFT_TYPE_TO_CONFIG_MAPPING``. The composite's ``task_type`` and
    ``inference_mode`` apply to every component. Where components may share modules: see ``CompositeModel``.

    Args:
        components: The component configs (or their dicts).
        modules_to_save: Extra modules trained in full and saved (e.g. a classification head).
    """

    components: list[PeftConfig] = field(
        default_factory=list, metadata={"help": "Component PEFT configs (or their dicts), each with target_modules."}
    )
    modules_to_save: Optional[list[str]] = field(
        default=None, metadata={"help": "Modules trained in full and saved, e.g. a classification head."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = PEFT_TYPE
        self.components = [_component_config(component) for component in self.components]
        if not self.components:
            raise AutopeftError("a composite config needs at least one component")
        for index, component in enumerate(self.components):
            _check_component(index, component)

    def to_dict(self) -> dict[str, Any]:
        config_dict = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name != "components"}
        # the composite's task_type and inference_mode apply to every component; write them that way
        shared = {"task_type": self.task_type, "inference_mode": self.inference_mode}
        config_dict["components"] = [_json_ready({**component.to_dict(), **shared}) for component in self.components]
        return config_dict

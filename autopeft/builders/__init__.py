"""Builders: a decoded search-space point -> a PEFT config -> a PEFT model."""

from autopeft.builders.build import build_adapter, build_peft_config, component_configs
from autopeft.builders.groups import (
    HEAD_GROUP,
    head_learning_rate,
    module_learning_rates,
    parameter_groups,
    parameter_groups_for,
)
from autopeft.modules import BuildContext

__all__ = ["HEAD_GROUP", "BuildContext", "build_adapter", "build_peft_config", "component_configs",
           "head_learning_rate", "module_learning_rates", "parameter_groups", "parameter_groups_for"]

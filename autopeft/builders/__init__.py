"""Builders: a decoded search-space point -> a PEFT config -> a PEFT model."""

from autopeft.builders.build import build_adapter, build_peft_config, component_configs
from autopeft.modules import BuildContext

__all__ = ["BuildContext", "build_adapter", "build_peft_config", "component_configs"]

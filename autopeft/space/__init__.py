"""Search spaces: YAML files -> Optuna dimensions -> decoded PEFT points (+ exact parameter counts)."""

from autopeft.space.params import count_model_params, count_trainable_params, parse_max_params
from autopeft.space.point import ModuleChoice, PeftPoint
from autopeft.space.schema import MODULE_TYPES, SpaceSpec, parse_space, read_space_file
from autopeft.space.space import Dimension, SearchSpace

__all__ = [
    "Dimension", "MODULE_TYPES", "ModuleChoice", "PeftPoint", "SearchSpace", "SpaceSpec",
    "count_model_params", "count_trainable_params", "parse_max_params", "parse_space", "read_space_file",
]

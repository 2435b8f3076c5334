"""Searchable PEFT module types, one file each, registered by name (see :mod:`autopeft.modules.base`).

    from autopeft.modules import get_module_type
    lora = get_module_type("lora")
    lora.size, lora.options, lora.learning_rate          # "rank", {"alpha": 2.0}, LearningRate(5e-3, ...)
"""

# Registered in the order reports and messages list the module types (so not sorted).
# isort: off
from autopeft.modules import lora, ia3, bottleneck, prefix, bitfit, ln_tuning, lofit, sparse  # noqa: F401  (register)
# isort: on
from autopeft.modules.base import (
    MODULE_TYPES,
    BuildContext,
    LearningRate,
    ModuleType,
    Target,
    get_module_type,
    register,
)

__all__ = ["MODULE_TYPES", "BuildContext", "LearningRate", "ModuleType", "Target", "get_module_type", "register"]

"""BitFit (Ben Zaken et al., 2022): train the bias vectors of chosen matrices and of the layer norms."""

from __future__ import annotations

from autopeft.modules.base import LearningRate, ModuleType, register
from autopeft.tuners.bitfit import BitFitConfig


@register
class BitFit(ModuleType):
    name = "bitfit"
    targets = ("query", "key", "value", "attention_output", "ffn_in", "ffn_out")
    learning_rate = LearningRate(1e-3, 1e-4, 1e-2, source="Ben Zaken et al. 2022 (swept 1e-4 to 1e-3)")

    def unsupported(self, arch):
        if not arch.linear_has_bias:
            return f"model family '{arch.family}' has no bias vectors to tune"
        return None

    def count_params(self, module, arch, dims, shapes):
        per_layer = sum(fan_out for role in module.targets for fan_out, _ in shapes[role])
        return (per_layer + len(arch.layer_norms) * dims.hidden) * len(module.sizes)

    def build(self, module, target, context):
        """The biases of the chosen matrices and of the layer's norms (BitFit tunes every bias term)."""
        arch = target.arch
        names = arch.role_modules(module.targets) + list(arch.layer_norms)
        targets = [arch.module_name(layer, name) for layer in module.layers for name in names]
        return [BitFitConfig(target_modules=targets, add_missing_bias=False, task_type=target.task_type)]

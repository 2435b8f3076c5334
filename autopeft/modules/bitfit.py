"""BitFit (Ben Zaken et al., 2022): train the bias vectors of chosen matrices and of the layer norms."""

from __future__ import annotations

from autopeft.modules.base import LearningRate, ModuleType, register
from autopeft.tuners.bitfit import BitFitConfig


@register
class BitFit(ModuleType):
    name = "bitfit"
    targets = ("query", "key", "value", "attention_output", "ffn_in", "ffn_out")
    learning_rate = LearningRate(5e-3, 5e-4, 3e-2, source=(
        "sweep (benchmarks/medium/lr.md: 50 steps of batch 16 on SST-2 and TREC): best at 5e-3 on SST-2 (0.74) and "
        "1.5e-2 on TREC (0.67), where 1.5e-2 collapsed SST-2 to the majority class: 5e-3 is the safe one. Ben Zaken et "
        "al. 2022 swept 1e-4 to 1e-3 over many epochs"))
    parameter_names = ("bitfit_bias",)

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

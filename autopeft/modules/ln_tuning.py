"""LayerNorm tuning (Zhao et al., 2023): train the layers' norm weights (and biases), as PEFT's ``LNTuningConfig``."""

from __future__ import annotations

from peft import LNTuningConfig

from autopeft.modules.base import LearningRate, ModuleType, register


@register
class LNTuning(ModuleType):
    name = "ln_tuning"
    learning_rate = LearningRate(1e-3, 1e-4, 1e-2, source="prior: as BitFit (vectors of the same kind); "
                                                          "no paper value adopted")

    def count_params(self, module, arch, dims, shapes):
        per_norm = dims.hidden * (2 if arch.norm_has_bias else 1)
        return per_norm * len(arch.layer_norms) * len(module.sizes)

    def build(self, module, target, context):
        arch = target.arch
        return [LNTuningConfig(target_modules=arch.layer_regex(module.layers, arch.layer_norms),
                               task_type=target.task_type)]

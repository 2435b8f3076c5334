"""LayerNorm tuning (Zhao et al., 2023): train the layers' norm weights (and biases), as PEFT's ``LNTuningConfig``."""

from __future__ import annotations

from peft import LNTuningConfig

from autopeft.modules.base import LearningRate, ModuleType, register


@register
class LNTuning(ModuleType):
    name = "ln_tuning"
    learning_rate = LearningRate(1e-2, 1e-3, 5e-2, source=(
        "sweep (benchmarks/medium/lr.md: 50 steps of batch 16 on SST-2 and TREC): 9e-3 best on both (SST-2 0.84, "
        "TREC 0.62), 3e-3 near the majority class; no paper value adopted"))
    parameter_names = ("ln_tuning_layers",)

    def count_params(self, module, arch, dims, shapes):
        per_norm = dims.hidden * (2 if arch.norm_has_bias else 1)
        return per_norm * len(arch.layer_norms) * len(module.sizes)

    def build(self, module, target, context):
        arch = target.arch
        return [LNTuningConfig(target_modules=arch.layer_regex(module.layers, arch.layer_norms),
                               task_type=target.task_type)]

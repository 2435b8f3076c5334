"""IA3 (Liu et al., 2022): learned vectors that rescale chosen activations, as PEFT's own ``IA3Config``."""

from __future__ import annotations

from peft import IA3Config

from autopeft.modules.base import LearningRate, ModuleType, register


@register
class IA3(ModuleType):
    name = "ia3"
    targets = ("key", "value", "ffn_out")
    learning_rate = LearningRate(3e-2, 3e-3, 1e-1, source=(
        "sweep (benchmarks/medium/lr.md: 50 steps of batch 16 on SST-2 and TREC): 3e-2 to 5e-2 best (SST-2 0.82-0.84, "
        "TREC 0.79-0.88), 1e-2 well below. Liu et al. 2022 used 3e-3 (T-Few, 1,000 steps on T0-3B)"))
    parameter_names = ("ia3_l",)

    def count_params(self, module, arch, dims, shapes):
        # PEFT's IA3 scales a feed-forward module's input, any other module's output
        per_layer = sum(fan_in if role == "ffn_out" else fan_out
                        for role in module.targets for fan_out, fan_in in shapes[role])
        return per_layer * len(module.sizes)

    def build(self, module, target, context):
        arch = target.arch
        names = arch.role_modules(module.targets)
        feedforward = arch.role_modules([t for t in module.targets if t == "ffn_out"])
        return [IA3Config(
            target_modules=arch.layer_regex(module.layers, names),
            feedforward_modules=arch.layer_regex(module.layers, feedforward) if feedforward else [],
            task_type=target.task_type,
        )]

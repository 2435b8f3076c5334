"""Prefix tuning (Li & Liang, 2021): learned key/value vectors prepended in each chosen layer's attention.

autopeft's ``prefix`` tuner (:mod:`autopeft.tuners.prefix`) works on encoders and per layer; a decoder point that is
prefix-only on every layer with one length becomes PEFT's own ``PrefixTuningConfig``, which loads without autopeft.
"""

from __future__ import annotations

from peft import PrefixTuningConfig

from autopeft.modules.base import LearningRate, ModuleType, register
from autopeft.tuners.prefix import PrefixConfig

MAX_VIRTUAL_TOKENS = 4096


@register
class Prefix(ModuleType):
    name = "prefix"
    size = "virtual tokens"
    learning_rate = LearningRate(3e-2, 3e-3, 1e-1, source=(
        "sweep (benchmarks/medium/lr.md: 50 steps of batch 16 on SST-2 and TREC): 3e-2 and 5e-2 best (SST-2 0.78-0.82, "
        "TREC 0.55-0.68), <= 3e-3 at the majority class. P-Tuning v2 (Liu et al. 2022, no reparametrisation) used 5e-3 "
        "to 1e-2 over many epochs; Li & Liang 2021's 5e-5 is for an MLP-reparametrised prefix"))
    # autopeft's tuner (keys, values, or their reparametrisation); PEFT's own prefix tuning on a decoder
    parameter_names = ("prefix_keys", "prefix_values", "prefix_projection", "prompt_encoder")

    def max_size(self, dims, num_layers):
        return MAX_VIRTUAL_TOKENS

    def count_params(self, module, arch, dims, shapes):
        return sum(2 * int(n) * dims.num_kv_heads * dims.head_dim for n in module.sizes.values())

    def build(self, module, target, context):
        """One prefix config per distinct length (a per-layer length is several same-length groups)."""
        groups: dict[int, list[int]] = {}
        for layer, length in module.sizes.items():
            groups.setdefault(int(length), []).append(layer)
        return [PrefixConfig(num_virtual_tokens=length,
                             target_modules=target.arch.module_names(layers, target.arch.attention),
                             task_type=target.task_type)
                for length, layers in sorted(groups.items())]

    def build_alone(self, module, target):
        """PEFT's own prefix tuning, on a decoder with every layer at one length."""
        sizes = module.sizes
        if target.arch.encoder or sorted(sizes) != list(range(target.dims.num_layers)) or len(set(sizes.values())) != 1:
            return None
        return PrefixTuningConfig(num_virtual_tokens=int(next(iter(sizes.values()))), task_type="CAUSAL_LM")

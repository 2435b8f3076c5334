"""Bottleneck adapters: serial (Houlsby et al., 2019; Pfeiffer et al., 2021) and parallel (He et al., 2022).

Both are autopeft's ``bottleneck`` tuner (:mod:`autopeft.tuners.bottleneck`), differing in where the adapter reads
and adds; one file holds both because they share the site table, the size pattern and the parameter count.
"""

from __future__ import annotations

import re

from autopeft.modules.base import LearningRate, ModuleType, most_common, register
from autopeft.tuners.bottleneck import BottleneckConfig
from autopeft.tuners.bottleneck.config import DEFAULT_SCALING

SERIAL_LR = LearningRate(4e-3, 1e-4, 2e-2, source=(
    "the rate at bottleneck 24 (REFERENCE_WIDTH); width m > 24 takes it * sqrt(24 / m) (ModuleType.default_rate): over "
    "376 steps (bench_fidelity medium) width-96 serial adapters at 5e-3 to 7e-3 collapsed to the majority class. The "
    "sweep (benchmarks/medium/lr.md: 50 steps of batch 16 on SST-2 and TREC): 6e-3 to 1e-2 best (SST-2 0.82-0.83, "
    "TREC 0.59), 2e-3 at or near the majority class on TREC; a little below the best, as longer "
    "trainings want. Houlsby et al. 2019 swept 3e-5 to 3e-3 over 3-20 epochs "
    "and Pfeiffer et al. 2021 used 1e-4 over 30 epochs: long-schedule values, too low for a few hundred steps"))
PARALLEL_LR = LearningRate(2e-3, 1e-4, 1e-2, source=(
    "the rate at bottleneck 24 (REFERENCE_WIDTH); width m > 24 takes it * sqrt(24 / m). The sweep "
    "(benchmarks/medium/lr.md): 2e-3 best on SST-2 (0.82) and TREC (0.46) for the FFN adapter at scaling 4, "
    "which multiplies its output: 6e-3 and above fell back to the majority class. He et al. 2022 used 1e-4 to 5e-4 "
    "over 10+ epochs"))


REFERENCE_WIDTH = 24   # the width the rates were measured at: the Pfeiffer / parallel baselines on MiniLM (384 / 16)


class _Bottleneck(ModuleType):
    size = "bottleneck"
    reference_size = REFERENCE_WIDTH
    placement = ""   # the tuner's "serial" | "parallel"

    def max_size(self, dims, num_layers):
        return dims.hidden

    def count_params(self, module, arch, dims, shapes):
        hidden = dims.hidden
        return sum(2 * hidden * int(m) + int(m) + hidden for m in module.sizes.values())

    def _relative_target(self, module, arch) -> str:
        """The module (relative to a layer) this adapter's tuner layer wraps at the module's location."""
        site = arch.adapter_sites[module.options.get("location", self.options["location"])]
        return site.serial_target if self.placement == "serial" else site.parallel_target

    def nested_sites(self, module, target):
        relative = self._relative_target(module, target.arch)
        return {target.arch.module_name(layer, relative): int(m) for layer, m in module.sizes.items()}

    def build(self, module, target, context):
        arch = target.arch
        site = arch.adapter_sites[module.options.get("location", self.options["location"])]
        serial = self.placement == "serial"
        relative = self._relative_target(module, arch)
        sizes = {layer: int(size) for layer, size in module.sizes.items()}
        default = most_common(sizes)
        return [BottleneckConfig(
            target_modules=arch.module_names(sizes, relative),
            placement=self.placement,
            input_modules=None if serial or site.parallel_input is None else {relative: site.parallel_input},
            bottleneck_size=default,
            size_pattern={re.escape(arch.module_name(layer, relative)): m
                          for layer, m in sizes.items() if m != default},
            scaling=module.options.get("scaling", self.options.get("scaling")),   # None: the tuner's default
            task_type=target.task_type,
        )]


@register
class SerialAdapter(_Bottleneck):
    name = "serial_adapter"
    placement = "serial"
    learning_rate = SERIAL_LR
    parameter_names = ("bottleneck_serial_down", "bottleneck_serial_up")
    options = {"location": "ffn"}


@register
class ParallelAdapter(_Bottleneck):
    name = "parallel_adapter"
    placement = "parallel"
    learning_rate = PARALLEL_LR
    parameter_names = ("bottleneck_parallel_down", "bottleneck_parallel_up")
    options = {"location": "ffn", "scaling": DEFAULT_SCALING["parallel"]}

"""Bottleneck adapters: serial (Houlsby et al., 2019; Pfeiffer et al., 2021) and parallel (He et al., 2022).

Both are autopeft's ``bottleneck`` tuner (:mod:`autopeft.tuners.bottleneck`), differing in where the adapter reads
and adds; one file holds both because they share the site table, the size pattern and the parameter count.
"""

from __future__ import annotations

import re

from autopeft.modules.base import LearningRate, ModuleType, most_common, register
from autopeft.tuners.bottleneck import BottleneckConfig
from autopeft.tuners.bottleneck.config import DEFAULT_SCALING

ADAPTER_LR = LearningRate(1e-4, 3e-5, 3e-3, source="Houlsby et al. 2019 (swept 3e-5 to 3e-3); "
                                                   "Pfeiffer et al. 2021 (1e-4)")


class _Bottleneck(ModuleType):
    size = "bottleneck"
    placement = ""   # the tuner's "serial" | "parallel"
    learning_rate = ADAPTER_LR

    def max_size(self, dims, num_layers):
        return dims.hidden

    def count_params(self, module, arch, dims, shapes):
        hidden = dims.hidden
        return sum(2 * hidden * int(m) + int(m) + hidden for m in module.sizes.values())

    def build(self, module, target, context):
        arch = target.arch
        site = arch.adapter_sites[module.options.get("location", self.options["location"])]
        serial = self.placement == "serial"
        relative = site.serial_target if serial else site.parallel_target
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
    options = {"location": "ffn"}


@register
class ParallelAdapter(_Bottleneck):
    name = "parallel_adapter"
    placement = "parallel"
    options = {"location": "ffn", "scaling": DEFAULT_SCALING["parallel"]}

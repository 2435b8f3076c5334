"""Bottleneck adapters, serial (Houlsby/Pfeiffer) and parallel (He et al. 2022): PEFT type "bottleneck"."""

from autopeft.tuners._registry import register_tuner

from .config import BottleneckConfig
from .layer import BottleneckLayer
from .model import BottleneckModel

__all__ = ["BottleneckConfig", "BottleneckLayer", "BottleneckModel"]

register_tuner("bottleneck", BottleneckConfig, BottleneckModel, prefix=BottleneckModel.prefix)

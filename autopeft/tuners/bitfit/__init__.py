"""BitFit: train only bias vectors, registered as PEFT type "bitfit"."""

from autopeft.tuners._registry import register_tuner

from .config import BitFitConfig
from .layer import BitFitLayer
from .model import BitFitModel

__all__ = ["BitFitConfig", "BitFitLayer", "BitFitModel"]

register_tuner("bitfit", BitFitConfig, BitFitModel, prefix=BitFitModel.prefix)

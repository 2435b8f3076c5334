"""Composite adapters: several PEFT methods as one adapter, registered as PEFT type "autopeft"."""

from autopeft.tuners._registry import register_tuner

from .config import CompositeConfig
from .model import CompositeModel

__all__ = ["CompositeConfig", "CompositeModel"]

register_tuner("autopeft", CompositeConfig, CompositeModel, prefix=CompositeModel.prefix)

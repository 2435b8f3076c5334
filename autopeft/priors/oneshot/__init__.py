"""One-shot screening: a weight-shared super-adapter holds every configuration of a space as a sub-network, so one
training scores any configuration by switching parts of it on or off (LoNAS / Shears, DyLoRA, NOAH), with plain PEFT
modules and exports.

- :mod:`~autopeft.priors.oneshot.nesting`: how each nestable module type switches to a leading slice;
- :mod:`~autopeft.priors.oneshot.supernet`: :class:`SuperAdapter`, the largest configuration built with the usual
  builders, its configurations activated or extracted as stand-alone PEFT models;
- :mod:`~autopeft.priors.oneshot.train`: training with a configuration drawn per step, the disk cache, scores;
- :mod:`~autopeft.priors.oneshot.inherit`: stand-alone trials started from their slice (inherited weights).
"""

from autopeft.priors.oneshot.inherit import SliceWeights
from autopeft.priors.oneshot.nesting import NESTS, Nest
from autopeft.priors.oneshot.supernet import SuperAdapter
from autopeft.priors.oneshot.train import (
    OneShot,
    load_or_train_super_adapter,
    load_super_adapter,
    save_super_adapter,
    train_super_adapter,
)

__all__ = ["NESTS", "Nest", "OneShot", "SliceWeights", "SuperAdapter", "load_or_train_super_adapter",
           "load_super_adapter", "save_super_adapter", "train_super_adapter"]

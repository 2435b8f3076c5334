"""Prefix tuning as a normal PEFT tuner (peft type "prefix"), usable on BERT-family encoders and Llama decoders."""

from autopeft.tuners._registry import register_tuner

from .config import PrefixConfig
from .layer import PrefixLayer, prefix_attention_forward
from .model import PrefixModel

__all__ = ["PrefixConfig", "PrefixLayer", "PrefixModel", "prefix_attention_forward"]

register_tuner("prefix", PrefixConfig, PrefixModel, prefix=PrefixModel.prefix)

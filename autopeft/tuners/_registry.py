"""Register autopeft's own tuners with PEFT, so PEFT's save_pretrained / from_pretrained handle them.

PEFT keeps its method names in the ``PeftType`` enum, which has no public extension hook; a
member is added the way ``enum`` itself builds them, then ``register_peft_method`` does the rest.
"""

from __future__ import annotations

from peft.utils import register_peft_method
from peft.utils.peft_types import PeftType


def add_peft_type(name: str) -> PeftType:
    """Return ``PeftType[NAME]``, adding the member first when PEFT does not know it."""
    key = name.upper()
    if key in PeftType.__members__:
        return PeftType[key]
    member = str.__new__(PeftType, key)
    member._name_ = key
    member._value_ = key
    member.__objclass__ = PeftType
    member.__init__(key)
    PeftType._member_map_[key] = member
    PeftType._value2member_map_[key] = member
    PeftType._member_names_.append(key)
    return member


def register_tuner(name: str, config_cls, model_cls, prefix: str | None = None) -> PeftType:
    """Add ``name`` to ``PeftType`` and register its config and model classes with PEFT (idempotent)."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    peft_type = add_peft_type(name)
    if peft_type not in PEFT_TYPE_TO_CONFIG_MAPPING:
        register_peft_method(name=name, config_cls=config_cls, model_cls=model_cls, prefix=prefix)
    return peft_type

"""Trainable parameters of a point, from the point and the model config alone (no model is built).

The search uses this exact count as an objective and for the ``--max-params`` budget, so the
surrogate never has to learn it. Each module type counts its own (:meth:`autopeft.modules.ModuleType.count_params`);
tests check the counts against the measured count of the built model.
"""

from __future__ import annotations

import math

from autopeft.arch import architecture_for
from autopeft.errors import AutopeftError
from autopeft.modules import get_module_type
from autopeft.space.point import PeftPoint


def count_trainable_params(point: PeftPoint, model_config) -> int:
    """Trainable PEFT parameters of ``point`` (the task head is not included)."""
    arch = architecture_for(model_config)
    dims, shapes = arch.dims(model_config), arch.matrix_shapes(model_config)
    return sum(get_module_type(m.type).count_params(m, arch, dims, shapes) for m in point.modules.values())


def count_model_params(model_config) -> int:
    """Parameters of the base model (no task head), for budgets given in % of the model.

    Built on the meta device: exact for any architecture, and no memory is allocated.
    """
    import torch
    from transformers import AutoModel

    with torch.device("meta"):
        model = AutoModel.from_config(model_config)
    return sum(p.numel() for p in model.parameters())


_SUFFIXES = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9}


def parse_max_params(value: float | str | None, model_params: int) -> int | None:
    """``50000``, ``"1e5"``, ``"120k"``, ``"1.5M"`` or ``"0.5%"`` (of the base model) -> a count."""
    if value is None:
        return None
    text = str(value).strip().lower()
    try:
        if text.endswith("%"):
            count = float(text[:-1]) / 100 * model_params
        elif text and text[-1] in _SUFFIXES:
            count = float(text[:-1]) * _SUFFIXES[text[-1]]
        else:
            count = float(text)
    except ValueError:
        raise AutopeftError(f"cannot read --max-params '{value}' (examples: 50000, 1e5, 120k, 0.5%)") from None
    if not count > 0 or not math.isfinite(count):
        raise AutopeftError("--max-params must be positive")
    return int(count)

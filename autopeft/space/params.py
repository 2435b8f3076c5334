"""Trainable parameters of a point, from the point and the model config alone (no model is built).

The search uses this exact count as an objective and for the ``--max-params`` budget, so the
surrogate never has to learn it. Each module type counts its own (:meth:`autopeft.modules.ModuleType.count_params`);
tests check the counts against the measured count of the built model.
"""

from __future__ import annotations

from autopeft.arch import architecture_for
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

"""Learning rates per module type: a point's rates, and the optimizer's parameter groups of its built model.

Prefix, LoRA, bottleneck adapters, IA3/BitFit/LN, LoFiT and sparse deltas want learning rates up to 100x apart
(each type's :attr:`~autopeft.modules.ModuleType.learning_rate` says which and why), so a mixed point trains each
module type's parameters in its own AdamW group at that type's rate.

A module's rate is, first match wins:

1. ``learning_rate`` given by the caller (``--lr``): one rate for every module and the head, whatever the point or
   the space says (the user's explicit choice overrides everything, as ``--lr`` always did);
2. the point's ``training.learning_rate``: one rate for everything (spaces that search one rate, as all did before);
3. the module's own ``lr`` in the point (a space that fixes or searches it);
4. the module type's default for the module's largest size (:meth:`~autopeft.modules.ModuleType.default_rate`:
   LoRA's and the bottleneck adapters' fall as 1/sqrt(size) above their reference size);

times the point's ``training.lr_scale`` for 3 and 4 when the space has one (one dimension that moves every rate
together).

The task head trains at the point's largest module rate: the papers whose settings the types' rates come from train
head and modules with one rate, and a head at the smallest rate (a sparse delta's) would barely move in a few hundred
steps, while the largest rate is one the point's own modules are tuned to stand. Trainable parameters that no module
type claims are the head (PEFT's ``modules_to_save`` copy, or the head the trial runner unfreezes); a parameter that
belongs to a module type the point does not have is a builder bug and raises.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from autopeft.errors import AutopeftError
from autopeft.modules import MODULE_TYPES, get_module_type
from autopeft.space.point import PeftPoint

HEAD_GROUP = "head"


def module_learning_rates(point: PeftPoint, learning_rate: float | None = None) -> dict[str, float]:
    """Module type -> the rate its parameters train at (see the module docstring for the order of precedence)."""
    if learning_rate is not None:
        return {module.type: float(learning_rate) for module in point.modules.values()}
    one_rate = point.training.get("learning_rate")
    scale = float(point.training.get("lr_scale", 1.0))
    rates = {}
    for module in point.modules.values():
        if one_rate is not None:
            rates[module.type] = float(one_rate)
            continue
        rate = module.lr if module.lr is not None else get_module_type(module.type).default_rate(
            max(module.sizes.values(), default=None))
        rates[module.type] = rate * scale
    return rates


def head_learning_rate(point: PeftPoint, learning_rate: float | None = None) -> float | None:
    """The head group's rate: the point's largest module rate (None for a point without modules: the caller's)."""
    if learning_rate is not None:
        return float(learning_rate)
    if "learning_rate" in point.training:
        return float(point.training["learning_rate"])
    rates = module_learning_rates(point, learning_rate)
    return max(rates.values()) if rates else learning_rate


def parameter_groups(model: torch.nn.Module, point: PeftPoint, learning_rate: float | None = None,
                     head_lr: float | None = None) -> list[dict]:
    """AdamW parameter groups ``{"params": [...], "lr": rate, "name": module type | "head"}`` of ``model`` (built from
    ``point``), over its trainable parameters; empty groups are left out. ``head_lr`` overrides the head's rate
    (default: :func:`head_learning_rate`); a point without modules needs one of ``learning_rate`` or ``head_lr``."""
    rates = module_learning_rates(point, learning_rate)
    head = head_lr if head_lr is not None else head_learning_rate(point, learning_rate)
    members: dict[str, list[torch.nn.Parameter]] = {name: [] for name in (*rates, HEAD_GROUP)}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        owners = [kind for kind, module_type in MODULE_TYPES.items() if module_type.owns(name)]
        if len(owners) > 1:
            raise AutopeftError(f"parameter '{name}' is claimed by module types {owners}; their parameter_names clash")
        if owners and owners[0] not in rates:
            raise AutopeftError(f"parameter '{name}' belongs to module type '{owners[0]}', which the point does not "
                                f"have ({point.describe()})")
        members[owners[0] if owners else HEAD_GROUP].append(parameter)
    if members[HEAD_GROUP] and head is None:
        raise AutopeftError("the point has no module to take the head's learning rate from; give one")
    return [{"params": params, "lr": rates.get(name, head), "name": name}
            for name, params in members.items() if params]


def parameter_groups_for(point: PeftPoint, learning_rate: float | None = None,
                         head_lr: float | None = None) -> Callable[[torch.nn.Module], list]:
    """The trial runner's ``parameter_groups``: built model -> :func:`parameter_groups` of ``point``."""
    return lambda model: parameter_groups(model, point, learning_rate, head_lr)

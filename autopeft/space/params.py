"""Trainable parameters of a point, from the point and the model config alone (no model is built).

The search uses this exact count as an objective and for the ``--max-params`` budget, so the
surrogate never has to learn it. Tests check it against the measured count of the built model.
"""

from __future__ import annotations

from autopeft.arch import Architecture, Dimensions, architecture_for
from autopeft.space.point import ModuleChoice, PeftPoint


def sparse_entries(density: float, rows: int, cols: int) -> int:
    """Entries a sparse mask keeps in one matrix (shared with the mask builders)."""
    return max(1, round(density * rows * cols))


def matrices_per_layer(module: ModuleChoice) -> dict[int, list[str]]:
    """The roles each layer adapts: ``targets`` everywhere, unless the point names them per layer
    (``options['matrices']``, e.g. an SPT allocation that puts LoRA on different matrices per layer)."""
    explicit = module.options.get("matrices")
    if explicit is None:
        return {layer: list(module.targets) for layer in module.sizes}
    return {int(layer): list(roles) for layer, roles in explicit.items()}


def _module_params(module: ModuleChoice, arch: Architecture, dims: Dimensions, shapes) -> int:
    kind, sizes = module.type, module.sizes
    if kind == "lora":
        roles = matrices_per_layer(module)
        return sum(int(r) * (i + o) for layer, r in sizes.items() for t in roles[layer] for o, i in shapes[t])
    if kind == "ia3":  # PEFT's IA3 scales a feed-forward module's input, any other module's output
        per_layer = sum(i if t == "ffn_out" else o for t in module.targets for o, i in shapes[t])
        return per_layer * len(sizes)
    if kind in ("serial_adapter", "parallel_adapter"):
        h = dims.hidden
        return sum(2 * h * int(m) + int(m) + h for m in sizes.values())
    if kind == "prefix":
        return sum(2 * int(n) * dims.num_kv_heads * dims.head_dim for n in sizes.values())
    if kind == "bitfit":  # the chosen matrices' biases and the layer's norm biases
        per_layer = sum(o for t in module.targets for o, _ in shapes[t]) + len(arch.layer_norms) * dims.hidden
        return per_layer * len(sizes)
    if kind == "ln_tuning":
        per_norm = dims.hidden * (2 if arch.norm_has_bias else 1)
        return per_norm * len(arch.layer_norms) * len(sizes)
    if kind == "lofit":  # K heads chosen over the placed layers; one offset vector per head
        return int(next(iter(sizes.values()))) * dims.head_dim
    if kind == "sparse" and "mask" in module.options:  # a mask file (SPT): exactly its entries
        return int(module.options["entries"])
    if kind == "sparse":
        return sum(sparse_entries(d, o, i) for d in sizes.values() for t in module.targets for o, i in shapes[t])
    raise ValueError(f"unknown module type {kind!r}")


def count_trainable_params(point: PeftPoint, model_config) -> int:
    """Trainable PEFT parameters of ``point`` (the task head is not included)."""
    arch = architecture_for(model_config)
    dims, shapes = arch.dims(model_config), arch.matrix_shapes(model_config)
    return sum(_module_params(m, arch, dims, shapes) for m in point.modules.values())


def count_model_params(model_config) -> int:
    """Parameters of the base model (no task head), for budgets given in % of the model.

    Built on the meta device: exact for any architecture, and no memory is allocated.
    """
    import torch
    from transformers import AutoModel

    with torch.device("meta"):
        model = AutoModel.from_config(model_config)
    return sum(p.numel() for p in model.parameters())

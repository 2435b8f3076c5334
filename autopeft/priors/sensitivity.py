"""SPT's sensitivity map (He et al., ICCV 2023; ziplab/SPT): which weights of a base model matter for a task.

A weight's score is its squared gradient summed over a few training batches, ``Σ_b (∂L_b/∂w)²``, taken
on a copy of the model with a fresh task head in train mode, as in SPT's reference code. Only the matrices
that LoRA and sparse tuning adapt (the six roles of every layer) are scored; embeddings, norms, biases
and the head stay frozen, so the pass computes no gradient it would throw away. The map tells sparse
tuning which entries to train (:meth:`SensitivityMap.top_fraction_mask`) and, summed per layer and
role (:meth:`SensitivityMap.summary`), where structured modules are likely to pay off.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from autopeft._imports import optional_dependency
from autopeft.arch import MATRIX_ROLES, architecture_for
from autopeft.data import TaskData, collate, tokenize_task
from autopeft.errors import AutopeftError
from autopeft.models import BaseModel
from autopeft.priors.cache import atomic_folder, cached_path, read_entry
from autopeft.tuners.sparse import SparseMask, sparse_entries

SENSITIVITY_VERSION = 1  # part of the cache key: bump when the scores' definition changes
SCORES_FILE = "scores.safetensors"
META_FILE = "meta.json"
MODEL_FILES = ("config.json", "*.safetensors", "*.bin")  # what identifies a local Hugging Face checkpoint


@dataclass
class SensitivityMap:
    """``scores[module name]``: float32 tensor shaped like that module's weight (higher = more sensitive).

    Module names are as in ``named_modules()`` of the plain Hugging Face model (e.g.
    ``bert.encoder.layer.0.attention.self.query``), the names :class:`SparseMask` uses. ``meta["modules"]``
    maps each name to ``[layer, role]``; the rest of ``meta`` records how the map was computed.
    """

    model_id: str
    scores: dict[str, torch.Tensor]
    meta: dict

    def save(self, folder: str | Path) -> None:
        """Scores as bfloat16 safetensors (half the size, float32's range: squared gradients are tiny) + meta.json."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {name: score.to(torch.bfloat16).contiguous() for name, score in self.scores.items()}
        save_file(tensors, str(folder / SCORES_FILE), metadata={"format": "autopeft-sensitivity"})
        (folder / META_FILE).write_text(json.dumps({"model_id": self.model_id, "meta": self.meta}, indent=1))

    @classmethod
    def load(cls, folder: str | Path) -> SensitivityMap:
        folder = Path(folder)
        if not (folder / META_FILE).is_file() or not (folder / SCORES_FILE).is_file():
            raise AutopeftError(f"'{folder}' does not hold a sensitivity map ({META_FILE} + {SCORES_FILE})")
        saved = json.loads((folder / META_FILE).read_text())
        scores = {name: score.float() for name, score in load_file(str(folder / SCORES_FILE)).items()}
        return cls(model_id=saved["model_id"], scores=scores, meta=saved["meta"])

    def index(self) -> dict[str, tuple[int, str]]:
        """Module name -> (layer, role)."""
        return {name: (int(layer), role) for name, (layer, role) in self.meta["modules"].items()}

    def summary(self) -> dict:
        """``layers``, ``roles`` and ``mean[layer][role]`` / ``total[layer][role]`` of the scores.

        A role with several matrices (Llama's gate and up projections) pools them.
        """
        index = self.index()
        layers = sorted({layer for layer, _ in index.values()})
        roles = [role for role in MATRIX_ROLES if any(r == role for _, r in index.values())]
        total = {layer: dict.fromkeys(roles, 0.0) for layer in layers}
        count = {layer: dict.fromkeys(roles, 0) for layer in layers}
        for name, (layer, role) in index.items():
            total[layer][role] += float(self.scores[name].double().sum())
            count[layer][role] += self.scores[name].numel()
        mean = {layer: {role: total[layer][role] / count[layer][role] for role in roles} for layer in layers}
        return {"layers": layers, "roles": roles, "mean": mean, "total": total}

    def top_fraction_mask(self, module_names, density: float) -> SparseMask:
        """Per module, its ``sparse_entries(density, rows, cols)`` top-scoring entries; ties go to the lower index."""
        if not 0 < density <= 1:
            raise AutopeftError(f"density must be in (0, 1], got {density}")
        indices = {}
        for name in module_names:
            score = self.scores.get(name)
            if score is None:
                raise AutopeftError(f"the sensitivity map of '{self.model_id}' has no scores for module '{name}'")
            rows, cols = score.shape
            # a stable descending sort keeps equal scores in index order, so masks are reproducible
            ranked = torch.sort(score.flatten(), descending=True, stable=True).indices
            indices[name] = ranked[: sparse_entries(density, rows, cols)]
        return SparseMask(indices)

    def heatmap(self, path: str | Path) -> None:
        """A PNG of the mean score per layer (rows) and role (columns), on a log colour scale."""
        with optional_dependency("matplotlib", "the sensitivity heatmap"):
            from matplotlib.colors import LogNorm
            from matplotlib.figure import Figure
        summary = self.summary()
        layers, roles = summary["layers"], summary["roles"]
        grid = np.array([[summary["mean"][layer][role] for role in roles] for layer in layers])
        figure = Figure(figsize=(2.5 + 1.1 * len(roles), 1.5 + 0.35 * len(layers)))
        axes = figure.add_subplot()
        # zero scores have no logarithm: masked, they show as blank cells
        image = axes.imshow(np.ma.masked_less_equal(grid, 0), norm=LogNorm(), cmap="viridis", aspect="auto")
        axes.set_xticks(range(len(roles)), roles, rotation=30, ha="right")
        axes.set_yticks(range(len(layers)), layers)
        axes.set_xlabel("matrix role")
        axes.set_ylabel("layer")
        axes.set_title(f"sensitivity of {self.model_id} on {self.meta.get('task', '?')}")
        figure.colorbar(image, ax=axes, label="mean squared gradient")
        figure.tight_layout()
        figure.savefig(str(path), dpi=120)


def sensitivity_batches(num_examples: int, batches: int, batch_size: int, seed: int) -> list[np.ndarray]:
    """Train-split rows of each batch: a seeded permutation cut into batches, no row drawn twice.

    A split smaller than ``batches * batch_size`` gives fewer batches, the last possibly short.
    """
    order = np.random.default_rng(seed).permutation(num_examples)[: batches * batch_size]
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def role_modules(model: torch.nn.Module, config) -> dict[str, tuple[int, str]]:
    """Full name of every role matrix of every layer -> (layer, role), layer by layer in role order."""
    arch = architecture_for(config)
    names = [name for name, _ in model.named_modules()]
    found: dict[str, tuple[int, str]] = {}
    for layer in range(arch.dims(config).num_layers):
        for role in MATRIX_ROLES:
            for relative in arch.matrices[role]:
                suffix = arch.module_name(layer, relative)
                matches = [name for name in names if name == suffix or name.endswith(f".{suffix}")]
                if len(matches) != 1:
                    raise AutopeftError(f"expected one module named '{suffix}' in the model, found {len(matches)}")
                found[matches[0]] = (layer, role)
    return found


def compute_sensitivity(
    base: BaseModel,
    task: TaskData,
    *,
    batches: int = 16,
    batch_size: int = 32,
    max_length: int = 128,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> SensitivityMap:
    """Accumulate ``(∂L_b/∂W)²`` over ``batches`` batches of the train split for every role matrix ``W``.

    ``L_b`` is the batch's mean task loss as a trial computes it (``tokenize_task`` + ``collate`` +
    ``model(**batch).loss``); dropout is on and seeded with ``seed``, like the head.
    """
    if base.kind != task.spec.kind:
        raise AutopeftError(f"base model was loaded for '{base.kind}' but the task is '{task.spec.kind}'")
    if batches < 1 or batch_size < 1:
        raise AutopeftError(f"batches and batch_size must be at least 1, got {batches} and {batch_size}")
    start = time.perf_counter()
    split = tokenize_task(task, base.tokenizer, max_length)["train"]
    batch_rows = sensitivity_batches(len(split), batches, batch_size, seed)
    if not batch_rows:
        raise AutopeftError(f"task '{task.name}' has no training examples to compute a sensitivity map from")

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = base.fresh_copy(seed).to(device).train()
    modules = role_modules(model, base.config)
    model.requires_grad_(False)
    weights = [model.get_submodule(name).weight.requires_grad_(True) for name in modules]
    scores = [torch.zeros_like(weight, dtype=torch.float32) for weight in weights]

    torch.manual_seed(seed)
    pad_id = base.tokenizer.pad_token_id
    for number, rows in enumerate(batch_rows, start=1):
        batch = {key: value.to(device) for key, value in collate(split, rows, pad_id).items()}
        loss = model(**batch).loss
        if not torch.isfinite(loss):
            raise AutopeftError(f"the sensitivity pass got a {loss.item()} loss on batch {number}")
        for score, gradient in zip(scores, torch.autograd.grad(loss, weights)):
            score.add_(gradient.float().square())

    meta = {
        "version": SENSITIVITY_VERSION,
        "head": base.kind,
        "task": task.name,
        "task_fingerprint": task.fingerprint,
        "batches": len(batch_rows),
        "examples": int(sum(len(rows) for rows in batch_rows)),
        "batch_size": batch_size,
        "max_length": max_length,
        "seed": seed,
        "seconds": round(time.perf_counter() - start, 3),
        "modules": {name: [layer, role] for name, (layer, role) in modules.items()},
    }
    return SensitivityMap(base.source.name, {name: score.cpu() for name, score in zip(modules, scores)}, meta)


def model_signature(base: BaseModel) -> dict:
    """What identifies the weights and head: the source, plus size and mtime of each local checkpoint file,
    so a checkpoint rewritten in place gets a new map."""
    source = base.source
    files = {}
    if source.is_local:
        patterns = (source.gguf_file,) if source.gguf_file else MODEL_FILES
        for pattern in patterns:
            for file in sorted(Path(source.path).glob(pattern)):
                stat = file.stat()
                files[file.name] = [stat.st_size, stat.st_mtime_ns]
    return {"source": source.cache_key, "files": files, "head": base.kind, "num_labels": base.num_labels}


def _load_cached_map(folder: Path) -> SensitivityMap:
    """A cache entry's map; an incomplete one (scores and meta disagree) is an error, hence a miss."""
    smap = SensitivityMap.load(folder)
    if set(smap.scores) != set(smap.meta["modules"]):
        raise ValueError("its scores do not cover the modules its meta.json lists")
    return smap


def load_or_compute_sensitivity(
    base: BaseModel,
    task: TaskData,
    *,
    batches: int = 16,
    batch_size: int = 32,
    max_length: int = 128,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> tuple[SensitivityMap, bool]:
    """The cached map for these settings, else a new one, cached; the flag is True for a cache hit.

    A new map is returned as read back from the cache (bfloat16-rounded), so a cold and a warm call give
    identical scores, hence identical masks.
    """
    folder = cached_path(
        "sensitivity", version=SENSITIVITY_VERSION, model=model_signature(base), task=task.fingerprint,
        batches=batches, batch_size=batch_size, max_length=max_length, seed=seed,
    )
    cached = read_entry(folder, _load_cached_map)
    if cached is not None:
        return cached, True
    computed = compute_sensitivity(
        base, task, batches=batches, batch_size=batch_size, max_length=max_length, seed=seed, device=device
    )
    with atomic_folder(folder) as staging:
        computed.save(staging)
    return SensitivityMap.load(folder), False

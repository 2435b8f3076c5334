"""LoFiT's step 1 (Yin et al., NeurIPS 2024; fc2869/lo-fit): learn which attention heads matter for a task.

Every head of every layer gets a LoFiT scale ``A_{l,h}`` (its output becomes ``(1 + A) * z``), started
near zero, and only the scales (plus a classifier's fresh head) are trained on the task with an L1
penalty ``l1 * Σ|A|``. The penalty pulls every scale to zero; the heads whose scaling helps the task
resist it, so ``||A_{l,h}||₂`` after training ranks the heads (:class:`HeadRanking`), and LoFiT's step 2
trains offsets on the top-k of them only (``LofitConfig(heads=ranking.top_k(k), train_scale=False)``).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from autopeft._imports import optional_dependency
from autopeft.data import TaskData, collate, length_grouped_batches, tokenize_task
from autopeft.errors import AutopeftError
from autopeft.models import BaseModel
from autopeft.priors.cache import atomic_folder, cached_path, read_entry
from autopeft.priors.sensitivity import model_signature
from autopeft.trial.loop import NonFiniteLoss, Shard, TrainingConfig, train
from autopeft.tuners.lofit import HeadRanking, LofitConfig, head_norms, lofit_l1_penalty

HEADS_VERSION = 2  # part of the cache key: bump when the training recipe changes (2: the shared loop's schedule)
RANKING_FILE = "ranking.json"
META_FILE = "meta.json"
NEAR_ZERO = 1e-3  # a head whose ||A|| ends below this was switched off by the penalty
# within the paper's ranges (λ 5e-4…5e-3, lr 5e-4…5e-3); on MiniLM/SST-2, lr 1e-3 left the fresh classifier at
# chance and every ‖A‖ ~1e-4 (a ranking of noise), while these separate heads 57-174x, consistently over seeds
DEFAULT_L1 = 5e-4
DEFAULT_LR = 5e-3
MAX_GRAD_NORM = 1.0  # the reference trains with the Hugging Face Trainer, whose defaults we keep


@dataclass(frozen=True)
class HeadSelectionDefaults:
    """How step 1 runs and how its scores pick heads, per model kind (``benchmarks/lofit-encoder.md``,
    ``benchmarks/lofit-decoder.md``).

    A model with a new task head (an encoder classifier): the head is first fitted alone for one epoch (a linear
    probe) and the heads are ranked *within layers*. Ranked globally, step 1 put every one of MiniLM's K = 7 heads in
    the last layer, next to the fresh head, and those did worst (SST-2 0.743, TREC 0.441 vs random heads' 0.800 /
    0.585); within layers, 0.786 / 0.549, and after the probe 0.787 / 0.586 (3 seeds). A causal LM has no new head
    to fit, and its ranking stays global as in the paper (not measured within layers).
    """

    probe_epochs: int
    within_layers: bool

    @classmethod
    def for_kind(cls, kind: str) -> HeadSelectionDefaults:
        return cls(probe_epochs=0, within_layers=False) if kind == "causal_lm" else cls(probe_epochs=1,
                                                                                          within_layers=True)


def check_head_selection_settings(
    *, l1: float, lr: float, epochs: int, train_examples: int, batch_size: int, max_length: int
) -> None:
    """Reject impossible settings before anything is loaded or trained (the CLI calls it first)."""
    if not (math.isfinite(l1) and l1 >= 0):
        raise AutopeftError(f"l1 must be a finite number >= 0, got {l1}")
    if not (math.isfinite(lr) and lr > 0):
        raise AutopeftError(f"lr must be a finite number > 0, got {lr}")
    for name, value in (("epochs", epochs), ("train_examples", train_examples), ("batch_size", batch_size),
                        ("max_length", max_length)):
        if value < 1:
            raise AutopeftError(f"{name} must be at least 1, got {value}")


def ranked_heads(ranking: HeadRanking, k: int) -> list[tuple[int, int, float]]:
    """The ``k`` best heads as ``(layer, head, score)``, best first, in :meth:`HeadRanking.top_k`'s tie order."""
    positions = [(layer, head) for layer in range(ranking.num_layers) for head in range(ranking.num_heads)]
    positions.sort(key=lambda p: (-ranking.scores[p[0]][p[1]], p[0], p[1]))
    return [(layer, head, ranking.scores[layer][head]) for layer, head in positions[:k]]


def _unfreeze_task_head(peft_model: torch.nn.Module, base: BaseModel) -> list[str]:
    """Train the classifier/regressor head alongside the scales; returns the head's parameter names.

    A sequence-classification head is freshly initialised: frozen, it maps the features to random
    logits, and the task gradient on ``A`` would only say how to fit that random readout, i.e. noise.
    Trained together with ``A`` it makes the loss about the task. A causal LM's head is pretrained and
    stays frozen, as in the reference code.
    """
    inner = peft_model.get_base_model()
    names = []
    for head in base._head_names:
        for name, parameter in inner.get_submodule(head).named_parameters():
            parameter.requires_grad_(True)
            names.append(f"{head}.{name}")
    return names


def select_heads(
    base: BaseModel,
    task: TaskData,
    *,
    l1: float = DEFAULT_L1,
    lr: float = DEFAULT_LR,
    epochs: int = 2,
    train_examples: int = 1000,
    batch_size: int = 32,
    max_length: int = 128,
    seed: int = 0,
    probe_epochs: int = 0,
    device: str | torch.device | None = None,
) -> tuple[HeadRanking, dict]:
    """LoFiT step 1 on a fresh copy of ``base``: train scales on all heads with an L1 penalty, rank by ``||A||``.

    ``probe_epochs`` > 0 first fits a classifier's fresh head alone (a linear probe, the scales frozen at their
    draw) for that many passes over the subset: with a random head the first steps' gradient on ``A`` says how
    to fit a random readout, and the heads nearest the head (the last layer) win the ranking. A causal LM has no
    new head: there it does nothing.

    As in the reference code: ``A ~ N(0, 1e-3)``, no offsets, AdamW without weight decay (it would be a
    second, L2 pull on ``A``), a learning rate decaying linearly to 0, gradients clipped at norm 1, dropout
    on. The loss is the task loss as a trial computes it (a causal LM's labels mask the prompt) plus
    ``l1 * Σ|A|``. Trains ``epochs`` passes over a seeded subset of ``train_examples`` training examples
    (all of them if the split is smaller) in length-grouped batches. Returns the ranking and its meta
    (seconds, final losses, fraction of heads with ``||A|| < 1e-3``, ...).
    """
    from peft import get_peft_model

    check_head_selection_settings(l1=l1, lr=lr, epochs=epochs, train_examples=train_examples,
                                  batch_size=batch_size, max_length=max_length)
    if base.kind != task.spec.kind:
        raise AutopeftError(f"base model was loaded for '{base.kind}' but the task is '{task.spec.kind}'")
    start = time.perf_counter()
    split = tokenize_task(task, base.tokenizer, max_length)["train"]
    if len(split) == 0:
        raise AutopeftError(f"task '{task.name}' has no training examples to select heads with")
    subset = np.sort(np.random.default_rng(seed).permutation(len(split))[:train_examples])

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = base.fresh_copy(seed)
    torch.manual_seed(seed)  # the draw of A
    config = LofitConfig(train_scale=True, train_offset=False, scale_init_std=1e-3)  # every head of every layer
    model = get_peft_model(model, config)
    head_parameters = _unfreeze_task_head(model, base)
    model.to(device).train()
    initial_norms = head_norms(model)

    pad_id = base.tokenizer.pad_token_id
    task_losses, penalties = [], []
    batches_per_epoch = len(length_grouped_batches(split.lengths[subset], batch_size, seed=seed))
    training = TrainingConfig(learning_rate=lr, weight_decay=0.0, warmup_ratio=0.0, max_grad_norm=MAX_GRAD_NORM)
    probe_loss = None
    if probe_epochs > 0 and head_parameters:
        probe_loss = _fit_head_alone(model, head_parameters, split, subset, pad_id, training, batch_size,
                                     probe_epochs * batches_per_epoch, seed, device)

    def penalised_loss(forward, shard: Shard) -> torch.Tensor:
        batch = {key: value.to(device) for key, value in collate(split, subset[shard.rows], pad_id).items()}
        task_loss = forward(**batch).loss
        penalty = lofit_l1_penalty(model)
        task_losses.append(task_loss.item())
        penalties.append(penalty.item())
        return task_loss + l1 * penalty

    try:
        run = train(model, penalised_loss, split.lengths[subset], training=training, batch_size=batch_size,
                    total_steps=epochs * batches_per_epoch, seed=seed, device=device)
    except NonFiniteLoss as exc:
        raise AutopeftError(f"head selection diverged: loss {exc.loss} at step {exc.step} (lower --lr?)") from None
    task_loss_sum, penalty_sum = sum(task_losses[-batches_per_epoch:]), sum(penalties[-batches_per_epoch:])

    norms = head_norms(model)
    meta = {
        "version": HEADS_VERSION,
        "head": base.kind,
        "task": task.name,
        "task_fingerprint": task.fingerprint,
        "l1": l1,
        "lr": lr,
        "epochs": epochs,
        "train_examples": int(len(subset)),
        "batch_size": batch_size,
        "max_length": max_length,
        "seed": seed,
        "probe_epochs": probe_epochs,
        "probe_final_loss": probe_loss,
        "steps": run.steps,
        "trained_task_head": head_parameters,
        # means over the last epoch's batches
        "final_task_loss": task_loss_sum / batches_per_epoch,
        "final_l1_norm": penalty_sum / batches_per_epoch,
        "final_loss": (task_loss_sum + l1 * penalty_sum) / batches_per_epoch,
        "num_layers": int(norms.shape[0]),
        "num_heads": int(norms.shape[1]),
        "initial_mean_norm": float(initial_norms.mean()),
        "final_mean_norm": float(norms.mean()),
        "near_zero_threshold": NEAR_ZERO,
        "fraction_near_zero": float((norms < NEAR_ZERO).float().mean()),
        "seconds": round(time.perf_counter() - start, 3),
    }
    return HeadRanking.from_tensor(base.source.name, norms), meta


def _fit_head_alone(model, head_parameters: list[str], split, subset, pad_id, training: TrainingConfig,
                    batch_size: int, steps: int, seed: int, device) -> float:
    """Train only the task head (the LoFiT scales frozen) for ``steps`` steps; returns the last step's loss."""
    inner = model.get_base_model()
    head = [parameter for name, parameter in inner.named_parameters() if name in set(head_parameters)]
    frozen = [p for p in model.parameters() if p.requires_grad and not any(p is h for h in head)]
    for parameter in frozen:
        parameter.requires_grad_(False)

    def task_loss(forward, shard: Shard) -> torch.Tensor:
        return forward(**{k: v.to(device) for k, v in collate(split, subset[shard.rows], pad_id).items()}).loss

    try:
        run = train(model, task_loss, split.lengths[subset], training=training, batch_size=batch_size,
                    total_steps=steps, seed=seed + 1000, device=device, parameters=head)
    except NonFiniteLoss as exc:
        raise AutopeftError(f"head selection's probe diverged: loss {exc.loss} at step {exc.step}") from None
    finally:
        for parameter in frozen:
            parameter.requires_grad_(True)
    return run.final_loss


def load_or_select_heads(
    base: BaseModel,
    task: TaskData,
    *,
    l1: float = DEFAULT_L1,
    lr: float = DEFAULT_LR,
    epochs: int = 2,
    train_examples: int = 1000,
    batch_size: int = 32,
    max_length: int = 128,
    seed: int = 0,
    probe_epochs: int = 0,
    device: str | torch.device | None = None,
) -> tuple[HeadRanking, dict, bool]:
    """The cached ranking for these settings, else :func:`select_heads`, cached; the flag is True for a hit.

    A new ranking is returned as read back from the cache, so cold and warm calls give equal rankings.
    """
    settings = dict(l1=l1, lr=lr, epochs=epochs, train_examples=train_examples, batch_size=batch_size,
                    max_length=max_length, seed=seed)
    check_head_selection_settings(**{k: v for k, v in settings.items() if k != "seed"})
    if probe_epochs:  # only then in the key: rankings cached before the probe existed stay valid
        settings["probe_epochs"] = probe_epochs
    folder = cached_path("heads", version=HEADS_VERSION, model=model_signature(base), task=task.fingerprint,
                         **settings)
    entry = read_entry(folder, _read_ranking)
    if entry is not None:
        return (*entry, True)
    ranking, meta = select_heads(base, task, device=device, **settings)
    with atomic_folder(folder) as staging:
        ranking.save(staging / RANKING_FILE)
        (staging / META_FILE).write_text(json.dumps(meta, indent=1))
    return (*_read_ranking(folder), False)


def _read_ranking(folder: Path) -> tuple[HeadRanking, dict]:
    return HeadRanking.load(folder / RANKING_FILE), json.loads((folder / META_FILE).read_text())


def heads_plot(ranking: HeadRanking, path: str | Path, *, mark_top: int = 0, title: str | None = None,
               marked: list[tuple[int, int]] | None = None) -> None:
    """A PNG heatmap of the scores (``||A||``), layers as rows, heads as columns; the ``mark_top`` best (or the
    ``marked`` (layer, head) pairs, e.g. a within-layer selection) get a dot."""
    with optional_dependency("matplotlib", "the head heatmap"):
        from matplotlib.figure import Figure
    grid = np.array(ranking.scores)
    figure = Figure(figsize=(2.5 + 0.45 * ranking.num_heads, 1.5 + 0.35 * ranking.num_layers))
    axes = figure.add_subplot()
    image = axes.imshow(grid, cmap="viridis", aspect="auto", vmin=0)
    title = title or f"LoFiT head scores of {ranking.model_id}"
    if mark_top > 0:
        top = marked or [(layer, head) for layer, head, _ in
                         ranked_heads(ranking, min(mark_top, ranking.num_layers * ranking.num_heads))]
        axes.scatter([head for _, head in top], [layer for layer, _ in top], s=12, c="red")
        title += f" (red: top {len(top)})"
    axes.set_xticks(range(ranking.num_heads))
    axes.set_yticks(range(ranking.num_layers))
    axes.set_xlabel("head")
    axes.set_ylabel("layer")
    axes.set_title(title)
    figure.colorbar(image, ax=axes, label="||A||₂")
    figure.tight_layout()
    figure.savefig(str(path), dpi=120)


__all__ = [
    "HEADS_VERSION",
    "HeadSelectionDefaults",
    "check_head_selection_settings",
    "heads_plot",
    "load_or_select_heads",
    "ranked_heads",
    "select_heads",
]

"""``autopeft select-heads``: LoFiT's step 1, which attention heads matter for a task."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from autopeft.atomic import check_output_folder, write_dir
from autopeft.cli.options import TASK_FLAGS, DatasetOpt, ModelOpt, TrustOpt, flag_group
from autopeft.cli.output import console
from autopeft.errors import AutopeftError
from autopeft.priors.heads import DEFAULT_L1, DEFAULT_LR
from autopeft.search.settings import TaskSettings

SUMMARY_FILE = "summary.json"


def _check_out(out: Path) -> None:
    check_output_folder(out, lambda folder: (folder / "ranking.json").is_file() and (folder / SUMMARY_FILE).is_file(),
                        "select-heads")


@flag_group("task_flags", TASK_FLAGS)
def select_heads_command(
    model: ModelOpt,
    dataset: DatasetOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for ranking.json, heads.png and summary.json.")],
    task_flags: dict[str, Any],
    l1: Annotated[float, typer.Option("--l1", help="Weight of the L1 penalty on the head scales A.")] = DEFAULT_L1,
    lr: Annotated[float, typer.Option("--lr", help="AdamW learning rate (decays linearly to 0).")] = DEFAULT_LR,
    epochs: Annotated[int, typer.Option()] = 2,
    train_examples: Annotated[int, typer.Option(help="Seeded subset of the train split to learn from.")] = 1000,
    batch_size: Annotated[int, typer.Option()] = 32,
    max_length: Annotated[int, typer.Option()] = 128,
    seed: Annotated[int, typer.Option()] = 0,
    top_k: Annotated[int, typer.Option(help="Heads to list (and mark in heads.png); the ranking keeps all.")] = 10,
    probe_epochs: Annotated[Optional[int], typer.Option(
        help="Epochs fitting a new task head alone before the scales train (default: 1 with a new head, 0 for a "
             "causal LM).")] = None,
    order: Annotated[str, typer.Option(
        "--rank", help="How the scores pick heads: global | within-layers (every layer's best first) | auto "
                       "(within layers with a new head, global for a causal LM).")] = "auto",
    trust_remote_code: TrustOpt = False,
):
    """Rank every attention head by ||A|| after training per-head scales with an L1 penalty (LoFiT step 1).

    Writes ranking.json (all heads' scores), heads.png (layers x heads) and summary.json (settings,
    timing, the top heads and their {layer: heads} selection for LoFiT's step 2). The ranking is cached
    by (model, dataset and every flag above but --top-k): a second run reuses it.
    """
    from autopeft.models import get_base_model
    from autopeft.priors.heads import (
        HeadSelectionDefaults,
        check_head_selection_settings,
        heads_plot,
        load_or_select_heads,
        ranked_heads,
    )

    check_head_selection_settings(l1=l1, lr=lr, epochs=epochs, train_examples=train_examples,
                                  batch_size=batch_size, max_length=max_length)
    if top_k < 1:
        raise AutopeftError(f"--top-k must be at least 1, got {top_k}")
    if order not in ("auto", "global", "within-layers"):
        raise AutopeftError(f"--rank must be auto, global or within-layers, got '{order}'")
    if probe_epochs is not None and probe_epochs < 0:
        raise AutopeftError(f"--probe-epochs must be at least 0, got {probe_epochs}")
    _check_out(out)
    task_data = TaskSettings(dataset=dataset, **task_flags).load(seed)
    with console.status(f"loading {model}"):
        base = get_base_model(model, task_data.spec.kind, num_labels=max(task_data.spec.num_labels, 1),
                              trust_remote_code=trust_remote_code)
    defaults = HeadSelectionDefaults.for_kind(base.kind)
    with console.status(f"learning head scales of {model} on {task_data.name} ({epochs} epochs, l1 {l1:g})"):
        ranking, meta, cached = load_or_select_heads(
            base, task_data, l1=l1, lr=lr, epochs=epochs, train_examples=train_examples, batch_size=batch_size,
            max_length=max_length, seed=seed,
            probe_epochs=defaults.probe_epochs if probe_epochs is None else probe_epochs,
        )
    within = order == "within-layers" or (order == "auto" and defaults.within_layers)
    chosen = ranking.within_layers() if within else ranking  # picks the heads; ranking.json keeps the raw ||A||
    k = min(top_k, ranking.num_layers * ranking.num_heads)
    top = [(layer, head, ranking.scores[layer][head]) for layer, head, _ in ranked_heads(chosen, k)]

    def write(staging: Path) -> None:
        ranking.save(staging / "ranking.json")
        heads_plot(ranking, staging / "heads.png", mark_top=k, marked=[(layer, head) for layer, head, _ in top],
                   title=f"LoFiT head scores: {ranking.model_id} on {task_data.name}")
        (staging / SUMMARY_FILE).write_text(json.dumps(
            {"model": model, "task": task_data.name, "cached": cached, "meta": meta,
             "top_heads": [{"rank": rank, "layer": layer, "head": head, "norm": norm}
                           for rank, (layer, head, norm) in enumerate(top, start=1)],
             "ranked": "within layers" if within else "globally",
             "selection": {str(layer): heads for layer, heads in chosen.top_k(k).items()}}, indent=2))

    _check_out(out)  # again: it may have changed while the heads were ranked
    write_dir(out, write)  # all or nothing

    table = Table(title=f"top {k} of {ranking.num_layers} x {ranking.num_heads} heads, ranked "
                        f"{'within layers' if within else 'globally'}")
    for column in ("rank", "layer", "head", "||A||"):
        table.add_column(column, justify="right")
    for rank, (layer, head, norm) in enumerate(top, start=1):
        table.add_row(str(rank), str(layer), str(head), f"{norm:.3e}")
    Console().print(table)
    source = "cached ranking, learned" if cached else "learned"
    console.print(f"{source} in {meta['seconds']:.1f} s ({meta['steps']} steps); "
                  f"final task loss {meta['final_task_loss']:.4f}; "
                  f"{100 * meta['fraction_near_zero']:.0f}% of heads have ||A|| < {meta['near_zero_threshold']:g}")
    console.print(f"wrote {out} (ranking.json, heads.png, summary.json); summary.json's 'selection' is the "
                  f"heads argument of LoFiT's step 2")

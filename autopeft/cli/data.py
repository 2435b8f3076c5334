"""``autopeft select-data``: choose which training examples to tune on (a subset of the task, or from a pool)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from autopeft.atomic import check_output_folder, write_dir
from autopeft.cli.options import STRATEGY_CHOICES, TASK_FLAGS, DatasetOpt, ModelOpt, flag_group
from autopeft.cli.output import console
from autopeft.errors import AutopeftError
from autopeft.search.settings import TaskSettings

SELECTION_FILE = "selection.json"
REPORT_FILE = "report.md"
PLOT_FILE = "embedding_plot.png"


@flag_group("task_flags", TASK_FLAGS)
def select_data_command(
    model: ModelOpt,
    dataset: DatasetOpt,
    strategy: Annotated[str, typer.Option("--strategy", "-s", help=STRATEGY_CHOICES)],
    size: Annotated[str, typer.Option(
        "--size", help="Examples to select: a count (2000), a percentage (5%) or a fraction <= 1.")],
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="Folder for selection.json, report.md and embedding_plot.png.")],
    pool: Annotated[Optional[list[str]], typer.Option(
        "--pool", help="Select from these datasets' train texts (repeat for several) with the task's train split "
                       "as the target.")] = None,
    embedding_model: Annotated[Optional[str], typer.Option(
        "--embedding-model", help="Embed with this model (alias, folder, Hub id) instead of --model; 'tuned': "
                                  "--model after a short LoRA fit on the task (GOT-D's task-tuned embeddings, "
                                  "cached).")] = None,
    *,
    task_flags: dict[str, Any],
    seed: Annotated[int, typer.Option()] = 0,
    max_length: Annotated[int, typer.Option(help="Tokens per text for the embeddings.")] = 128,
    batch_size: Annotated[int, typer.Option(help="Texts per embedding batch.")] = 64,
):
    """Rank the candidate examples with a selection strategy and keep the best --size of them.

    Without --pool the candidates are the task's own train split (and so is the target of similarity, dsir
    and ot); with --pool they are the pool datasets' train texts, the task's train split being the target.
    The ranking is cached by (strategy, seed, data, embedding model): another --size is then free.
    """
    from autopeft.priors.selection import (
        SelectionInputs,
        cached_embeddings,
        encoder_signature,
        get_strategy,
        load_or_compute_order,
        parse_size,
        pool_from_datasets,
        select,
        selection_fingerprint,
        task_labels,
        task_texts,
    )
    from autopeft.priors.selection.tuned import embedding_model_for, is_tuned

    chosen = get_strategy(strategy)  # an unknown name fails before anything loads
    if max_length < 2 or batch_size < 1:
        raise AutopeftError(f"--max-length must be at least 2 and --batch-size at least 1, "
                            f"got {max_length} and {batch_size}")
    _check_out(out)
    task_data = TaskSettings(dataset=dataset, **task_flags).load(seed)
    target_texts = task_texts(task_data, "train")
    target_labels = task_labels(task_data, "train")
    label_names = task_data.spec.label_names
    if pool:
        pool_texts, sources, pool_parts = [], [], []
        for path in pool:
            texts, part_sources = pool_from_datasets([path])
            pool_parts.append({"name": part_sources[0][0] if part_sources else Path(path).name, "path": path,
                               "split": "train", "rows": len(texts), "offset": len(pool_texts)})
            pool_texts.extend(texts)
            sources.extend(part_sources)
        inputs = SelectionInputs(pool_texts, None, target_texts)
    else:
        pool_parts = [{"name": task_data.name, "path": dataset, "split": "train", "rows": len(target_texts),
                       "offset": 0}]
        sources = None
        inputs = SelectionInputs(target_texts, target_labels, target_texts)
    count = parse_size(size, len(inputs))

    embedder = embedding_model or model
    embedding_key = None
    if chosen.needs_embeddings:
        if is_tuned(embedding_model):
            with console.status(f"fitting {model} on {task_data.name} for task-tuned embeddings (cached)"):
                embedder = embedding_model_for(embedding_model, model, task_data, max_length=max_length)
        inputs.embed = lambda texts: cached_embeddings(embedder, texts, max_length=max_length, batch_size=batch_size)
        embedding_key = {"model": encoder_signature(embedder), "max_length": max_length}
    chosen.check(inputs)  # a missing label or target is an error before the embeddings are computed

    with console.status(f"ranking {len(inputs):,} examples with '{chosen.name}'"):
        order, meta, cached = load_or_compute_order(chosen.name, inputs, seed,
                                                    fingerprint=selection_fingerprint(inputs, embedding_key))
    selected = select(order, count)
    summary = {
        "strategy": chosen.name, "size": count, "size_requested": size, "seed": seed, "task": task_data.name,
        "model": model, "embedding_model": (f"tuned: {model} fitted on {task_data.name} ({embedder})"
                                            if is_tuned(embedding_model) else embedder)
        if chosen.needs_embeddings else None,
        "max_length": max_length if chosen.needs_embeddings else None,
        "target": {"dataset": task_data.name, "path": dataset, "split": "train", "rows": len(target_texts)},
        "target_is_pool": not pool, "pool": pool_parts, "pool_size": len(inputs), "cached": cached,
        "selected": selected.tolist(),
    }
    if sources is not None:
        summary["selected_sources"] = [[sources[i][0], int(sources[i][1])] for i in selected]
    summary["meta"] = meta

    plot = None
    if chosen.needs_embeddings:
        target_embeddings = inputs.target_embeddings if pool and chosen.needs_target else None
        plot = (inputs.pool_embeddings, target_embeddings)
    report = _report(summary, meta, inputs, selected, sources, target_labels, label_names)

    def write(folder: Path) -> None:
        from autopeft.priors.selection import embedding_plot

        (folder / SELECTION_FILE).write_text(json.dumps(summary, indent=1))
        (folder / REPORT_FILE).write_text(report)
        if plot is not None:
            embedding_plot(plot[0], selected, plot[1], folder / PLOT_FILE,
                           title=f"{chosen.name}: {count:,} of {len(inputs):,} ({task_data.name})", seed=seed)

    _write_folder(out, write)
    table = Table(title=f"select-data: {chosen.name}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("selected", f"{count:,} of {len(inputs):,}")
    table.add_row("pool", ", ".join(f"{part['name']} ({part['rows']:,})" for part in pool_parts))
    table.add_row("target", f"{task_data.name} train ({len(target_texts):,})")
    table.add_row("ranking", "cached" if cached else f"computed in {meta['seconds']:.1f} s")
    info = meta.get("info", {})
    if "iterations" in info:
        converged = "converged" if info["converged"] else "NOT converged"
        table.add_row("OT solve", f"{info['iterations']} iterations, {converged}, "
                                  f"{info['solve_seconds']:.1f} s")
    Console().print(table)
    written = ", ".join(name for name in (SELECTION_FILE, REPORT_FILE, PLOT_FILE if plot is not None else None) if name)
    console.print(f"wrote {out} ({written})")


def _report(summary: dict, meta: dict, inputs, selected, sources, target_labels, label_names) -> str:
    from autopeft.priors.selection.report import label_balance, selection_report, source_balance, target_label_rows

    facts = {"strategy": summary["strategy"], "seed": summary["seed"],
             "selected": f"{summary['size']:,} of {summary['pool_size']:,} ({summary['size_requested']})",
             "pool": ", ".join(f"{part['name']} train ({part['rows']:,})" for part in summary["pool"]),
             "target": f"{summary['target']['dataset']} train ({summary['target']['rows']:,})"
                       + (" = the pool" if summary["target_is_pool"] else ""),
             "ranking": "cached" if summary["cached"] else f"computed in {meta['seconds']:.1f} s"}
    if summary["embedding_model"]:
        facts["embeddings"] = f"{summary['embedding_model']} (mean-pooled, max length {summary['max_length']})"
    labels = None
    if inputs.pool_labels is not None:
        labels = label_balance(inputs.pool_labels, selected, None, label_names)
    source_rows = source_balance(sources, selected) if sources is not None else None
    target_rows = (target_label_rows(target_labels, label_names)
                   if sources is not None and target_labels is not None else None)
    return selection_report(title=f"Data selection: {summary['strategy']} on {summary['task']}", summary=facts,
                            details=meta.get("info") or None, labels=labels, sources=source_rows,
                            target_labels=target_rows)


def _check_out(out: Path) -> None:
    check_output_folder(out, lambda folder: (folder / SELECTION_FILE).is_file(), "select-data")


def _write_folder(out: Path, write: Callable[[Path], None]) -> None:
    """All or nothing: ``out`` is never half-written (an earlier selection there is replaced)."""
    _check_out(out)
    write_dir(out, write)

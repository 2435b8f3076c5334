"""``autopeft sensitivity``: SPT's gradient² sensitivity map and SPT allocations at several budgets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from autopeft.atomic import check_output_folder
from autopeft.cli.options import TASK_FLAGS, DatasetOpt, ModelOpt, TrustOpt, flag_group
from autopeft.cli.output import console
from autopeft.errors import AutopeftError
from autopeft.search.settings import TaskSettings

SUMMARY_FILE = "summary.json"
MAP_FOLDER = "sensitivity"


def budget_label(text: str) -> str:
    return text.strip().replace("%", "pct").replace(".", "_")


@flag_group("task_flags", TASK_FLAGS)
def sensitivity(
    model: ModelOpt,
    dataset: DatasetOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the map, heatmap and SPT points.")],
    task_flags: dict[str, Any],
    batches: Annotated[int, typer.Option(help="Batches of gradient² to sum (SPT: 16).")] = 16,
    batch_size: Annotated[int, typer.Option()] = 32,
    max_length: Annotated[int, typer.Option()] = 128,
    budgets: Annotated[str, typer.Option(
        help="Trainable-parameter budgets of the SPT points: counts or % of the model.")] = "0.1%,0.5%,1%",
    seed: Annotated[int, typer.Option()] = 0,
    trust_remote_code: TrustOpt = False,
):
    """Sensitivity of every weight matrix (Σ grad² over a few batches) and SPT points at the given budgets.

    Each budget gets a folder with point.yaml (LoRA where sensitive weights cluster, sparse tuning of the
    most sensitive entries elsewhere) that `autopeft trial --point` trains. --out is written all at once
    (an earlier sensitivity output there is replaced), so a failed run leaves nothing. The map is cached by
    (model, dataset, batches, batch size, length, seed): a second run, or a search with
    `--prior sensitivity`, reuses it.
    """
    from autopeft.atomic import write_dir
    from autopeft.models import get_base_model, load_model_config
    from autopeft.priors.sensitivity import load_or_compute_sensitivity
    from autopeft.priors.spt import parse_spt_budgets, spt_allocation
    from autopeft.space import count_model_params

    # every input is checked before the task, the model or the map load, and nothing is written until all is done
    if batches < 1 or batch_size < 1 or max_length < 2:
        raise AutopeftError(f"--batches and --batch-size must be at least 1 and --max-length at least 2, "
                            f"got {batches}, {batch_size} and {max_length}")
    _check_out(out)
    model_config = load_model_config(model, trust_remote_code=trust_remote_code)
    model_params = count_model_params(model_config)
    wanted = parse_spt_budgets(budgets, model_config, model_params)
    task_data = TaskSettings(dataset=dataset, **task_flags).load(seed)
    with console.status(f"loading {model}"):
        base = get_base_model(model, task_data.spec.kind, num_labels=max(task_data.spec.num_labels, 1),
                              trust_remote_code=trust_remote_code)
    with console.status(f"sensitivity of {model} on {task_data.name} ({batches} batches of {batch_size})"):
        smap, cached = load_or_compute_sensitivity(base, task_data, batches=batches, batch_size=batch_size,
                                                   max_length=max_length, seed=seed)
    allocations = [(text, budget, spt_allocation(smap.scores, base.config, budget)) for text, budget in wanted]
    seconds = smap.meta["seconds"]
    table = Table(title="SPT points (" + ("cached map" if cached else f"map computed in {seconds:.1f} s") + ")")
    for column in ("budget", "params", "% of model", "LoRA matrices (r=8)", "sparse entries", "folder"):
        table.add_column(column, justify="right" if column not in ("budget", "folder") else "left")
    points = []
    for text, budget, allocation in allocations:
        folder = f"spt-{budget_label(text)}"
        lora_matrices = sum(len(roles) for roles in allocation.structured.values())
        points.append({"budget": text, "budget_params": budget, "params": allocation.params,
                       "lora_params": allocation.lora_params, "sparse_params": allocation.sparse_params,
                       "lora_matrices": allocation.structured, "folder": folder})
        table.add_row(text, f"{allocation.params:,}", f"{100 * allocation.params / model_params:.3f}",
                      str(lora_matrices), f"{allocation.sparse_params:,}", folder)
    summary = {"model": model, "task": task_data.name, "cached": cached, "meta": smap.meta,
               "model_params": model_params, "summary": smap.summary(), "spt_points": points}

    def write(staging: Path) -> None:
        smap.save(staging / MAP_FOLDER)
        smap.heatmap(staging / "heatmap.png")
        for (_, _, allocation), entry in zip(allocations, points):
            folder = staging / entry["folder"]
            folder.mkdir()
            allocation.to_point(folder / "sparse_mask.safetensors").save(folder / "point.yaml")
        (staging / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=str))

    _check_out(out)  # again: it may have changed while the map was computed
    write_dir(out, write)
    Console().print(table)
    console.print(f"wrote {out} (sensitivity/, heatmap.png, summary.json, spt-*/point.yaml); "
                  f"train one with: autopeft trial --model {model} --dataset {dataset} "
                  f"--point {out}/spt-.../point.yaml")



def _check_out(out: Path) -> None:
    check_output_folder(out, lambda folder: (folder / SUMMARY_FILE).is_file() and (folder / MAP_FOLDER).is_dir(),
                        "sensitivity")

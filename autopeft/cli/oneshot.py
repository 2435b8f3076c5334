"""``autopeft oneshot``: train (or read from the cache) a space's super-adapter and score configurations with it."""

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
from autopeft.search.settings import TaskSettings

SUMMARY_FILE = "summary.json"


def _check_out(out: Path) -> None:
    check_output_folder(out, lambda folder: (folder / SUMMARY_FILE).is_file(), "oneshot")


@flag_group("task_flags", TASK_FLAGS)
def oneshot_command(
    model: ModelOpt,
    dataset: DatasetOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for summary.json and the exported slices.")],
    task_flags: dict[str, Any],
    space: Annotated[str, typer.Option(help="Search-space YAML or a packaged space's name.")] = "default",
    train_examples: Annotated[Optional[float], typer.Option(
        help="Training examples (count, or fraction <= 1; default all), as the search's full fidelity.")] = None,
    epochs: Annotated[float, typer.Option(help="Epochs of the super-adapter's training.")] = 2.0,
    batch_size: Annotated[int, typer.Option(help="Training batch size.")] = 32,
    max_length: Annotated[int, typer.Option(help="Tokens per example.")] = 128,
    eval_examples: Annotated[Optional[int], typer.Option(
        help="Validation examples each score uses (default: all).")] = None,
    lr: Annotated[Optional[float], typer.Option(
        "--lr", help="One learning rate for everything (default: each module type's own at its largest size).")] = None,
    points: Annotated[int, typer.Option(help="Configurations drawn from the space to score (besides the "
                                             "baselines it expresses).")] = 20,
    export: Annotated[int, typer.Option(help="Export the best N scored configurations (by one-shot loss and "
                                             "parameters, as the screen picks) as adapter folders.")] = 3,
    seed: Annotated[int, typer.Option(help="Seed of the training and of the draws.")] = 0,
    trust_remote_code: TrustOpt = False,
):
    """Train a super-adapter holding every configuration of --space (its largest configuration, trained on a
    configuration drawn per step), then score the space's baselines and random draws on it, without training them.

    The super-adapter is cached by (model, dataset, space and the training flags): a second run, or a search with
    `--prior oneshot` at the same settings, reuses it. --out gets summary.json (every score) and, per exported
    configuration, a folder with the adapter and point.yaml; a LoRA-only slice is a plain PEFT LoRA adapter.
    """
    import numpy as np

    from autopeft.models import get_base_model, load_model_config
    from autopeft.priors.oneshot import SuperAdapter, load_or_train_super_adapter
    from autopeft.search.engine import point_key
    from autopeft.search.initial_design import BASELINES, baseline_params
    from autopeft.search.priors.oneshot import RANK_BY, Screened, best_candidates
    from autopeft.space import SearchSpace, count_trainable_params
    from autopeft.space.schema import resolve_space_path
    from autopeft.trial import Fidelity, TrainingConfig, TrialRunner

    if points < 0 or export < 0:
        raise AutopeftError(f"--points and --export must be >= 0, got {points} and {export}")
    if lr is not None and not lr > 0:
        raise AutopeftError(f"--lr must be positive, got {lr}")
    fidelity = Fidelity(train_examples=train_examples, epochs=epochs, max_length=max_length,
                        eval_examples=eval_examples, batch_size=batch_size)
    _check_out(out)
    model_config = load_model_config(model, trust_remote_code=trust_remote_code)
    search_space = SearchSpace.from_file(resolve_space_path(space), model_config)
    SuperAdapter.screened_modules(search_space)   # a space that cannot be screened fails here, before any weights
    task_data = TaskSettings(dataset=dataset, **task_flags).load(seed)
    with console.status(f"loading {model}"):
        base = get_base_model(model, task_data.spec.kind, num_labels=max(task_data.spec.num_labels, 1),
                              trust_remote_code=trust_remote_code)
    runner = TrialRunner(base, task_data)
    with console.status(f"training the super-adapter of {search_space.spec.name} on {task_data.name}"):
        oneshot = load_or_train_super_adapter(runner, search_space, fidelity, TrainingConfig(), seed, learning_rate=lr)
    super_adapter = oneshot.super_adapter
    chosen, seen = [], set()
    for baseline in BASELINES:
        params, _ = baseline_params(search_space, baseline)
        if params is not None:
            chosen.append((f"baseline:{baseline.name}", super_adapter.screened(search_space.decode(params))))
    rng = np.random.default_rng(seed)
    chosen += [("drawn", super_adapter.draw(rng)) for _ in range(points)]
    trivial = runner.trivial_score(fidelity)
    scored = []
    with console.status(f"scoring {len(chosen)} configurations"):
        for origin, point in chosen:
            if point.is_empty or point_key(point) in seen:
                continue
            seen.add(point_key(point))
            metrics = oneshot.score(point)
            scored.append((origin, point, Screened({}, point.describe(), metrics[RANK_BY], metrics[oneshot.metric],
                                                   count_trainable_params(point, model_config),
                                                   trivial.is_trivial(metrics[oneshot.metric]))))
    best = best_candidates([s for _, _, s in scored], export)
    exported = [(origin, point, s) for origin, point, s in scored if any(s is b for b in best)]

    def write(staging: Path) -> None:
        for index, (_, point, _) in enumerate(exported):
            folder = staging / f"slice-{index}"
            super_adapter.extract(point, base.fresh_copy(seed)).save_pretrained(folder)
            point.save(folder / "point.yaml")
        (staging / SUMMARY_FILE).write_text(json.dumps({
            "model": model, "task": task_data.name, "space": search_space.source, "metric": oneshot.metric,
            "cached": oneshot.cached, "meta": oneshot.meta, "trivial": trivial.value,
            "scores": [{"origin": origin, "point": point.to_dict(), "description": s.description,
                        "params": s.adapter_params, "score": s.score, "loss": s.loss, "trivial": s.trivial,
                        "exported": next((f"slice-{i}" for i, e in enumerate(exported) if e[2] is s), None)}
                       for origin, point, s in scored]}, indent=2, default=str))

    _check_out(out)
    write_dir(out, write)
    table = Table(title=f"one-shot {oneshot.metric} on {task_data.name} (trivial {trivial.value:.4f})")
    for column in ("origin", "configuration", "params", "loss", oneshot.metric, "exported"):
        table.add_column(column, justify="right" if column in ("params", "loss", oneshot.metric) else "left")
    for origin, _, s in sorted(scored, key=lambda e: e[2].loss):   # the screen's order: by one-shot loss
        folder = next((f"slice-{i}" for i, e in enumerate(exported) if e[2] is s), "")
        table.add_row(origin, s.description, f"{s.adapter_params:,}", f"{s.loss:.4f}",
                      f"{s.score:.4f}" + (" (trivial)" if s.trivial else ""), folder)
    Console().print(table)
    meta = oneshot.meta
    how = ("read from the cache" if oneshot.cached
           else f"trained in {meta['total_seconds']:.1f} s ({meta['steps']} steps)")
    console.print(f"super-adapter {how}: {meta['largest']}; left out: "
                  + (", ".join(f"{m} ({why})" for m, why in meta["left_out"].items()) or "nothing"))
    slices = {0: "", 1: ", slice-0/"}.get(len(exported), f", slice-0/ .. slice-{len(exported) - 1}/")
    console.print(f"wrote {out} (summary.json{slices})")

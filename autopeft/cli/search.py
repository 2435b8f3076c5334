"""``autopeft search``, ``autopeft export`` and ``autopeft report``: thin shells over the library."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from autopeft.cli.options import STRATEGY_CHOICES, TASK_FLAGS, FlagGroup, flag_group
from autopeft.cli.output import console
from autopeft.errors import Interrupted
from autopeft.search.objectives import COST_OBJECTIVES
from autopeft.search.priors import PRIORS
from autopeft.search.samplers import SAMPLERS


def _format_count(value: float) -> str:
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.0f}"


def _format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def front_table(front, objectives, title: str) -> Table:
    table = Table(title=title)
    table.add_column("trial")
    for objective in objectives:
        table.add_column(f"{objective.name} {'↑' if objective.maximize else '↓'}", justify="right")
    table.add_column("point")
    for record in front:
        cells = []
        for objective in objectives:
            value = record.values[objective.name]
            std = (record.attrs.get("values_std") or {}).get(objective.name)
            text = _format_count(value) if objective.name == "params" else f"{value:.4g}"
            cells.append(text + (f" ± {std:.2g}" if std and objective.name != "params" else ""))
        table.add_row(record.label, *cells, record.attrs.get("description", ""))
    return table


class RichObserver:
    """Trials done, the current Pareto front and the ETA, on stderr."""

    def __init__(self, progress: Progress, task_id):
        self.progress = progress
        self.task_id = task_id

    def on_note(self, message: str) -> None:
        self.progress.console.print(f"[dim]note:[/dim] {escape(message)}", soft_wrap=True)  # logs keep one line each

    def on_trial(self, record, progress) -> None:
        objectives = progress.objectives
        metric = objectives[0]
        if record.values is not None:
            values = record.values
            outcome = ", ".join(
                f"{o.name} {_format_count(values[o.name]) if o.name == 'params' else format(values[o.name], '.4g')}"
                for o in objectives)
            if record.trivial:  # never promoted, never on a front
                outcome += f" (trivial: not above the input-blind {format(record.trivial_metric or 0, '.4g')})"
        else:
            outcome = f"{record.state}: {record.attrs.get('reason', '')}"
        line = f"{record.label:>12} {record.attrs.get('description', '')} -> {outcome}"
        self.progress.console.print(escape(line), soft_wrap=True)
        best = max((r.values[metric.name] for r in progress.front), default=None) if metric.maximize else \
            min((r.values[metric.name] for r in progress.front), default=None)
        front = f"front {len(progress.front)} pts ({progress.front_stage})" if progress.front else "no front yet"
        best_text = f", best {metric.name} {best:.4g}" if best is not None else ""
        self.progress.update(
            self.task_id, completed=progress.new_trials, total=progress.target_trials,
            description=f"{front}{best_text} · ETA {_format_seconds(progress.eta_seconds)}",
        )


PRIOR_CHOICES = ", ".join(f"{name} ({prior.description})" for name, prior in PRIORS.items())

SETTINGS_FLAGS: FlagGroup = {
    "objectives": Annotated[Optional[str], typer.Option(
        help=f"Comma-separated: metric,params[,{','.join(n for n in COST_OBJECTIVES if n != 'params')}].")],
    "trials": Annotated[Optional[int], typer.Option(
        help="New configurations to train (default 30 unless --time-budget).")],
    "time_budget": Annotated[Optional[str], typer.Option(
        help="Stop starting trials after this long, e.g. 2h, 90m, 3600.")],
    "sampler": Annotated[Optional[str], typer.Option(help=f"auto | {' | '.join(SAMPLERS)}.")],
    "max_params": Annotated[Optional[str], typer.Option(
        help="Trainable-parameter budget: a count (1e5, 120k) or % of the model.")],
    "fidelity": Annotated[Optional[str], typer.Option(
        help="Successive-halving rungs: auto (default: 1/27, 1/9, 1/3, 1 of the full fidelity, the lowest "
             "rung raised when its baselines score at the trivial score or it ranks unlike the next rung) | "
             "fractions, e.g. 0.25,0.5,1 (fixed rungs).")],
    "fidelity_resource": Annotated[Optional[str], typer.Option(
        help="What the rungs scale: steps (default: optimiser steps of the full training, which promotions "
             "continue) | data | epochs (rungs train from scratch).")],
    "eta": Annotated[Optional[int], typer.Option(help="Keep the top 1/eta of a rung for the next one.")],
    "final_seeds": Annotated[Optional[int], typer.Option(
        help="Seeds to re-train each Pareto point at full fidelity (0: skip).")],
    "baselines": Annotated[Optional[bool], typer.Option(
        "--baselines/--no-baselines", help="Start with the named baselines the space can express.")],
    "quasi_random": Annotated[Optional[int], typer.Option(
        help="Sobol points after the baselines (default: about trials / 5).")],
    "train_examples": Annotated[Optional[float], typer.Option(
        help="Training examples at full fidelity: a count, or a fraction <= 1.")],
    "epochs": Annotated[Optional[float], typer.Option()],
    "max_steps": Annotated[Optional[int], typer.Option()],
    "max_length": Annotated[Optional[int], typer.Option()],
    "eval_examples": Annotated[Optional[int], typer.Option()],
    "generation_examples": Annotated[Optional[int], typer.Option()],
    "max_new_tokens": Annotated[Optional[int], typer.Option()],
    "batch_size": Annotated[Optional[int], typer.Option()],
    "lr": Annotated[Optional[float], typer.Option(
        "--lr", help="One learning rate for every module and the head, overriding the module types' defaults and "
                     "any rate the space searches (default: each module type's own rate).")],
    "bf16": Annotated[Optional[bool], typer.Option("--bf16/--no-bf16")],
    "seed": Annotated[Optional[int], typer.Option()],
    "storage": Annotated[Optional[str], typer.Option(
        help="Optuna storage URL or journal file (default: SQLite in the run folder).")],
    "study_name": Annotated[Optional[str], typer.Option(help="Default: <space>-<task>.")],
    "out": Annotated[Optional[Path], typer.Option("--out", "-o", help="Run folder (default: runs/<study-name>).")],
    "trust_remote_code": Annotated[Optional[bool], typer.Option("--trust-remote-code")],
    "deepspeed": Annotated[Optional[str], typer.Option(
        help="Train each trial with DeepSpeed: zero2 | zero3 | ds_config.json.")],
    "backend": Annotated[Optional[str], typer.Option(help="Where trials run: local (default) | ray.")],
    "ray_address": Annotated[Optional[str], typer.Option(
        help="local (start Ray here) | auto | host:port | ray://host:port.")],
    "cpus_per_trial": Annotated[Optional[float], typer.Option(
        help="Ray: CPUs per trial (per worker with --workers-per-trial).")],
    "gpus_per_trial": Annotated[Optional[float], typer.Option(help="Ray: GPUs per trial (fractions share a GPU).")],
    "workers_per_trial": Annotated[Optional[int], typer.Option(
        help="Ray: data-parallel workers per trial (Ray Train).")],
    "max_concurrent": Annotated[Optional[int], typer.Option(help="Ray: trials at once (default: as resources allow).")],
    "trial_retries": Annotated[Optional[int], typer.Option(
        help="Ray: restarts of a trial whose worker died (default 1).")],
    "ray_storage": Annotated[Optional[str], typer.Option(
        help="Ray: Tune's trial folders (shared disk for several nodes).")],
    "prior": Annotated[Optional[str], typer.Option(help=f"Comma-separated priors: {PRIOR_CHOICES}.")],
    "prior_batches": Annotated[Optional[int], typer.Option(help="Sensitivity: batches of gradient² (default 16).")],
    "prior_budgets": Annotated[Optional[str], typer.Option(
        help="Sensitivity: budgets of the SPT starting points (default 0.1%,0.5%,1%).")],
    "sensitive_layers": Annotated[Optional[int], typer.Option(
        help="Sensitivity: place modules only in the K most sensitive layers.")],
    "screen_evaluations": Annotated[Optional[int], typer.Option(
        help="One-shot: configurations the screen scores on the super-adapter (default 60; each costs one pass over "
             "the validation examples).")],
    "screen_candidates": Annotated[Optional[int], typer.Option(
        help="One-shot: the best screened configurations that start the search (default 6).")],
    "screen_epochs": Annotated[Optional[float], typer.Option(
        help="One-shot: the super-adapter's training in multiples of the full fidelity's epochs (default 1).")],
    "subset_strategy": Annotated[Optional[str], typer.Option(
        help=f"Data selection for each trial's training subset: {STRATEGY_CHOICES} "
             "(default: a seeded random draw per trial).")],
    "embedding_model": Annotated[Optional[str], typer.Option(
        help="Embeddings for data selection (default: the model being tuned).")],
    "warmup_pool": Annotated[Optional[list[str]], typer.Option(
        help="Dataset(s) whose texts each trial's adapter warms up on first (masked/causal LM); repeatable.")],
    "warmup_strategy": Annotated[Optional[str], typer.Option(
        help="How the warm-up texts are picked from the pool toward the task (default ot, GOT-D).")],
    "warmup_size": Annotated[Optional[str], typer.Option(help="Warm-up texts: a count, a fraction or N% of the pool.")],
    "warmup_epochs": Annotated[Optional[float], typer.Option(help="Warm-up epochs (default 1).")],
}
"""The search's settings beyond model, dataset, space and the task flags, named by their flat keys (see
:class:`autopeft.search.settings.SearchSettings`); None where not given: the config file's value or the default."""


@flag_group("task_flags", TASK_FLAGS)
@flag_group("settings_flags", SETTINGS_FLAGS)
def search(
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", help="Alias, local folder, .gguf file or Hub id.")] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", "-d", help="Local file/folder or Hub id.")] = None,
    space: Annotated[Optional[str], typer.Option("--space", help=(
        "Search-space YAML, or a packaged space: default (LoRA + serial/parallel adapters; the default), unified, "
        "autopeft, lora (see search_spaces/)."))] = None,
    config: Annotated[Optional[Path], typer.Option(
        "--config", help="YAML/TOML file with these settings; flags override it.")] = None,
    *,
    task_flags: dict[str, Any],
    settings_flags: dict[str, Any],
):
    """Search PEFT configurations for the best task metric at the fewest trainable parameters.

    Running the same command again on the same storage resumes the search.
    """
    import optuna

    from autopeft.search.run import prepare_search, run_search
    from autopeft.search.settings import merge_settings, read_run_config

    out = settings_flags["out"]
    flags = {"model": model, "dataset": dataset, "space": space, **task_flags, **settings_flags,
             "out": str(out) if out is not None else None}
    file_values = read_run_config(config) if config is not None else {}
    settings = merge_settings(file_values, flags, str(config) if config else "flags")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    setup = prepare_search(settings)  # every check that needs no model weights, before any output
    # no live bar where stderr is a log file: it would leave a spinner line behind; trial lines print either way
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=False, disable=not console.is_terminal) as progress:
        task_id = progress.add_task("loading model and data", total=setup.plan.trials)
        observer = RichObserver(progress, task_id)
        try:
            outcome, info = run_search(settings, observer, setup=setup)
        except KeyboardInterrupt:
            raise Interrupted(_resume_hint(setup)) from None
    title = f"Pareto front ({outcome.front_stage or 'none'}) — stopped: {outcome.stopped_because}"
    Console().print(front_table(outcome.front, info.objectives, title))
    if outcome.median_suggest_seconds is not None and outcome.median_trial_seconds:
        share = 100 * outcome.median_suggest_seconds / outcome.median_trial_seconds
        console.print(f"median suggestion {outcome.median_suggest_seconds:.2f} s = {share:.1f}% of the median trial "
                      f"({outcome.median_trial_seconds:.1f} s)")
    console.print(f"run folder: {info.run_dir}  (study '{info.study_name}' in {info.storage}); "
                  f"next: autopeft export {info.run_dir} / autopeft report {info.run_dir}", soft_wrap=True)


def _resume_hint(setup) -> str:
    """What Ctrl-C kept and the command that carries on (the same command line, on the same storage)."""
    import shlex
    import sys

    from autopeft.redact import mask_text, mask_url

    done = "no trial had finished"
    try:
        from autopeft.search.records import load_records
        from autopeft.search.storage import local_storage_path, open_storage

        path = local_storage_path(setup.storage_url)
        if path is not None and not path.exists():
            raise FileNotFoundError(path)  # not created yet: opening it would leave an empty one behind
        stages = load_records(open_storage(setup.storage_url), setup.study_name, setup.plan.objectives)
        finished = sum(1 for records in stages.values() for r in records if r.trained)
        if finished:
            done = f"{finished} finished trial(s) are saved"
    except Exception:  # the storage was never created (Ctrl-C while the model loaded)
        pass
    command = mask_text(shlex.join(["autopeft", *sys.argv[1:]])) if sys.argv[1:] else "the same autopeft search command"
    return (f"{done} in {mask_url(setup.storage_url)} (study '{setup.study_name}'); "
            f"resume with the same command: {command}")


RunDirArg = Annotated[Path, typer.Argument(help="Run folder of `autopeft search` (holds run.json).")]
StorageOpt = Annotated[Optional[str], typer.Option(help="Storage URL, when run.json could not keep it (credentials).")]


def export(
    run_dir: RunDirArg,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Default: RUN_DIR/export.")] = None,
    storage: StorageOpt = None,
    merged: Annotated[bool, typer.Option(
        "--merged", help="Also write each adapter folded into the base model (folder/merged).")] = False,
):
    """Write the Pareto-optimal adapters (PEFT folders), pareto.json and trials.csv."""
    from autopeft.export import export_run

    folder, results = export_run(run_dir, out, storage, merged=merged)
    title = f"exported Pareto front ({results.front_stage})"
    Console().print(front_table(results.front, results.info.objectives, title))
    console.print(f"wrote {folder}")


def report(
    run_dir: RunDirArg,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Default: RUN_DIR/report.")] = None,
    storage: StorageOpt = None,
):
    """Pareto plot (PNG + interactive HTML), hypervolume vs trials, layer heatmap, summary.md."""
    from autopeft.report import write_report

    folder, finished = write_report(run_dir, out, storage)
    console.print(f"wrote {folder}" + ("" if finished else " (no trial finished: summary.md says why; no plots)"))

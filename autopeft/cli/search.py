"""``autopeft search``, ``autopeft export`` and ``autopeft report``: thin shells over the library."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from autopeft.cli.options import STRATEGY_CHOICES, TASK_FLAGS, FlagGroup, flag_group, in_panels
from autopeft.cli.output import console, current_verbosity
from autopeft.errors import Interrupted
from autopeft.search.objectives import COST_OBJECTIVES
from autopeft.search.priors import PRIORS
from autopeft.search.progress import format_count
from autopeft.search.samplers import SAMPLERS


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
            text = format_count(value) if objective.name == "params" else f"{value:.4g}"
            cells.append(text + (f" ± {std:.2g}" if std and objective.name != "params" else ""))
        table.add_row(record.label, *cells, record.attrs.get("description", ""))
    return table


class RichObserver:
    """The live display on stderr: new configurations trained (then the final stage's seeds), the front, the best
    metric, an ETA over everything left, and the current trial's step and loss. Notes and trial lines reach the
    terminal as log records (:class:`autopeft.cli.output.ConsoleHandler`), so they land in the run's log file too."""

    def __init__(self, progress: Progress, task_id, step_id):
        self.progress = progress
        self.task_id = task_id
        self.step_id = step_id
        self.last_step = -1

    def on_note(self, message: str) -> None:
        pass

    def on_trial(self, record, progress) -> None:
        metric = progress.objectives[0]
        best = max((r.values[metric.name] for r in progress.front), default=None) if metric.maximize else \
            min((r.values[metric.name] for r in progress.front), default=None)
        front = f"front {len(progress.front)} pts ({progress.front_stage})" if progress.front else "no front yet"
        best_text = f", best {metric.name} {best:.4g}" if best is not None else ""
        self.progress.update(
            self.task_id, completed=progress.new_trials, total=progress.target_trials,
            description=f"search: {front}{best_text} · ETA {_format_seconds(progress.eta_seconds)}",
        )

    def on_stage(self, progress) -> None:
        self.progress.update(
            self.task_id, completed=progress.final_done, total=progress.final_total,
            description=f"final stage: {len(progress.front)} front point(s) × {progress.final_seeds} seed(s) at full "
                        f"fidelity · ETA {_format_seconds(progress.eta_seconds)}",
        )

    def on_step(self, step: int, total: int, loss: float) -> None:
        if step < self.last_step:  # the next trial: its own clock
            self.progress.reset(self.step_id)
        if self.last_step == -1:
            self.progress.update(self.task_id, description="search: training the first configurations")
        self.last_step = step
        self.progress.update(self.step_id, completed=step, total=total, visible=True,
                             description=f"  current trial: step {step}/{total}, loss {loss:.4g}")


MAIN_PANEL = "Model, data and space"

PRIOR_CHOICES = ", ".join(f"{name} ({prior.description})" for name, prior in PRIORS.items())

SETTINGS_FLAGS: FlagGroup = {
    "objectives": Annotated[Optional[str], typer.Option(
        help=f"Comma-separated: metric,params[,{','.join(n for n in COST_OBJECTIVES if n != 'params')}].")],
    "trials": Annotated[Optional[int], typer.Option(
        help="New configurations to train (default 30 unless --time-budget).")],
    "time_budget": Annotated[Optional[str], typer.Option(
        help="Stop starting trials after this long, e.g. 2h, 90m, 3600.")],
    "sampler": Annotated[Optional[str], typer.Option(help=(
        f"auto (default: botorch's EHVI where BoTorch is installed, else Optuna's GP) | {' | '.join(SAMPLERS)}."))],
    "max_params": Annotated[Optional[str], typer.Option(
        help="Trainable-parameter budget: a count (1e5, 120k) or % of the model.")],
    "fidelity": Annotated[Optional[str], typer.Option(
        help="Successive-halving rungs: auto (default: 1/27, 1/9, 1/3, 1 of the full fidelity, the lowest "
             "rung raised when its baselines score at the trivial score or it ranks unlike the next rung) | "
             "fractions, e.g. 0.25,0.5,1 (fixed rungs).")],
    "fidelity_resource": Annotated[Optional[str], typer.Option(
        help="What the rungs scale: steps (default: optimiser steps of the full training, which promotions "
             "continue) | data | epochs (rungs train from scratch).")],
    "eta": Annotated[Optional[int], typer.Option(help="Keep the top 1/eta of a rung for the next one (default 3).")],
    "final_seeds": Annotated[Optional[int], typer.Option(
        help="Seeds to re-train each Pareto point at full fidelity (default 3; 0: skip).")],
    "baselines": Annotated[Optional[bool], typer.Option(
        "--baselines/--no-baselines", help="Start with the named baselines the space can express.")],
    "quasi_random": Annotated[Optional[int], typer.Option(
        help="Sobol points after the baselines (default: about trials / 5).")],
    "train_examples": Annotated[Optional[float], typer.Option(
        help="Training examples at full fidelity: a count, or a fraction <= 1 (default: the whole train split).")],
    "epochs": Annotated[Optional[float], typer.Option(help="Epochs at full fidelity (default 1).")],
    "max_steps": Annotated[Optional[int], typer.Option(
        help="Optimiser steps at full fidelity, instead of --epochs (default: from the epochs).")],
    "max_length": Annotated[Optional[int], typer.Option(help="Tokens per example; longer ones are cut (default 128).")],
    "eval_examples": Annotated[Optional[int], typer.Option(
        help="Validation examples each trial is scored on (default: the whole validation split, at most 2,000).")],
    "generation_examples": Annotated[Optional[int], typer.Option(
        help="Causal LM: validation examples also scored by greedy generation (default 0: loss only).")],
    "max_new_tokens": Annotated[Optional[int], typer.Option(
        help="Causal LM: generated tokens per example (default 128).")],
    "batch_size": Annotated[Optional[int], typer.Option(help="Training batch size (default 32).")],
    "lr": Annotated[Optional[float], typer.Option(
        "--lr", help="One learning rate for every module and the head, overriding the module types' defaults and "
                     "any rate the space searches (default: each module type's own rate).")],
    "bf16": Annotated[Optional[bool], typer.Option(
        "--bf16/--no-bf16", help="bf16 autocast in training (default off; faster on GPUs and for larger models).")],
    "seed": Annotated[Optional[int], typer.Option(
        help="Seed of the sampler, the data draws and the first training seed (default 0).")],
    "storage": Annotated[Optional[str], typer.Option(
        help="Optuna storage URL or journal file (default: SQLite in the run folder).")],
    "study_name": Annotated[Optional[str], typer.Option(help="Default: <space>-<task>.")],
    "out": Annotated[Optional[Path], typer.Option("--out", "-o", help="Run folder (default: runs/<study-name>).")],
    "tracking": Annotated[Optional[str], typer.Option(
        help="Also log each trial as a run of: mlflow | wandb (comma-separated for both; the mlflow and wandb "
             "extras). MLflow writes to RUN/mlflow.db unless --tracking-uri, W&B offline to RUN/wandb unless "
             "WANDB_MODE=online.")],
    "tracking_uri": Annotated[Optional[str], typer.Option(
        help="MLflow tracking URI for --tracking mlflow (default: sqlite:///RUN/mlflow.db).")],
    "trust_remote_code": Annotated[Optional[bool], typer.Option(
        "--trust-remote-code", help="Allow model code from the checkpoint (off by default).")],
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
    "screen_examples": Annotated[Optional[int], typer.Option(
        help="One-shot: score each screened configuration on the first N of the trials' validation examples "
             "(default: all of them; fewer is cheaper and noisier).")],
    "screen_candidates": Annotated[Optional[int], typer.Option(
        help="One-shot: the best screened configurations that start the search (default 6).")],
    "screen_epochs": Annotated[Optional[float], typer.Option(
        help="One-shot: the super-adapter's training in multiples of the full fidelity's epochs (default 1).")],
    "inherit_weights": Annotated[Optional[bool], typer.Option(
        "--inherit-weights/--no-inherit-weights",
        help="One-shot: each trial starts from its slice of the super-adapter instead of from scratch.")],
    "subset_strategy": Annotated[Optional[str], typer.Option(
        help=f"Data selection for each trial's training subset: {STRATEGY_CHOICES} "
             "(default: a seeded random draw per trial).")],
    "embedding_model": Annotated[Optional[str], typer.Option(
        help="Embeddings for data selection (default: the model being tuned; 'tuned': that model after a short "
             "LoRA fit on the task, as GOT-D embeds; cached).")],
    "warmup_pool": Annotated[Optional[list[str]], typer.Option(
        help="Dataset(s) whose texts each trial's adapter warms up on first (masked/causal LM); repeatable.")],
    "warmup_strategy": Annotated[Optional[str], typer.Option(
        help="How the warm-up texts are picked from the pool toward the task (default ot, GOT-D).")],
    "warmup_size": Annotated[Optional[str], typer.Option(help="Warm-up texts: a count, a fraction or N% of the pool.")],
    "warmup_epochs": Annotated[Optional[float], typer.Option(help="Warm-up epochs (default 1).")],
}
in_panels(SETTINGS_FLAGS, {
    "Budget and objectives": ("objectives", "trials", "time_budget", "max_params"),
    "Search strategy": ("sampler", "baselines", "quasi_random", "seed"),
    "Fidelity (how much a trial trains)": ("fidelity", "fidelity_resource", "eta", "final_seeds", "train_examples",
                                           "epochs", "max_steps", "max_length", "eval_examples",
                                           "generation_examples", "max_new_tokens", "batch_size", "lr", "bf16"),
    "Run folder and storage": ("out", "storage", "study_name", "tracking", "tracking_uri"),
    MAIN_PANEL: ("trust_remote_code",),
    "Backends: Ray and DeepSpeed": ("backend", "ray_address", "cpus_per_trial", "gpus_per_trial",
                                    "workers_per_trial", "max_concurrent", "trial_retries", "ray_storage",
                                    "deepspeed"),
    "Priors": ("prior", "prior_batches", "prior_budgets", "sensitive_layers", "screen_evaluations",
               "screen_examples", "screen_candidates", "screen_epochs", "inherit_weights"),
    "Data selection": ("subset_strategy", "embedding_model", "warmup_pool", "warmup_strategy", "warmup_size",
                       "warmup_epochs"),
}, default="Other")
"""The search's settings beyond model, dataset, space and the task flags, named by their flat keys (see
:class:`autopeft.search.settings.SearchSettings`); None where not given: the config file's value or the default."""


@flag_group("task_flags", TASK_FLAGS)
@flag_group("settings_flags", SETTINGS_FLAGS)
def search(
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", rich_help_panel=MAIN_PANEL,
        help="Alias (minilm, smollm2-135m), local folder, .gguf file or Hub id. Without --model and --dataset: "
             "the demo search (MiniLM on 2,000 SST-2 examples, 12 configurations, runs/demo).")] = None,
    dataset: Annotated[Optional[str], typer.Option(
        "--dataset", "-d", rich_help_panel=MAIN_PANEL,
        help="Local file/folder, an alias (sst2, rte, trec: the local copy, else the Hub's) or Hub id.")] = None,
    space: Annotated[Optional[str], typer.Option("--space", rich_help_panel=MAIN_PANEL, help=(
        "Search-space YAML, or a packaged space by name (autopeft space list): default (LoRA + serial/parallel "
        "adapters; the default), unified, autopeft, lora."))] = None,
    config: Annotated[Optional[Path], typer.Option(
        "--config", rich_help_panel=MAIN_PANEL,
        help="YAML/TOML file of these settings, keyed like the flags (max_length: 64); flags override it.")] = None,
    *,
    task_flags: dict[str, Any],
    settings_flags: dict[str, Any],
):
    """Search PEFT configurations for the best task metric at the fewest trainable parameters.

    Running the same command again on the same storage resumes the search.
    """
    from autopeft.search.run import prepare_search, run_search
    from autopeft.search.settings import is_demo, merge_settings, read_run_config

    out = settings_flags["out"]
    flags = {"model": model, "dataset": dataset, "space": space, **task_flags, **settings_flags,
             "out": str(out) if out is not None else None}
    file_values = read_run_config(config) if config is not None else {}
    settings = merge_settings(file_values, flags, str(config) if config else "flags")
    if is_demo(file_values, flags):
        console.print(f"no --model or --dataset: the demo search, {settings.model} on "
                      f"{settings.fidelity.train_examples:,.0f} examples of {_dataset_where(settings.task.dataset)}, "
                      f"{settings.trials} configurations of the '{settings.space}' space, run folder {settings.out} "
                      "(autopeft search --help for the flags)", soft_wrap=True)
    setup = prepare_search(settings)  # every check that needs no model weights, before any output
    from autopeft.logs import LOG_FILE, log_file
    from autopeft.search.run import RUN_FILE
    from autopeft.trial.loop import listen_to_steps

    # no live bar where stderr is a log file (it would leave a spinner line behind) or with --quiet; the trial
    # lines print either way (as log records), and every line also goes to the run folder's log file
    with log_file(setup.run_dir / LOG_FILE, ready=(setup.run_dir / RUN_FILE).is_file), \
            Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                     TimeElapsedColumn(), console=console, transient=False,
                     disable=not console.is_terminal or current_verbosity() < 0) as progress:
        task_id = progress.add_task("loading model and data", total=setup.plan.trials)
        step_id = progress.add_task("  current trial", total=None, visible=False)
        observer = RichObserver(progress, task_id, step_id)
        try:
            with listen_to_steps(observer.on_step):
                outcome, info = run_search(settings, observer, setup=setup)
        except KeyboardInterrupt:
            raise Interrupted(_resume_hint(setup)) from None
        progress.update(step_id, visible=False)
    title = f"Pareto front ({outcome.front_stage or 'none'}) — stopped: {outcome.stopped_because}"
    Console().print(front_table(outcome.front, info.objectives, title))
    if outcome.median_suggest_seconds is not None and outcome.median_trial_seconds:
        share = 100 * outcome.median_suggest_seconds / outcome.median_trial_seconds
        console.print(f"median suggestion {outcome.median_suggest_seconds:.2f} s = {share:.1f}% of the median trial "
                      f"({outcome.median_trial_seconds:.1f} s)")
    console.print(f"run folder: {info.run_dir}  (study '{info.study_name}' in {info.storage}); "
                  f"next: autopeft export {info.run_dir} / autopeft report {info.run_dir}", soft_wrap=True)


def _dataset_where(name: str) -> str:
    from autopeft.data.aliases import resolve_dataset_alias

    alias = resolve_dataset_alias(name)
    if alias is None:
        return name
    return f"{name} ({alias.dataset})" if alias.local else f"{name} (the Hub's {alias.dataset}, {alias.dataset_config})"


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
        "--merged", help="Also write each adapter folded into the base model (folder/merged); "
                         "points that cannot be folded are named, with the reason.")] = False,
):
    """Write the Pareto-optimal adapters (PEFT folders, each with a model card), pareto.json and trials.csv."""
    from autopeft.export import export_run

    # one line per point --merged could not fold in, and why (stderr, like every note)
    folder, results = export_run(run_dir, out, storage, merged=merged,
                                 notify=lambda line: console.print(escape(line), soft_wrap=True))
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
    missing = " (no Pareto point: summary.md says why; no Pareto plot or heatmap)"
    console.print(f"wrote {folder}" + ("" if finished else missing))

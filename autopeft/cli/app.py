"""Typer app; each command parses flags, calls the library, and prints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from autopeft.errors import AutopeftError

app = typer.Typer(
    name="autopeft",
    help="Find the best parameter-efficient fine-tuning configuration for a model and a task.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            text = version("autopeft")
        except PackageNotFoundError:  # a source tree that was never installed
            from autopeft import __version__ as text
        typer.echo(f"autopeft {text}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Find the best parameter-efficient fine-tuning configuration for a model and a task."""

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Alias (minilm, smollm2-135m), local folder, .gguf file or Hub id.")]
DatasetOpt = Annotated[str, typer.Option("--dataset", "-d", help="Local file/folder (csv, tsv, json, jsonl, parquet) or Hub id.")]
DatasetConfigOpt = Annotated[Optional[str], typer.Option("--dataset-config", help="Hub dataset configuration, e.g. sst2.")]
TaskOpt = Annotated[Optional[str], typer.Option("--task", help="classification | regression | causal_lm (default: detected).")]
TextColOpt = Annotated[Optional[str], typer.Option("--text-column")]
PairColOpt = Annotated[Optional[str], typer.Option("--text-pair-column")]
LabelColOpt = Annotated[Optional[str], typer.Option("--label-column")]
PromptColOpt = Annotated[Optional[list[str]], typer.Option("--prompt-column", help="Causal LM prompt column(s); repeat for several.")]
ResponseColOpt = Annotated[Optional[str], typer.Option("--response-column")]
MetricOpt = Annotated[Optional[str], typer.Option("--metric", help="Primary metric (default: per task).")]
TrustOpt = Annotated[bool, typer.Option("--trust-remote-code", help="Allow model code from the checkpoint (off by default).")]


def load_task_from_flags(dataset, dataset_config, task, text_column, text_pair_column, label_column,
                         prompt_column, response_column, metric, seed):
    from autopeft.data import load_task

    return load_task(
        dataset, dataset_config=dataset_config, task=task, text_column=text_column,
        text_pair_column=text_pair_column, label_column=label_column,
        prompt_columns=prompt_column or None, response_column=response_column, metric=metric, seed=seed,
    )


def read_config_file(path: Path) -> dict:
    """A JSON or YAML mapping; a broken file is a one-line error naming it."""
    import yaml

    if not path.is_file():
        raise AutopeftError(f"config file '{path}' does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))  # YAML is a superset of JSON
    except (UnicodeDecodeError, OSError) as exc:
        raise AutopeftError(f"config file '{path}' is not a readable text file ({type(exc).__name__})") from None
    except yaml.YAMLError as exc:
        raise AutopeftError(f"config file '{path}' is not valid JSON/YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise AutopeftError(f"config file '{path}' must hold a mapping")
    return data


def peft_config_from_flags(peft_config: Optional[Path], kind: str, lora_r: int, lora_alpha: int, lora_targets):
    """The PEFT config of a single trial: a file, or LoRA from flags."""
    import peft

    import autopeft  # noqa: F401  (registers autopeft's own PEFT methods)

    task_type = "CAUSAL_LM" if kind == "causal_lm" else "SEQ_CLS"
    if peft_config is not None:
        import dataclasses

        from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

        data = read_config_file(peft_config)
        data.setdefault("task_type", task_type)
        if "peft_type" not in data:
            raise AutopeftError(f"PEFT config '{peft_config}' has no 'peft_type' (e.g. \"peft_type\": \"LORA\")")
        config_cls = PEFT_TYPE_TO_CONFIG_MAPPING.get(data["peft_type"], peft.PeftConfig)
        # PEFT drops unknown keys with a warning (for configs of newer versions); a typo must not train the default
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(config_cls)})
        if unknown:
            raise AutopeftError(f"PEFT config '{peft_config}' has unknown key(s) for {config_cls.__name__}: "
                                f"{', '.join(unknown)}")
        try:
            return peft.PeftConfig.from_peft_type(**data)
        except (KeyError, TypeError, ValueError) as exc:
            raise AutopeftError(f"PEFT config '{peft_config}' is invalid: {exc}") from None
    return peft.LoraConfig(
        r=lora_r, lora_alpha=lora_alpha, lora_dropout=0.1, task_type=task_type,
        target_modules=lora_targets.split(",") if lora_targets else None,
    )


@app.command()
def trial(
    model: ModelOpt,
    dataset: DatasetOpt,
    dataset_config: DatasetConfigOpt = None,
    task: TaskOpt = None,
    text_column: TextColOpt = None,
    text_pair_column: PairColOpt = None,
    label_column: LabelColOpt = None,
    prompt_column: PromptColOpt = None,
    response_column: ResponseColOpt = None,
    metric: MetricOpt = None,
    peft_config: Annotated[Optional[Path], typer.Option("--peft-config", help="PEFT config (adapter_config.json-style JSON/YAML).")] = None,
    point: Annotated[Optional[Path], typer.Option("--point", help="A search-space point YAML (export's point.yaml, an SPT point).")] = None,
    lora_r: Annotated[int, typer.Option(min=1, help="LoRA rank when no --peft-config is given.")] = 8,
    lora_alpha: Annotated[int, typer.Option(min=1)] = 16,
    lora_targets: Annotated[Optional[str], typer.Option(help="Comma-separated target modules (default: PEFT's for the architecture).")] = None,
    train_examples: Annotated[Optional[float], typer.Option(help="Training examples: a count, or a fraction <= 1.")] = None,
    epochs: Annotated[float, typer.Option()] = 1.0,
    max_steps: Annotated[Optional[int], typer.Option()] = None,
    max_length: Annotated[int, typer.Option()] = 128,
    eval_examples: Annotated[Optional[int], typer.Option()] = None,
    generation_examples: Annotated[int, typer.Option(help="Causal LM: exact match from greedy generation on N examples.")] = 0,
    max_new_tokens: Annotated[int, typer.Option()] = 128,
    batch_size: Annotated[int, typer.Option()] = 32,
    lr: Annotated[float, typer.Option("--lr")] = 5e-4,
    bf16: Annotated[bool, typer.Option(help="bf16 autocast.")] = False,
    deepspeed: Annotated[Optional[str], typer.Option(help="Train with DeepSpeed: zero2 | zero3 | ds_config.json.")] = None,
    seed: Annotated[int, typer.Option(min=0)] = 0,
    test: Annotated[bool, typer.Option("--test", help="Also evaluate the reported test split.")] = False,
    save_dir: Annotated[Optional[Path], typer.Option(help="Save the trained adapter here.")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the result record here.")] = None,
    trust_remote_code: TrustOpt = False,
):
    """Train and evaluate one PEFT configuration (one trial)."""
    from autopeft.models import check_adapter_fits, get_base_model, load_model_config
    from autopeft.trial import Fidelity, TrainingConfig, TrialRunner
    from autopeft.trial.distributed import resolve_deepspeed_config

    # cheapest checks first: flags, files, data, the model's config; the weights load last
    if point is not None and peft_config is not None:
        raise AutopeftError("give --point or --peft-config, not both")
    try:
        fidelity = Fidelity(
            train_examples=train_examples, epochs=epochs, max_steps=max_steps, max_length=max_length,
            eval_examples=eval_examples, generation_examples=generation_examples, max_new_tokens=max_new_tokens,
            batch_size=batch_size,
        )
        training = TrainingConfig(learning_rate=lr, bf16=bf16, deepspeed=deepspeed)
    except ValueError as exc:
        raise AutopeftError(str(exc)) from exc
    if deepspeed is not None:
        resolve_deepspeed_config(deepspeed)
    parsed_point = None
    if point is not None:
        from autopeft.space import PeftPoint

        parsed_point = PeftPoint.from_file(point)
    task_data = load_task_from_flags(dataset, dataset_config, task, text_column, text_pair_column, label_column,
                                     prompt_column, response_column, metric, seed)
    spec = task_data.spec
    model_config = load_model_config(model, trust_remote_code=trust_remote_code)
    if parsed_point is not None:
        from autopeft.builders import build_peft_config

        config = build_peft_config(parsed_point, model_config, spec.kind)
    else:
        config = peft_config_from_flags(peft_config, spec.kind, lora_r, lora_alpha, lora_targets)
    check_adapter_fits(model_config, spec.kind, config, num_labels=max(spec.num_labels, 1))
    for output in (json_out, save_dir):
        if output is not None and output.exists() and (output.is_dir() != (output is save_dir)):
            raise AutopeftError(f"'{output}' exists and is not a {'folder' if output is save_dir else 'file'}")
    with console.status(f"loading {model}"):
        base = get_base_model(model, spec.kind, num_labels=max(spec.num_labels, 1), trust_remote_code=trust_remote_code)
    runner = TrialRunner(base, task_data)
    with console.status(f"training {config.peft_type.value} on {task_data.name}"):
        result = runner.run(config, fidelity, seed, training, evaluate_test=test, save_dir=save_dir)
    if json_out is not None:  # the record is written for failed trials too: it says why
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result.to_dict(), indent=2))
    if not result.ok:
        raise AutopeftError(f"the trial did not finish ({result.status}): {(result.reason or '').removeprefix('error: ')}")
    _print_result(result, spec.metric)


def _print_result(result, metric: str) -> None:
    table = Table(title=f"trial: {result.status}" + (f" ({result.reason})" if result.reason else ""))
    table.add_column("measure")
    table.add_column("value", justify="right")
    for name, value in result.metrics.items():
        table.add_row(("* " if name == metric else "") + f"validation {name}", f"{value:.4f}")
    for name, value in result.test_metrics.items():
        table.add_row(f"test {name}", f"{value:.4f}")
    table.add_row("adapter params", f"{result.adapter_params:,}")
    table.add_row("trainable params (with head)", f"{result.trainable_params:,}")
    table.add_row("train examples / steps", f"{result.train_examples:,} / {result.steps:,}")
    table.add_row("train s (ex/s)", f"{result.train_seconds:.1f} ({result.train_examples_per_second:.1f})")
    table.add_row("eval s (ex/s)", f"{result.eval_seconds:.1f} ({result.eval_examples_per_second:.1f})")
    table.add_row("peak memory MB", f"{result.peak_memory_mb:.0f}")
    Console().print(table)
from autopeft.cli import space as _space_commands  # noqa: E402,F401  (registers 'autopeft space')
from autopeft.cli import search as _search_commands  # noqa: E402,F401  (registers search, export, report)
from autopeft.cli import priors as _prior_commands  # noqa: E402,F401  (registers sensitivity)
from autopeft.cli import heads as _head_commands  # noqa: E402,F401  (registers select-heads)
from autopeft.cli import data as _data_commands  # noqa: E402,F401  (registers select-data)

"""``autopeft trial``: train and evaluate one PEFT configuration."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from autopeft.cli.options import TASK_FLAGS, DatasetOpt, ModelOpt, TrustOpt, flag_group
from autopeft.cli.output import console
from autopeft.errors import AutopeftError
from autopeft.search.settings import TaskSettings

log = logging.getLogger("autopeft.trial")


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


@flag_group("task_flags", TASK_FLAGS)
def trial(
    model: ModelOpt,
    dataset: DatasetOpt,
    task_flags: dict[str, Any],
    peft_config: Annotated[Optional[Path], typer.Option(
        "--peft-config", help="PEFT config (adapter_config.json-style JSON/YAML).")] = None,
    point: Annotated[Optional[Path], typer.Option(
        "--point", help="A search-space point YAML (export's point.yaml, an SPT point).")] = None,
    lora_r: Annotated[int, typer.Option(min=1, help="LoRA rank when no --peft-config is given.")] = 8,
    lora_alpha: Annotated[int, typer.Option(min=1)] = 16,
    lora_targets: Annotated[Optional[str], typer.Option(
        help="Comma-separated target modules (default: PEFT's for the architecture).")] = None,
    train_examples: Annotated[Optional[float], typer.Option(
        help="Training examples: a count, or a fraction <= 1.")] = None,
    epochs: Annotated[float, typer.Option()] = 1.0,
    max_steps: Annotated[Optional[int], typer.Option()] = None,
    max_length: Annotated[int, typer.Option()] = 128,
    eval_examples: Annotated[Optional[int], typer.Option()] = None,
    generation_examples: Annotated[int, typer.Option(
        help="Causal LM: exact match from greedy generation on N examples.")] = 0,
    max_new_tokens: Annotated[int, typer.Option()] = 128,
    batch_size: Annotated[int, typer.Option()] = 32,
    lr: Annotated[float, typer.Option("--lr")] = 5e-4,
    bf16: Annotated[bool, typer.Option(help="bf16 autocast.")] = False,
    deepspeed: Annotated[Optional[str], typer.Option(
        help="Train with DeepSpeed: zero2 | zero3 | ds_config.json.")] = None,
    seed: Annotated[int, typer.Option(min=0)] = 0,
    test: Annotated[bool, typer.Option("--test", help="Also evaluate the reported test split.")] = False,
    save_dir: Annotated[Optional[Path], typer.Option(help="Save the trained adapter here.")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the result record here.")] = None,
    trust_remote_code: TrustOpt = False,
):
    """Train and evaluate one PEFT configuration (one trial)."""
    from autopeft.models import check_adapter_fits, check_weights_present, get_base_model, load_model_config
    from autopeft.trial import Fidelity, TrainingConfig, TrialRunner
    from autopeft.trial.distributed import resolve_deepspeed_config

    # cheapest checks first: flags, files, data, the model's config; the weights load last
    if point is not None and peft_config is not None:
        raise AutopeftError("give --point or --peft-config, not both")
    fidelity = Fidelity(
        train_examples=train_examples, epochs=epochs, max_steps=max_steps, max_length=max_length,
        eval_examples=eval_examples, generation_examples=generation_examples, max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )
    training = TrainingConfig(learning_rate=lr, bf16=bf16, deepspeed=deepspeed)
    if deepspeed is not None:
        resolve_deepspeed_config(deepspeed)
    parsed_point = None
    if point is not None:
        from autopeft.space import PeftPoint

        parsed_point = PeftPoint.from_file(point)
    task_data = TaskSettings(dataset=dataset, **task_flags).load(seed)
    spec = task_data.spec
    model_config = load_model_config(model, trust_remote_code=trust_remote_code)
    check_weights_present(model)
    if parsed_point is not None:
        from autopeft.builders import build_peft_config

        config = build_peft_config(parsed_point, model_config, spec.kind)
    else:
        config = peft_config_from_flags(peft_config, spec.kind, lora_r, lora_alpha, lora_targets)
    check_adapter_fits(model_config, spec.kind, config, num_labels=max(spec.num_labels, 1))
    for output in (json_out, save_dir):
        if output is not None and output.exists() and (output.is_dir() != (output is save_dir)):
            raise AutopeftError(f"'{output}' exists and is not a {'folder' if output is save_dir else 'file'}")
    from autopeft.trial.loop import listen_to_steps

    log.info(f"loading {model}")
    with console.status(f"loading {model}"):
        base = get_base_model(model, spec.kind, num_labels=max(spec.num_labels, 1), trust_remote_code=trust_remote_code)
    runner = TrialRunner(base, task_data)
    what = f"training {config.peft_type.value} on {task_data.name}"
    log.info(f"{what} ({len(task_data.train):,} training examples available)")
    with console.status(what) as status, listen_to_steps(
            lambda step, total, loss: status.update(f"{what}: step {step}/{total}, loss {loss:.4g}")):
        result = runner.run(config, fidelity, seed, training, evaluate_test=test, save_dir=save_dir)
    if result.ok:
        log.info(f"trained {result.steps:,} steps in {result.train_seconds:.1f} s (final loss "
                 f"{result.final_train_loss:.4g}), evaluated in {result.eval_seconds:.1f} s")
    if json_out is not None:  # the record is written for failed trials too: it says why
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result.to_dict(), indent=2))
    if not result.ok:
        reason = (result.reason or "").removeprefix("error: ")
        raise AutopeftError(f"the trial did not finish ({result.status}): {reason}")
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

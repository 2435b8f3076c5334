"""Typer options that several commands share, defined once, and :func:`flag_group`, which adds a set of them.

Lists of names in help texts (selection strategies, priors) come from their registries, so a new
strategy or prior shows up in ``--help`` without touching the CLI.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any, Optional

import typer

from autopeft.priors.selection import STRATEGIES

STRATEGY_CHOICES = " | ".join(STRATEGIES)

ModelOpt = Annotated[str, typer.Option(
    "--model", "-m", help="Alias (minilm, smollm2-135m), local folder, .gguf file or Hub id.")]
DatasetOpt = Annotated[str, typer.Option(
    "--dataset", "-d", help="Local file/folder (csv, tsv, json, jsonl, parquet) or Hub id.")]
TrustOpt = Annotated[bool, typer.Option(
    "--trust-remote-code", help="Allow model code from the checkpoint (off by default).")]

FlagGroup = dict[str, Any]
"""Parameter name -> its ``Annotated[Optional[type], typer.Option(...)]``; every one defaults to None (not given)."""

TASK_FLAGS: FlagGroup = {
    "dataset_config": Annotated[Optional[str], typer.Option(
        "--dataset-config", help="Hub dataset configuration, e.g. sst2.")],
    "task": Annotated[Optional[str], typer.Option(
        "--task", help="classification | regression | causal_lm (default: detected).")],
    "text_column": Annotated[Optional[str], typer.Option(
        "--text-column", help="Input text column (default: detected, e.g. sentence, text).")],
    "text_pair_column": Annotated[Optional[str], typer.Option(
        "--text-pair-column", help="Second text of a sentence pair (default: detected, e.g. sentence2).")],
    "label_column": Annotated[Optional[str], typer.Option(
        "--label-column", help="Label column (default: detected, e.g. label).")],
    "prompt_column": Annotated[Optional[list[str]], typer.Option(
        "--prompt-column", help="Causal LM prompt column(s); repeat for several.")],
    "response_column": Annotated[Optional[str], typer.Option(
        "--response-column", help="Causal LM answer column, the tokens the loss is on (default: detected).")],
    "metric": Annotated[Optional[str], typer.Option("--metric", help="Primary metric (default: per task).")],
    "verbalizer": Annotated[Optional[str], typer.Option(
        "--verbalizer", help="Label words, one per class in label order, comma-separated (e.g. negative,positive):"
        " a labelled dataset becomes a causal LM task answered with these words, no new head. --task causal_lm on"
        " a labelled dataset does the same with the dataset's own label names.")],
}
"""How to read the dataset: the flat keys of :class:`autopeft.search.settings.TaskSettings` besides ``dataset``."""


TASK_PANEL = "Task and data"


def in_panels(flags: FlagGroup, panels: dict[str, tuple[str, ...]], default: str) -> FlagGroup:
    """The same options, each shown in ``--help`` under its panel (the one whose names list it, else ``default``),
    so that a command with many options reads as a few short groups."""
    panel_of = {flag: panel for panel, names in panels.items() for flag in names}
    unknown = set(panel_of) - set(flags)
    if unknown:  # a renamed flag would otherwise fall silently into the default panel
        raise KeyError(f"in_panels: no such flags {sorted(unknown)}")
    for flag, annotation in flags.items():
        annotation.__metadata__[0].rich_help_panel = panel_of.get(flag, default)
    return flags


in_panels(TASK_FLAGS, {}, TASK_PANEL)


def flag_group(name: str, flags: FlagGroup) -> Callable[[Callable], Callable]:
    """Decorator: the command's parameter ``name`` becomes the options ``flags``, in its place (so in ``--help``
    too); the command receives their values as one dict under ``name``."""

    def decorate(command: Callable) -> Callable:
        signature = inspect.signature(command, eval_str=True)
        parameters = []
        for parameter in signature.parameters.values():
            if parameter.name == name:
                parameters += [inspect.Parameter(flag, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                                                 default=None) for flag, annotation in flags.items()]
            else:  # keyword-only: a defaulted group may come before options without a default
                parameters.append(parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY))

        @functools.wraps(command)
        def with_group(**values):
            group = {flag: values.pop(flag) for flag in flags}
            return command(**values, **{name: group})

        with_group.__signature__ = signature.replace(parameters=parameters)  # what typer reads the options from
        with_group.__annotations__ = {p.name: p.annotation for p in parameters}
        return with_group

    return decorate

"""The typer app: every command is registered here, in the order ``autopeft --help`` lists them.

Each command lives in its own module (it parses flags, calls the library, prints) and imports only
:mod:`autopeft.cli.options` and :mod:`autopeft.cli.output`, never this module. Every command that runs work
takes ``--verbose``/``--quiet`` (:func:`autopeft.cli.output.with_log_flags`).
"""

from __future__ import annotations

from typing import Annotated

import typer

from autopeft.cli import data, heads, oneshot, priors, search, space, trial
from autopeft.cli.output import with_log_flags

app = typer.Typer(
    name="autopeft",
    help="Find the best parameter-efficient fine-tuning configuration for a model and a task.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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


app.command()(with_log_flags(trial.trial))
app.command()(with_log_flags(search.search))
app.command()(with_log_flags(search.export))
app.command()(with_log_flags(search.report))
app.command()(with_log_flags(priors.sensitivity))
app.command("select-heads")(with_log_flags(heads.select_heads_command))
app.command("select-data")(with_log_flags(data.select_data_command))
app.command("oneshot")(with_log_flags(oneshot.oneshot_command))
app.add_typer(space.space_app, name="space")

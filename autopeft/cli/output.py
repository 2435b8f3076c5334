"""Where the CLI talks to the user: progress, notes and summaries on stderr (tables of results go to stdout).

What the library logs (``autopeft.*`` loggers, see :mod:`autopeft.logs`) reaches the terminal through
:class:`ConsoleHandler`, on the same rich console as the progress bar, so log lines scroll above a live bar.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

console = Console(stderr=True)

VERBOSITY = {"quiet": -1, "normal": 0, "verbose": 1}


class ConsoleHandler(logging.Handler):
    """One line per record on stderr: notes as ``note: ...``, warnings as ``warning: ...``, trial lines as they are."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = escape(record.getMessage())
            kind = getattr(record, "kind", None)
            if record.levelno >= logging.ERROR:
                line = f"[red]error:[/red] {message}"
            elif record.levelno >= logging.WARNING:
                line = f"[yellow]warning:[/yellow] {message}"
            elif kind == "note":
                line = f"[dim]note:[/dim] {message}"
            elif record.levelno <= logging.DEBUG:
                line = f"[dim]{record.name}: {message}[/dim]"
            else:
                line = message
            console.print(line, soft_wrap=True)  # soft wrap: a log file keeps one line per record
        except Exception:  # logging must never take the command down
            self.handleError(record)


_handler: ConsoleHandler | None = None


def configure_logging(verbosity: int) -> None:
    """The terminal shows autopeft's INFO records (``--quiet``: warnings only; ``--verbose``: DEBUG, and the
    libraries' own INFO output)."""
    from autopeft.logs import LOGGER, Redact, console_level, quiet_libraries

    global _handler
    logger = logging.getLogger(LOGGER)
    if _handler is None:
        _handler = ConsoleHandler()
        _handler.addFilter(Redact())
        logger.addHandler(_handler)  # still propagating: a root handler someone added (pytest's caplog) sees them
    level = console_level(verbosity)
    _handler.setLevel(level)
    logger.setLevel(level)
    quiet_libraries(verbose=verbosity > 0)


def current_verbosity() -> int:
    """-1 (quiet), 0 or 1 (verbose), as the last :func:`configure_logging` set it (0 before)."""
    if _handler is None:
        return 0
    return {logging.WARNING: -1, logging.DEBUG: 1}.get(_handler.level, 0)


def with_log_flags(command: Callable) -> Callable:
    """The command with ``--verbose/-v`` and ``--quiet/-q``, which set what the terminal shows before it runs."""
    signature = inspect.signature(command, eval_str=True)
    verbose = Annotated[bool, typer.Option(
        "--verbose", "-v", rich_help_panel="Output", help="More detail: debug lines, and the libraries' own messages.")]
    quiet = Annotated[bool, typer.Option(
        "--quiet", "-q", rich_help_panel="Output",
        help="Only warnings, errors and the results (no trial lines or progress bar).")]
    extra = [inspect.Parameter("verbose", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=verbose),
             inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=quiet)]
    parameters = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in signature.parameters.values()] + extra

    @functools.wraps(command)
    def with_flags(**values):
        verbose, quiet = values.pop("verbose"), values.pop("quiet")
        if verbose and quiet:
            from autopeft.errors import AutopeftError

            raise AutopeftError("give --verbose or --quiet, not both")
        configure_logging(1 if verbose else -1 if quiet else 0)
        return command(**values)

    with_flags.__signature__ = signature.replace(parameters=parameters)
    with_flags.__annotations__ = {p.name: p.annotation for p in parameters}
    return with_flags

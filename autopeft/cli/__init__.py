"""The ``autopeft`` command: a thin typer face over the library."""

from __future__ import annotations

import os
import sys

from autopeft.cli.app import app


def _quiet_libraries() -> None:
    """Keep library chatter (load reports, progress bars, deprecations) out of the user's terminal."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="peft")


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print one line and exit 2, never a traceback."""
    from autopeft.errors import AutopeftError

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _quiet_libraries()
    try:
        # non-standalone click returns exit codes (typer.Exit, Ctrl-C) instead of raising them
        code = app(args=argv, standalone_mode=False)
    except AutopeftError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except SystemExit:
        raise
    except Exception as exc:
        import click

        if isinstance(exc, click.exceptions.Abort):
            print("aborted", file=sys.stderr)
            sys.exit(130)
        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(2)
        raise
    if isinstance(code, int) and code:
        sys.exit(code)

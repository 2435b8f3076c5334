"""The ``autopeft`` command: a thin typer face over the library."""

from __future__ import annotations

import difflib
import os
import sys

import typer

# typer >= 0.29 vendors click as ``typer._click``: its usage errors are not the ``click`` package's
# classes, so they must be caught from here (pyproject pins typer to the minor release this is true of).
from typer._click import exceptions as click_exceptions

from autopeft.cli.app import app

PROG = "autopeft"


def _quiet_libraries() -> None:
    """Keep library chatter (load reports, progress bars, deprecations) out of the user's terminal; autopeft's own
    INFO lines on it (a command's ``--verbose``/``--quiet`` changes that)."""
    import logging

    from autopeft.cli.output import configure_logging

    configure_logging(0)
    logging.getLogger("datasets").setLevel(logging.CRITICAL)  # a failed read is reported once, as our error line


def one_line(message: str) -> str:
    """A message as the single line the CLI promises (library messages may quote multi-line text)."""
    return "; ".join(part.strip() for part in message.splitlines() if part.strip())


def usage_error_line(exc: click_exceptions.UsageError) -> str:
    """Click's usage error as one line: the message, the closest option, and where help is."""
    message = exc.format_message()
    if isinstance(exc, click_exceptions.NoSuchOption) and exc.possibilities:
        close = difflib.get_close_matches(exc.option_name, exc.possibilities, n=1, cutoff=0.5)
        message = f"No such option: {exc.option_name}" + (
            f". Did you mean {close[0]}?" if close else f" (possible options: {', '.join(sorted(exc.possibilities))})")
    where = exc.ctx.command_path if exc.ctx is not None else PROG
    return f"error: {message} (see '{where} --help')"


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print one line and exit 2, never a traceback."""
    from autopeft.errors import AutopeftError, Interrupted
    from autopeft.redact import mask_text

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _quiet_libraries()
    try:
        # non-standalone click returns exit codes (typer.Exit, Ctrl-C as 130) instead of exiting itself
        code = app(args=argv, prog_name=PROG, standalone_mode=False)
    except AutopeftError as exc:
        print(f"error: {one_line(mask_text(str(exc)))}", file=sys.stderr)
        sys.exit(2)
    except click_exceptions.NoArgsIsHelpError as exc:  # bare `autopeft` / `autopeft space`: the help page
        exc.show()
        sys.exit(0)
    except click_exceptions.UsageError as exc:
        print(usage_error_line(exc), file=sys.stderr)
        sys.exit(2)
    except click_exceptions.ClickException as exc:
        print(f"error: {exc.format_message()}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        sys.exit(130)
    except (typer.Abort, KeyboardInterrupt):
        print("aborted", file=sys.stderr)
        sys.exit(130)
    if isinstance(code, int) and code:
        if code == 130:
            print("aborted (Ctrl-C)", file=sys.stderr)
        sys.exit(code)

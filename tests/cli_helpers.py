"""Running the CLI in tests and checking the one-line errors it promises."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


def run_main(args, capfd) -> Done:
    """``autopeft.cli.main(args)`` with its exit code and captured output."""
    from autopeft.cli import main

    code = 0
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capfd.readouterr()
    return Done(code, out, err)


def one_line_error(stderr: str) -> str:
    """The single non-empty stderr line, which must be an ``error: ...`` with no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def assert_one_line_error(done: Done, message: str) -> None:
    assert done.returncode == 2, done.stderr
    assert message in one_line_error(done.stderr), done.stderr

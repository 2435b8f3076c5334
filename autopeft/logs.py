"""Logging: autopeft speaks through the ``autopeft`` logger; the libraries it drives are kept quiet.

Library code never prints. It logs to ``logging.getLogger("autopeft.<module>")`` — search notes and each
finished trial at INFO, what a user should act on at WARNING, internals at DEBUG — and leaves the handlers to
the application: the CLI shows INFO on the terminal (WARNING with ``--quiet``, DEBUG with ``--verbose``) and
writes a log file into the run folder; a notebook shows WARNING and above (Python's default) unless it
configures logging itself.

:func:`quiet_libraries` turns down what the libraries say on their own (transformers' load reports and
progress bars, Optuna's per-trial INFO lines, DeepSpeed's accelerator line, FutureWarnings from transformers
and PEFT): the CLI calls it, and so does every call of the Python API (``autopeft.search``), so a notebook is
as quiet as the terminal. ``verbose=True`` lets them speak again.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

LOGGER = "autopeft"
LOG_FILE = "autopeft.log"
"""The log file's name in a run folder."""

_LIBRARY_LOGGERS = ("optuna", "DeepSpeed", "deepspeed", "ray", "ray.tune", "ray.train", "urllib3", "filelock",
                    "torch.distributed", "botorch", "linear_operator", "accelerate")
_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class _ErrorsOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


_ERRORS_ONLY = _ErrorsOnly()


def quiet_libraries(verbose: bool = False) -> None:
    """The libraries' own chatter off (or, ``verbose``, back at their INFO level)."""
    level = logging.INFO if verbose else logging.WARNING
    import optuna
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity(level if verbose else logging.ERROR)  # load reports ("weights not initialized")
    if verbose:
        hf_logging.enable_progress_bar()
    else:
        hf_logging.disable_progress_bar()
    for name in _LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(level)
    # DeepSpeed sets its logger's level itself when imported (after this), so a level set here would not hold; a
    # filter on the logger does: its "Setting accelerator to CPU" warning on every import is not the user's to act on
    deepspeed = logging.getLogger("DeepSpeed")
    if verbose:
        deepspeed.removeFilter(_ERRORS_ONLY)
    elif _ERRORS_ONLY not in deepspeed.filters:
        deepspeed.addFilter(_ERRORS_ONLY)
    optuna.logging.set_verbosity(level)
    if not verbose:
        # deprecation notices of the libraries' own internals, which a user cannot act on
        for module in ("transformers", "peft", "torch", "huggingface_hub", "datasets", "optuna"):
            warnings.filterwarnings("ignore", category=FutureWarning, module=module)
        warnings.filterwarnings("ignore", category=UserWarning, module="peft")
        warnings.filterwarnings("ignore", category=UserWarning, module="ray")
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def console_level(verbosity: int) -> int:
    """``--quiet`` (-1): warnings and errors; default (0): INFO; ``--verbose`` (1): DEBUG."""
    return logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO


class Redact(logging.Filter):
    """Credentials in URLs and tokens masked in every record a handler writes (storage URLs name passwords)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from autopeft.redact import mask_text

        record.msg, record.args = mask_text(record.getMessage()), None
        return True


class _DeferredFileHandler(logging.Handler):
    """Writes ``path`` once ``ready()`` says the folder is the command's own (e.g. its run.json is written); records
    before that wait in memory, and are dropped if it never is — a command refused early leaves no file behind."""

    def __init__(self, path: Path, ready: Callable[[], bool]):
        super().__init__()
        self.path, self.ready = path, ready
        self.pending: list[logging.LogRecord] = []
        self.file: logging.FileHandler | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.file is None:
            if not self.ready():
                self.pending.append(record)
                return
            self.file = logging.FileHandler(self.path, encoding="utf-8")
            self.file.setFormatter(self.formatter)
            for waiting in self.pending:
                self.file.emit(waiting)
            self.pending.clear()
        self.file.emit(record)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        super().close()


@contextmanager
def log_file(path: str | Path, level: int = logging.INFO, ready: Callable[[], bool] | None = None) -> Iterator[Path]:
    """While inside, the ``autopeft`` logger also writes ``path`` (appending: a resumed search continues its log),
    from when ``ready()`` is true (default: at once) — records before that are kept and written then."""
    path = Path(path)
    handler = _DeferredFileHandler(path, ready or (lambda: True))
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler.addFilter(Redact())
    logger = logging.getLogger(LOGGER)
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(min(level, logger.getEffectiveLevel()))
    try:
        yield path
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
        handler.close()

"""Optuna storages from one string: any RDB URL, a journal file, or the run folder's SQLite default.

Storage URLs may carry a password; :func:`mask_url` is what gets printed, logged or written.
"""

from __future__ import annotations

from pathlib import Path

import optuna

from autopeft.errors import AutopeftError
from autopeft.redact import has_credentials, mask_url

__all__ = ["DEFAULT_DB", "JOURNAL_SUFFIXES", "default_storage", "has_credentials", "mask_url", "open_storage"]

JOURNAL_SUFFIXES = (".log", ".journal", ".jsonl")
DEFAULT_DB = "study.db"


def default_storage(run_dir: Path) -> str:
    return f"sqlite:///{(Path(run_dir) / DEFAULT_DB).resolve()}"


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An RDB storage for ``scheme://...``, a journal-file storage for a path ending in .log/.journal."""
    try:
        if "://" not in url:
            path = Path(url).expanduser()
            if path.suffix not in JOURNAL_SUFFIXES:
                raise AutopeftError(
                    f"storage '{url}' is neither a URL (sqlite:///..., postgresql://...) nor a journal file "
                    f"({', '.join(JOURNAL_SUFFIXES)})"
                )
            from optuna.storages.journal import JournalFileBackend, JournalStorage

            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else None)
    except AutopeftError:
        raise
    except Exception as exc:  # drivers raise many types and may echo the URL: print neither
        message = mask_url(str(exc).splitlines()[0]) if str(exc) else type(exc).__name__
        raise AutopeftError(f"cannot open storage '{mask_url(url)}': {message}") from None

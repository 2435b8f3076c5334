"""Optuna storages from one string: any RDB URL, a journal file, or the run folder's SQLite default.

Storage URLs may carry a password; :func:`mask_url` is what gets printed, logged or written.
"""

from __future__ import annotations

import os
from pathlib import Path

import optuna

from autopeft.errors import AutopeftError
from autopeft.redact import has_credentials, mask_url

__all__ = ["DEFAULT_DB", "JOURNAL_SUFFIXES", "check_storage_url", "default_storage", "has_credentials",
           "is_remote_storage", "local_storage_path", "mask_url", "open_storage"]

JOURNAL_SUFFIXES = (".log", ".journal", ".jsonl")
DEFAULT_DB = "study.db"
SQLITE_LOCK_TIMEOUT = 60.0
SCHEMA_ATTEMPTS = 8
_SCHEMA_RACE = ("unique constraint", "already exists", "database is locked", "duplicate key")


def _create_rdb_storage(url: str, engine_kwargs: dict) -> optuna.storages.RDBStorage:
    """RDBStorage, retried when a process beside this one is creating the same schema right now.

    Two searches starting together on a new database both try to create Optuna's tables; the
    loser fails (``UNIQUE constraint failed: alembic_version.version_num``, "table already exists",
    or "database is locked"). Once the winner is done, opening the storage again succeeds."""
    import random
    import time

    import sqlalchemy.exc

    for attempt in range(SCHEMA_ATTEMPTS):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.ProgrammingError) as exc:
            if attempt == SCHEMA_ATTEMPTS - 1 or not any(sign in str(exc).lower() for sign in _SCHEMA_RACE):
                raise
            time.sleep(0.2 * (attempt + 1) + random.random() * 0.3)
    raise AssertionError("unreachable")


def default_storage(run_dir: Path) -> str:
    return f"sqlite:///{(Path(run_dir) / DEFAULT_DB).resolve()}"


def is_remote_storage(url: str) -> bool:
    """A database server (not a file on this machine): opened early, since reaching it is part of the check."""
    return "://" in url and not url.startswith("sqlite")


def local_storage_path(url: str) -> Path | None:
    """The file of a journal or SQLite storage; None for a database server."""
    if "://" not in url:
        return Path(url).expanduser()
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///").split("?")[0]).expanduser()
    return None


def check_storage_url(url: str) -> None:
    """A storage string's form, without creating anything: a journal file path, or an RDB URL whose
    dialect and driver are installed; a local file's folder must be writable."""
    if "://" not in url:
        path = Path(url).expanduser()
        if path.suffix not in JOURNAL_SUFFIXES:
            raise AutopeftError(
                f"storage '{mask_url(url)}' is neither a URL (sqlite:///..., postgresql://...) nor a journal file "
                f"({', '.join(JOURNAL_SUFFIXES)})"
            )
        _check_writable(path)
        return
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
        parsed.get_dialect()
    except Exception as exc:  # unknown dialect, missing driver, unparseable URL
        detail = mask_url(str(exc).splitlines()[0]) if str(exc) else type(exc).__name__
        raise AutopeftError(f"cannot use storage '{mask_url(url)}': {detail}") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        _check_writable(Path(parsed.database).expanduser())


def _check_writable(path: Path) -> None:
    """The file, or its nearest existing folder, must be writable by this process."""
    if path.is_dir():
        raise AutopeftError(f"storage '{path}' is a folder, not a file")
    existing = path if path.exists() else next((p for p in path.parents if p.exists()), Path("."))
    if not existing.is_dir() and existing != path:
        raise AutopeftError(f"storage '{path}': '{existing}' is a file, not a folder")
    if not os.access(existing, os.W_OK):
        raise AutopeftError(f"storage '{path}' is not writable")


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An RDB storage for ``scheme://...``, a journal-file storage for a path ending in .log/.journal."""
    try:
        if "://" not in url:
            check_storage_url(url)
            path = Path(url).expanduser()
            from optuna.storages.journal import JournalFileBackend, JournalStorage

            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        if url.startswith("sqlite"):
            if url.startswith("sqlite:///"):
                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            # several searches may share one SQLite file: wait for a writer's lock instead of failing at once
            engine_kwargs = {"connect_args": {"timeout": SQLITE_LOCK_TIMEOUT}}
        else:
            engine_kwargs = {"pool_pre_ping": True}
        return _create_rdb_storage(url, engine_kwargs)
    except AutopeftError:
        raise
    except Exception as exc:  # drivers raise many types and may echo the URL: print neither
        message = mask_url(str(exc).splitlines()[0]) if str(exc) else type(exc).__name__
        raise AutopeftError(f"cannot open storage '{mask_url(url)}': {message}") from None

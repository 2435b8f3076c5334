"""An on-disk cache for priors that are slow to compute and reused across runs (e.g. sensitivity maps).

Every entry is a folder ``cache_dir()/<kind>/<key>``, the key a hash of everything that decides its
content. Entries appear by rename only (:func:`atomic_folder`), so a process killed mid-write leaves a
hidden temp folder that no lookup ever trusts, never a half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def cache_dir() -> Path:
    """``$AUTOPEFT_CACHE`` when set (tests, shared clusters), else ``~/.cache/autopeft``."""
    configured = os.environ.get("AUTOPEFT_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "autopeft"


def cache_key(**parts) -> str:
    """First 16 hex digits of the SHA-256 of the parts as sorted JSON (values must be JSON types)."""
    encoded = json.dumps(parts, sort_keys=True).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]


def cached_path(kind: str, **parts) -> Path:
    """Where the entry of ``kind`` for ``parts`` lives (a folder; it may not exist yet)."""
    return cache_dir() / kind / cache_key(**parts)


@contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yield an empty folder beside ``path`` to write into; it becomes ``path`` only if the block succeeds.

    If another process completed the same entry first, its folder is kept: both hold the same content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield staging
        try:
            os.rename(staging, path)
        except OSError:
            if not path.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)

"""An on-disk cache for priors that are slow to compute and reused across runs (e.g. sensitivity maps).

Every entry is a folder ``cache_dir()/<kind>/<key>``, the key a hash of everything that decides its
content. Entries appear by rename only (:func:`atomic_folder`), so a process killed mid-write leaves a
hidden temp folder that no lookup ever trusts, never a half-written entry; the next write of that kind
deletes such leftovers once their writer is gone (:func:`autopeft.atomic.remove_stale_temps`).
An entry that cannot be read back (a truncated or corrupted file) is a miss: :func:`read_entry` deletes
it, so it is computed again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from autopeft.atomic import discard_dir, remove_stale_temps, staged_dir

T = TypeVar("T")
logger = logging.getLogger("autopeft.cache")


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


def read_entry(folder: str | Path, read: Callable[[Path], T]) -> T | None:
    """``read(folder)`` for an existing entry; ``None`` when there is none or it cannot be read.

    Any exception of ``read`` (a truncated safetensors file, broken JSON, a missing file, content that does
    not match) marks the entry as corrupt: it is deleted, with a one-line warning, and the caller computes
    it again as for a miss.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    try:
        return read(folder)
    except Exception as exc:  # noqa: BLE001 (whatever is wrong with it, the entry is recomputed)
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        logger.warning("discarding the unreadable cache entry '%s' (%s%s); computing it again",
                       folder, type(exc).__name__, f": {first}" if first else "")
        discard_dir(folder)
        return None


@contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yield an empty folder beside ``path`` to write into; it becomes ``path`` only if the block succeeds.

    If another process completed the same entry first, its folder is kept: both hold the same content.
    Stale temp folders of earlier, killed writers of this kind are deleted first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent)
    with staged_dir(path, keep_existing=True) as staging:
        yield staging

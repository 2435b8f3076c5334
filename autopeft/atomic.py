"""Write files and folders so that a reader never sees half of one: temp + rename; stale temps cleaned.

Every temp file or folder is named ``.<target>.<host>~<pid>~<random>.tmp`` beside its target (``host``: the
host name and pid namespace), so a later writer can tell a stale one (its writer died: killed mid-copy, out
of memory, power cut) from one a running process is still filling. :func:`remove_stale_temps` deletes only
the stale ones; every writer here calls it for its target before it starts, and the prior cache for its
whole kind folder.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TEMP_SUFFIX = ".tmp"
# A temp whose writer we cannot check (another host on a shared file system, a name from an older
# autopeft) is stale once nothing in it changed for this long; one of a live local pid after a day
# (the pid may have been reused by an unrelated process).
STALE_SECONDS = 3600.0
LIVE_PID_STALE_SECONDS = 24 * 3600.0

_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.(?P<host>[A-Za-z0-9-]*)~(?P<pid>\d+)~[A-Za-z0-9_]+\.tmp$")
_OLD_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.[A-Za-z0-9_]{8}\.tmp$")  # tempfile's names, before the pid was in them
_OURS: set[str] = set()  # temps this process made (a dead process with our pid, e.g. in a container, made the others)


@functools.lru_cache(maxsize=1)
def _host() -> str:
    """Where our pids mean something: the host name, plus the pid namespace where there is one (a container
    sharing the host's name and file system has its own pids)."""
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40]
    try:
        host += f"-{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        pass
    return host


def temp_prefix(target_name: str) -> str:
    """The start of this process's temp names for ``target_name`` (``tempfile`` adds a random part)."""
    return f".{target_name}.{_host()}~{os.getpid()}~"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except OSError:
        return True  # cannot tell: treat as alive
    return True


def _last_change(path: Path) -> float:
    """The newest mtime of ``path`` and everything under it (a writer touches what it writes)."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for name in (*dirs, *files):
                try:
                    newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
                except OSError:
                    pass
    return newest


def is_stale_temp(path: str | Path, *, now: float | None = None) -> bool:
    """Whether ``path`` is a temp of ours whose writer is gone (see the module docstring)."""
    path = Path(path)
    match = _TEMP_NAME.match(path.name)
    if match is None and _OLD_TEMP_NAME.match(path.name) is None:
        return False
    try:
        age = (time.time() if now is None else now) - _last_change(path)
    except OSError:
        return False  # already gone, or unreadable: leave it
    if match is not None and match["host"] == _host():
        pid = int(match["pid"])
        if pid == os.getpid():
            return os.path.abspath(path) not in _OURS  # ours may still be being written (another thread)
        return not _pid_alive(pid) or age > LIVE_PID_STALE_SECONDS
    return age > STALE_SECONDS


def remove_stale_temps(directory: str | Path, target_name: str | None = None) -> list[Path]:
    """Delete the stale temps in ``directory`` (only those of ``target_name`` when given); returns them.

    Never raises: cleaning up is a courtesy, not a reason for a run to fail.
    """
    directory = Path(directory)
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        if not (entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX)):
            continue
        if target_name is not None and not entry.name.startswith(f".{target_name}."):
            continue
        path = Path(entry.path)
        if not is_stale_temp(path):
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
        except OSError:
            pass  # another process cleaned it first, or no permission
    return removed


def _prepare(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent, path.name)


def temp_file_beside(path: str | Path) -> tuple[int, Path]:
    """An open (fd) new temp file next to ``path``, after clearing that target's stale temps."""
    path = Path(path)
    _prepare(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path.name), suffix=TEMP_SUFFIX)
    _OURS.add(os.path.abspath(tmp))
    return fd, Path(tmp)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = temp_file_beside(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def temp_dir_beside(path: str | Path) -> Path:
    """An empty folder next to ``path`` (same file system, so :func:`replace_dir` is a rename), after
    clearing the stale temps an interrupted earlier writer of ``path`` left."""
    path = Path(path)
    _prepare(path)
    tmp = tempfile.mkdtemp(dir=path.parent, prefix=temp_prefix(path.name), suffix=TEMP_SUFFIX)
    _OURS.add(os.path.abspath(tmp))
    return Path(tmp)


def discard_dir(path: str | Path) -> None:
    """Remove a folder so that no reader sees it half-deleted: renamed to a temp name first, then deleted."""
    path = Path(path)
    doomed = path.with_name(f"{temp_prefix(path.name)}{os.urandom(4).hex()}{TEMP_SUFFIX}")
    _OURS.add(os.path.abspath(doomed))
    try:
        os.rename(path, doomed)
    except OSError:
        if not path.exists():
            return  # someone else removed it first
        doomed = path
    shutil.rmtree(doomed, ignore_errors=True)


def replace_dir(tmp: Path, path: str | Path) -> None:
    """Move a fully written folder into place, replacing an older one."""
    path = Path(path)
    old = None
    if path.exists():
        old = path.with_name(f"{temp_prefix(path.name)}old{TEMP_SUFFIX}")
        _OURS.add(os.path.abspath(old))
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staged_dir(path: str | Path, *, keep_existing: bool = False) -> Iterator[Path]:
    """All or nothing: the block fills an empty temp folder beside ``path``, which then becomes ``path``,
    replacing an older one, or, with ``keep_existing``, giving way to a ``path`` that another writer
    completed first (a cache entry: the same content either way).

    If the block raises, nothing is left behind: not the temp folder, nor the parent folders made for it.
    """
    path = Path(path)
    made = [parent for parent in reversed(path.parents) if not parent.exists()]
    staging = temp_dir_beside(path)
    try:
        yield staging
        if not keep_existing:
            replace_dir(staging, path)
        else:
            try:
                os.rename(staging, path)
            except OSError:
                if not path.is_dir():
                    raise
                shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for parent in reversed(made):  # innermost first; only folders this call created and left empty
            try:
                parent.rmdir()
            except OSError:
                break
        raise


def write_dir(path: str | Path, write: Callable[[Path], None]) -> Path:
    """:func:`staged_dir` with a callback: ``write(folder)`` fills the folder that replaces ``path``."""
    with staged_dir(path) as staging:
        write(staging)
    return Path(path)


def check_output_folder(out: str | Path, earlier_output: Callable[[Path], bool], command: str) -> None:
    """``--out`` of a command that writes a whole folder (with :func:`write_dir`): a new folder, an empty
    one, or an earlier output of that command (``earlier_output(out)``), which is replaced."""
    from autopeft.errors import AutopeftError

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise AutopeftError(f"--out '{out}' is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not earlier_output(out):
        raise AutopeftError(f"--out '{out}' is a folder with other content; give a new or empty folder "
                            f"(or an earlier `autopeft {command}` output, which is replaced)")

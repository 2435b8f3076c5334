"""Which process owns a RUNNING trial, and whether that owner is still alive.

Several ``autopeft search`` processes may share one storage (an RDB or a journal file). A trial
left RUNNING is "interrupted" only when its owner is really gone. Optuna's heartbeat does this for
RDB storages only, and only inside ``study.optimize``; the engine uses ask/tell and journal files
too, so ownership is written by hand, as a trial user attribute that any storage keeps:

``lease = {"owner": <token>, "host": <hostname>, "pid": <pid>, "started": <process start time>,
"expires": <unix time>}``

A :class:`LeaseKeeper` thread renews the leases of the trials this process runs. Another process
takes a trial as abandoned when its owner's process is gone (same host: pid missing, or reused by
a process that started later) or its lease expired (any host: the owner stopped renewing).
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import psutil

from autopeft.search.records import LEASE

LEASE_SECONDS = float(os.environ.get("AUTOPEFT_LEASE_SECONDS", 120))   # a lease not renewed this long expired
RENEW_SECONDS = LEASE_SECONDS / 4
UNLEASED_GRACE_SECONDS = 60.0  # a RUNNING trial without a lease: just asked by a peer, or left by an old version


def _process_start(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


@dataclass(frozen=True)
class Owner:
    token: str
    host: str
    pid: int
    started: float

    @classmethod
    def this_process(cls) -> Owner:
        return cls(uuid.uuid4().hex, socket.gethostname(), os.getpid(), _process_start(os.getpid()) or time.time())

    def lease(self, now: float | None = None) -> dict[str, Any]:
        return {"owner": self.token, "host": self.host, "pid": self.pid, "started": self.started,
                "expires": (now or time.time()) + LEASE_SECONDS}


def owner_alive(lease: dict[str, Any] | None, me: Owner, trial_started: float | None, now: float | None = None) -> bool:
    """Whether the process that holds ``lease`` may still be running the trial."""
    now = now or time.time()
    if not lease:
        return trial_started is not None and now - trial_started < UNLEASED_GRACE_SECONDS
    if lease.get("owner") == me.token:
        return True
    if lease.get("host") == me.host:
        started = _process_start(int(lease.get("pid", -1)))
        if started is None or abs(started - float(lease.get("started", 0))) > 1.0:
            return False  # that process ended (or its pid now belongs to another one)
    return float(lease.get("expires", 0)) > now


class LeaseKeeper:
    """Renews this process's leases in the background while its trials train."""

    def __init__(self, storage, owner: Owner):
        self.storage = storage
        self.owner = owner
        self._trial_ids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(self, trial_id: int) -> None:
        self.storage.set_trial_user_attr(trial_id, LEASE, self.owner.lease())
        with self._lock:
            self._trial_ids.add(trial_id)
        if self._thread is None:
            self._thread = threading.Thread(target=self._renew_forever, name="autopeft-lease", daemon=True)
            self._thread.start()

    def release(self, trial_id: int) -> None:
        with self._lock:
            self._trial_ids.discard(trial_id)

    def _renew_forever(self) -> None:
        while not self._stop.wait(RENEW_SECONDS):
            with self._lock:
                ids = list(self._trial_ids)
            for trial_id in ids:
                try:
                    self.storage.set_trial_user_attr(trial_id, LEASE, self.owner.lease())
                except Exception:  # finished meanwhile, or the storage blinked: the next round retries
                    pass

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

"""A lock per task on the shared output folder, so that drivers sharing it never run one task twice.

Several drivers (two `tfbench.sweep` started by mistake, the shards of a batch job, a retried Ray
task) may reach the same task. Before running it, the process that runs it takes the task's lock:
a small JSON file beside the task's record naming its owner (host, pid, a random token) and a
heartbeat time that a background thread refreshes. A lock whose heartbeat is older than the
timeout, or whose owner is a dead process on this host, is stale and is taken over: the machine or
worker that held it is gone, and its task must run again (resuming from its checkpoints).

Takeover runs under a second, short-lived "breaker" file created exclusively, so that of several
processes finding the same stale lock exactly one replaces it. A live owner whose lock was taken
over (paused longer than the timeout) learns it at its next heartbeat (`Lock.lost`). Records are
written atomically whatever happens, so nobody ever reads a record half-written.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from typing import Any, Dict, Optional

from tfbench import files

LOCK_SUFFIX = ".lock"
HEARTBEAT_SECONDS = 30.0
STALE_AFTER_SECONDS = 300.0  # ten missed heartbeats: the owner is gone, not slow


def lock_path(record_path: str) -> str:
    """The lock of the task whose record is `record_path` lives beside it."""
    return record_path + LOCK_SUFFIX


def read_owner(path: str) -> Optional[Dict[str, Any]]:
    """The lock's content, or None if there is no lock (or it vanished while being read)."""
    try:
        with open(path) as handle:
            return json.load(handle)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def is_stale(owner: Dict[str, Any], stale_after: float, now: Optional[float] = None) -> bool:
    """Whether the owner is gone: no heartbeat for `stale_after` seconds, or a dead local pid."""
    now = time.time() if now is None else now
    if now - float(owner.get("heartbeat", 0)) > stale_after:
        return True
    return owner.get("host") == socket.gethostname() and not _process_alive(int(owner.get("pid", -1)))


class Lock:
    """A held lock; `release()` (or leaving the `with` block) removes it if it is still ours."""

    def __init__(self, path: str, owner: Dict[str, Any], heartbeat_seconds: float):
        self.path = path
        self.owner = owner
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(heartbeat_seconds,), daemon=True,
                                        name=f"heartbeat {os.path.basename(path)}")
        self._thread.start()

    def _ours(self) -> bool:
        current = read_owner(self.path)
        return current is not None and current.get("token") == self.owner["token"]

    def _beat(self, interval: float) -> None:
        while not self._stop.wait(interval):
            if not self._ours():
                self.lost = True
                return
            self.owner = {**self.owner, "heartbeat": time.time()}
            files.write_json_atomic(self.path, self.owner)

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        if self._ours():
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    def __enter__(self) -> "Lock":
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def _new_owner() -> Dict[str, Any]:
    now = time.time()
    return {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex,
            "acquired": now, "heartbeat": now}


def acquire(path: str, *, stale_after: float = STALE_AFTER_SECONDS,
            heartbeat_seconds: float = HEARTBEAT_SECONDS) -> Optional[Lock]:
    """Take the lock at `path`, or None if a live owner holds it (or is taking it over)."""
    owner = _new_owner()
    if files.create_json_exclusive(path, owner):
        return Lock(path, owner, heartbeat_seconds)
    current = read_owner(path)
    if current is None:  # released between our attempt and the read: try once more
        return Lock(path, owner, heartbeat_seconds) if files.create_json_exclusive(path, owner) else None
    if not is_stale(current, stale_after):
        return None
    return _take_over(path, current, owner, stale_after, heartbeat_seconds)


def _take_over(path: str, stale: Dict[str, Any], owner: Dict[str, Any], stale_after: float,
               heartbeat_seconds: float) -> Optional[Lock]:
    breaker = path + ".breaker"
    if not files.create_json_exclusive(breaker, owner):
        try:  # a breaker left by a process that died while taking over
            if time.time() - os.path.getmtime(breaker) > stale_after:
                os.unlink(breaker)
        except FileNotFoundError:
            pass
        return None
    try:
        current = read_owner(path)
        if current is not None and current != stale:
            return None  # refreshed or replaced since we looked: not ours to break
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        if files.create_json_exclusive(path, owner):
            return Lock(path, owner, heartbeat_seconds)
        return None
    finally:
        os.unlink(breaker)

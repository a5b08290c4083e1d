"""A lock per task on the shared output folder, so that drivers sharing it never run one task twice.

Several drivers (two `tfbench.sweep` started by mistake, the shards of a batch job, a retried Ray
task) may reach the same task. Before running it, the process that runs it takes the task's lock:
a small JSON file beside the task's record naming its owner (host, pid, a random token) and a
heartbeat time that a background thread refreshes. A lock whose heartbeat is older than the
timeout, or whose owner is a dead process on this host, is stale and is taken over: the machine or
worker that held it is gone, and its task must run again (resuming from its checkpoints).

Takeover runs under a second, short-lived "breaker" file created exclusively, so that of several
processes finding the same stale lock exactly one replaces it.

The lock is a lease (tfbench.fencing): its owner holds it only while its own last heartbeat is
younger than `stale_after - heartbeat_seconds` (the margin) and the file still names its token.
An owner paused past that (SIGSTOP, a frozen VM, a partition) has lost it whether or not someone
took over: its heartbeat thread stops refreshing, its training loop stops at the next step
boundary, and its writes are refused. The guarantee, with clocks agreeing across hosts to within
the margin: a taker breaks a lock only when its heartbeat is older than `stale_after`, so an owner
that found its lease valid and then acts (a heartbeat, a record's rename) collides with a taker
only if more than the margin passes between its check and its act. Those are a file read and a
rename apart; only a pause of the whole process in exactly that instant, longer than the margin,
defeats it, and even then the record written is a whole one (renames are atomic). Records are
written atomically whatever happens, so nobody ever reads a record half-written.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import threading
import time
import uuid
from typing import Any, Dict, Optional

from tfbench import fencing, files

LOCK_SUFFIX = ".lock"
HEARTBEAT_SECONDS = 20.0
STALE_AFTER_SECONDS = 120.0  # six missed heartbeats: a lost machine costs two minutes of an hour-long trial


class TimingError(ValueError):
    """Lock timing that cannot work; the message names the values and the rule."""


@dataclasses.dataclass(frozen=True)
class Timing:
    """How often an owner refreshes its lock, and after how long without it the lock is stale.

    The defaults fit hour-long trials: losing a machine costs about two minutes before its task is
    taken over (and resumes from its checkpoint), while a slow shared file system has five
    heartbeats' grace before an owner loses a lock it still deserves. `stale_after` must leave at
    least one heartbeat of margin, which an owner's lease keeps for itself (see the module doc)."""

    heartbeat_seconds: float = HEARTBEAT_SECONDS
    stale_after: float = STALE_AFTER_SECONDS

    def __post_init__(self):
        if not 0 < self.heartbeat_seconds <= self.stale_after / 2:
            raise TimingError(f"lock timing: heartbeat every {self.heartbeat_seconds:g}s with stale after "
                              f"{self.stale_after:g}s; the heartbeat must be > 0 and at most half the stale "
                              "timeout (e.g. 20 and 120)")

    @property
    def margin(self) -> float:
        return self.heartbeat_seconds


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


def available(path: str, stale_after: float) -> bool:
    """Whether the lock at `path` can be taken now: absent, or stale. What a driver checks before
    submitting a task it found busy again."""
    owner = read_owner(path)
    return owner is None or is_stale(owner, stale_after)


class Lock:
    """A held lock, and the lease it gives (`check()`, see tfbench.fencing); `release()` (or
    leaving the `with` block) removes it if it is still ours."""

    def __init__(self, path: str, owner: Dict[str, Any], timing: Timing, renewed: float):
        self.path = path
        self.owner = owner
        self.timing = timing
        self.lost = False
        self._renewed = renewed  # time.monotonic() when our last heartbeat was taken: the lease runs from it
        self._checked: Dict[int, float] = {}  # per thread: when check() last found the lock ours
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True,
                                        name=f"heartbeat {os.path.basename(path)}")
        self._thread.start()

    def _ours(self) -> bool:
        current = read_owner(self.path)
        return current is not None and current.get("token") == self.owner["token"]

    def _lease_valid(self) -> bool:
        return time.monotonic() - self._renewed < self.timing.stale_after - self.timing.margin

    def held(self) -> bool:
        """Still ours: not lost, the lease not run out, the file naming our token. Once False, for good."""
        if not self.lost and not (self._lease_valid() and self._ours()):
            self.lost = True
        return not self.lost

    def check(self) -> None:
        if not self.held():
            current = read_owner(self.path) or {}
            raise fencing.LeaseLost(f"lock {self.path} lost (now held by {current.get('host')}:{current.get('pid')})")
        self._checked[threading.get_ident()] = time.monotonic()

    def _beat(self) -> None:
        """Refresh the heartbeat, fenced like any write (checked right before the rename), until
        stopped or lost."""
        while not self._stop.wait(self.timing.heartbeat_seconds):
            renewed = time.monotonic()
            self.owner = {**self.owner, "heartbeat": time.time()}
            try:
                with fencing.holding(self):
                    files.write_json_atomic(self.path, self.owner)
            except fencing.LeaseLost:
                return
            if time.monotonic() - self._checked[threading.get_ident()] > self.timing.margin:
                self.lost = True  # paused between check and rename: a taker's lock may have been
                return  # overwritten, so both give up and the lock goes stale
            self._renewed = renewed

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        if self.held():  # a lock we may have lost is left for a taker to break
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    def __enter__(self) -> "Lock":
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def _new_owner() -> Dict[str, Any]:
    now = time.time()  # the heartbeat others judge us by; our own lease counts from just before it
    return {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex,
            "acquired": now, "heartbeat": now}


def acquire(path: str, timing: Timing = Timing()) -> Optional[Lock]:
    """Take the lock at `path`, or None if a live owner holds it (or is taking it over)."""
    renewed, owner = time.monotonic(), _new_owner()
    if files.create_json_exclusive(path, owner):
        return Lock(path, owner, timing, renewed)
    current = read_owner(path)
    if current is None:  # released between our attempt and the read: try once more
        return Lock(path, owner, timing, renewed) if files.create_json_exclusive(path, owner) else None
    if not is_stale(current, timing.stale_after):
        return None
    return _take_over(path, current, owner, timing, renewed)


def _take_over(path: str, stale: Dict[str, Any], owner: Dict[str, Any], timing: Timing,
               renewed: float) -> Optional[Lock]:
    breaker = path + ".breaker"
    if not files.create_json_exclusive(breaker, owner):
        try:  # a breaker left by a process that died while taking over
            if time.time() - os.path.getmtime(breaker) > timing.stale_after:
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
            return Lock(path, owner, timing, renewed)
        return None
    finally:
        os.unlink(breaker)

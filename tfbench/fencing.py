"""Fencing: work done under a lease stops, and writes nothing, once the lease is lost.

A task runs under its lock (tfbench.tasks.locks), a lease that another driver may take over when
the owner looks gone (paused, partitioned, its heartbeat late). The owner may still be alive and
wake up later; from then on it must neither train on nor write anything, or two processes would
interleave writes to one trial. `holding(lease)` makes a lease this thread's for the duration of a
task; `check()` raises `LeaseLost` when it is no longer held. Two places call it:

- every atomic write (tfbench.files.write_atomic), right before the rename that makes the file
  visible, so a record, a curve or a cache entry is only ever written by the current owner;
- the training loop at each step boundary, before a checkpoint is saved (tfbench.training), so a
  lost owner stops within one loop of steps instead of training to the end.

The lease is per thread: several tasks may run in one process (threads of a test, a local
executor beside its heartbeat threads), and only the thread running a task is fenced by its lock.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator, Optional, Protocol


class LeaseLost(BaseException):
    """The task's lock now belongs to another owner (or may, after a long pause): stop, write nothing.

    A BaseException, like KeyboardInterrupt, so that the `except Exception` of a task that records
    its own failure does not turn it into a failed record (which would itself be a write)."""


class Lease(Protocol):
    def check(self) -> None:
        """Raise LeaseLost unless the lease is still held."""


_current = threading.local()


@contextlib.contextmanager
def holding(lease: Lease) -> Iterator[None]:
    """Fence this thread's writes and training steps by `lease` while the block runs."""
    previous: Optional[Lease] = getattr(_current, "lease", None)
    _current.lease = lease
    try:
        yield
    finally:
        _current.lease = previous


def check() -> None:
    """Raise LeaseLost if this thread works under a lease that is lost; nothing outside a lease."""
    lease = getattr(_current, "lease", None)
    if lease is not None:
        lease.check()

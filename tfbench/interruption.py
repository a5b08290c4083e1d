"""Stopping work at its next safe point: one process-wide stop request.

SIGTERM (what Kubernetes, Slurm and spot preemption send before killing), SIGINT (Ctrl-C) and code
(e.g. a task whose lock was taken over by another driver) all make the same request:

    request_stop(reason, signal_number=None)   anyone, from any thread; the first request wins
    requested() -> Request | None              what was asked, if anything
    check(where)                               raise Interrupted if a stop was requested
    on_request(callback)                       (a context) call callback() at the request, from
                                               the requesting thread: how a compiled training
                                               loop hears of it between two steps
    handling_signals()                         (a context, main thread) SIGTERM / SIGINT request a
                                               stop; a second one exits at once with 128 + signal
    clear()                                    forget a request (a process that goes on working)

Work that can stop looks at the request at its safe points (the training loop after every step,
feature extraction after every batch), saves what it must (a checkpoint) and raises
`Interrupted`, which names where it stopped. `Interrupted` derives from BaseException, like
KeyboardInterrupt, so the `except Exception` that records a failed run never turns an
interruption into a failure record: nothing half-done is written, and the same command resumes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import threading
from typing import Callable, Iterator, List, Optional

SIGNALS = (signal.SIGTERM, signal.SIGINT)
# The exit code of a stop requested by code, not by a signal (sysexits' EX_TEMPFAIL: try again).
REQUESTED_EXIT = 75


@dataclasses.dataclass(frozen=True)
class Request:
    """Why work should stop: a signal's name or the requester's reason."""

    reason: str
    signal_number: Optional[int] = None

    @property
    def exit_code(self) -> int:
        """128 + the signal number (the shell's convention for a signal's death), else REQUESTED_EXIT."""
        return 128 + self.signal_number if self.signal_number is not None else REQUESTED_EXIT


class Interrupted(BaseException):
    """Work stopped at a safe point after a stop request; everything it needs to resume is saved.

    `where` says where it stopped, e.g. "at step 1200 of trial lr0.01_wd1e-05"; callers that know
    more add to it with `within`.
    """

    def __init__(self, request: Request, where: str = ""):
        super().__init__(request, where)
        self.request, self.where = request, where

    def within(self, context: str) -> "Interrupted":
        """The same interruption, `where` followed by `context` (e.g. "of trial T")."""
        return Interrupted(self.request, f"{self.where} {context}".strip())

    @property
    def exit_code(self) -> int:
        return self.request.exit_code

    def line(self) -> str:
        """The one line a binary prints before it exits."""
        where = f" {self.where}" if self.where else ""
        return f"interrupted{where}; the same command resumes from there"

    def __str__(self) -> str:
        return self.line()


_lock = threading.Lock()
_request: Optional[Request] = None
_callbacks: List[Callable[[], None]] = []


def request_stop(reason: str, signal_number: Optional[int] = None) -> None:
    """Ask every stoppable loop of this process to stop at its next safe point."""
    global _request
    with _lock:
        if _request is not None:
            return
        _request = Request(reason, signal_number)
        callbacks = list(_callbacks)
    for callback in callbacks:
        callback()


def requested() -> Optional[Request]:
    return _request


def check(where: str = "") -> None:
    """Raise Interrupted (naming `where`) if a stop was requested."""
    request = _request
    if request is not None:
        raise Interrupted(request, where)


def clear() -> None:
    """Forget the request: for a process that has handled an interruption and goes on working."""
    global _request
    with _lock:
        _request = None


@contextlib.contextmanager
def on_request(callback: Callable[[], None]) -> Iterator[None]:
    """Within the block, call `callback()` when a stop is requested (at once if it already was)."""
    with _lock:
        _callbacks.append(callback)
        already = _request is not None
    try:
        if already:
            callback()
        yield
    finally:
        with _lock:
            _callbacks.remove(callback)


@contextlib.contextmanager
def handling_signals(signals=SIGNALS) -> Iterator[None]:
    """Within the block, the first of `signals` requests a stop and the next exits at once.

    Python runs signal handlers only between bytecodes of the main thread, which may be inside a
    long TensorFlow call; so the handler here does nothing itself, and a watcher thread woken by
    the signal's byte on a wakeup pipe (signal.set_wakeup_fd) makes the request at once. Outside
    the main thread (where signals cannot be handled) the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    previous_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    previous = {number: signal.signal(number, _noted_by_the_watcher) for number in signals}
    watcher = threading.Thread(target=_watch, args=(read_end, set(signals)), name="tfbench-signals",
                               daemon=True)
    watcher.start()
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        signal.set_wakeup_fd(previous_fd)
        os.close(write_end)  # the watcher reads end-of-file and ends
        watcher.join()
        os.close(read_end)


def _noted_by_the_watcher(signal_number, frame) -> None:
    """The Python-level handler: the wakeup pipe has already told the watcher thread."""


def _watch(read_end: int, signals: set) -> None:
    received = 0
    while True:
        data = os.read(read_end, 64)
        if not data:
            return
        for number in data:
            if number not in signals:
                continue  # another handler's signal (e.g. SIGCHLD) also writes its byte
            received += 1
            name = signal.Signals(number).name
            if received > 1:
                print(f"{name} again: exiting at once", file=sys.stderr, flush=True)
                os._exit(128 + number)
            print(f"{name}: stopping at the next step boundary (send it again to exit at once)",
                  file=sys.stderr, flush=True)
            request_stop(name, number)

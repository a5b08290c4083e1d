"""The one progress display of tfbench: feature extraction, training, image checks, downloads.

On a terminal, one line redrawn in place (a carriage return, no escape codes). Anywhere else (a
log file, a pipe, a cluster job's output), plain lines: one every PLAIN_SECONDS and one at the
end, so logs stay readable and short.
"""

from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, Optional, TextIO, TypeVar

PLAIN_SECONDS = 30.0  # between two lines in a log
REDRAW_SECONDS = 0.2  # between two redraws on a terminal
Item = TypeVar("Item")


class Progress:
    """Counts `done` of `total` (None: unknown) `unit`s, with named values (loss, lr, ...)."""

    def __init__(self, description: str, total: Optional[int] = None, unit: str = "it",
                 stream: Optional[TextIO] = None, enabled: bool = True, start: int = 0):
        self.description, self.total, self.unit = description, total, unit
        self.stream = stream or sys.stdout
        self.enabled = enabled
        self.terminal = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = self.done = start  # a resumed count's rate is that of this process's share
        self.values = {}
        self.started = self.shown_at = time.perf_counter()
        self.width = 0

    def update(self, done: int, **values: float) -> None:
        """Move to position `done` (absolute), with the values to show beside it."""
        self.done, self.values = done, values
        now = time.perf_counter()
        if self.enabled and now - self.shown_at >= (REDRAW_SECONDS if self.terminal else PLAIN_SECONDS):
            self._show(now)

    def advance(self, count: int = 1, **values: float) -> None:
        self.update(self.done + count, **values)

    def close(self) -> None:
        if self.enabled:
            self._show(time.perf_counter(), final=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def line(self, now: float) -> str:
        elapsed = now - self.started
        counted = f"{self.done:,}" + ("" if self.total is None else f"/{self.total:,}")
        parts = [f"{self.description}: {counted} {self.unit}"]
        if self.total:
            parts.append(f"{100.0 * self.done / self.total:.0f}%")
        parts.append(f"{elapsed:.1f}s")
        moved = self.done - self.start
        if elapsed > 0 and moved > 0:
            parts.append(f"{moved / elapsed:,.1f} {self.unit}/s")
        parts += [f"{name}={value:.4g}" for name, value in self.values.items()]
        return ", ".join(parts)

    def _show(self, now: float, final: bool = False) -> None:
        self.shown_at = now
        text = self.line(now)
        if self.terminal:
            self.stream.write("\r" + text.ljust(self.width) + ("\n" if final else ""))
            self.width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def track(items: Iterable[Item], description: str, total: Optional[int] = None, unit: str = "it",
          enabled: bool = True) -> Iterator[Item]:
    """Yield `items`, counting them on a Progress."""
    with Progress(description, total, unit, enabled=enabled) as progress:
        for item in items:
            yield item
            progress.advance()

"""How every tfbench binary talks to the shell: one-line errors, exit codes, flag parsing.

Holds no flags itself, so binaries with different flag sets (the regimes, report, prepare, sweep)
share it without defining each other's flags.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, List, NoReturn, TypeVar

T = TypeVar("T")

# TensorFlow's C++ start-up chatter buries the progress display; a user who wants it sets
# TF_CPP_MIN_LOG_LEVEL themselves.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

USAGE_ERROR = 2  # bad input: nothing ran, nothing was written
RUN_FAILED = 1  # the input was fine but a run failed (its record says why)
INCOMPLETE = 3  # nothing failed, but some tasks wait for others not finished yet (rerun to complete)


def fail(message: str, code: int = USAGE_ERROR) -> NoReturn:
    """One line on stderr and a non-zero exit: the contract for every bad input."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def warn(message: str) -> None:
    """One line on stderr about something tfbench handled on its own (and what it did)."""
    print(f"warning: {' '.join(message.split())}", file=sys.stderr, flush=True)


def interruptible(work: Callable[[], T]) -> T:
    """work() with SIGTERM and SIGINT asking it to stop at its next safe point (tfbench.interruption).

    When it stops, the one line saying where and how to resume is printed and the process exits
    with 128 + the signal number (a second signal exits at once, without the line).
    """
    from tfbench import interruption

    try:
        with interruption.handling_signals():
            return work()
    except interruption.Interrupted as stopped:
        print(stopped.line(), file=sys.stderr, flush=True)
        sys.exit(stopped.exit_code)


def quiet_libraries() -> None:
    """Keep the terminal for tfbench's own progress: TensorFlow's and absl's INFO lines (one per
    checkpoint) and retracing warnings say nothing a user can act on."""
    import logging

    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def run_app(main: Callable[[], None]) -> None:
    """absl's app.run with flag errors as one line and stray positional arguments refused."""
    from absl import app, flags

    def parse_flags(argv: List[str]) -> List[str]:
        try:
            return flags.FLAGS(argv)
        except flags.Error as error:  # absl's own message spans two lines
            fail(str(error))

    def absl_main(argv: List[str]) -> None:
        quiet_libraries()
        if len(argv) > 1:
            fail(f"unexpected arguments {argv[1:]}; flags take the form --name=value")
        main()

    app.run(absl_main, flags_parser=parse_flags)


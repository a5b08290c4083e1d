"""How every tfbench binary talks to the shell: one-line errors, exit codes, flag parsing.

Holds no flags itself, so binaries with different flag sets (the regimes, report, prepare, sweep)
share it without defining each other's flags.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile
import textwrap
from typing import Callable, Iterator, List, NoReturn

# TensorFlow's C++ start-up chatter buries the progress display; a user who wants it sets
# TF_CPP_MIN_LOG_LEVEL themselves (or passes --verbose).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Lines TensorFlow's C++ libraries print at start-up through absl's C++ log, which writes to the
# stderr file descriptor before anything can configure it (so TF_CPP_MIN_LOG_LEVEL does not reach
# them), once per shared library that carries it: twice. None asks anything of the user.
TENSORFLOW_START_UP = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called"
    r"|\] oneDNN custom operations are on"
    r"|\] Could not find cuda drivers"
    r"|\] failed call to cuInit"
    r"|\] This TensorFlow binary is optimized"
    r"|^To enable the following instructions")

HELP_WIDTH = 100  # columns of --help and of the --model=list / --dataset=list tables
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


def quiet_libraries() -> None:
    """Keep the terminal for tfbench's own progress: TensorFlow's and absl's INFO lines (one per
    checkpoint) and retracing warnings say nothing a user can act on."""
    import logging

    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


@contextlib.contextmanager
def _without_start_up_lines() -> Iterator[None]:
    """Capture the stderr file descriptor (where C++ writes) and pass on all but the start-up lines."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not TENSORFLOW_START_UP.search(line)))
            sys.stderr.flush()


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Whichever module imports TensorFlow first, the import and its first look for devices (where
    CUDA is tried) run without TensorFlow's start-up lines. Binaries import TensorFlow only once
    their flags are parsed, so `--model=list` and flag errors stay fast."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            self.loader, spec.loader = spec.loader, self
        return spec

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        with _without_start_up_lines():
            self.loader.exec_module(module)
            module.config.list_physical_devices()


def quiet_tensorflow_start_up() -> None:
    """Drop TensorFlow's start-up lines from this process's stderr (before TensorFlow is imported)."""
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())


def _print_help(flag_values) -> None:
    """--help: the binary's docstring and each tfbench flag it takes, once (absl's own help lists
    only the flags of __main__, which defines none), on stdout, exit 0."""
    print((sys.modules["__main__"].__doc__ or "").strip() + "\n\nFlags:")
    ours = {flag.name: flag for module, listed in flag_values.flags_by_module_dict().items()
            if module.startswith("tfbench") or module == sys.argv[0] for flag in listed}
    for name, flag in sorted(ours.items()):
        default = "" if flag.default is None else f" (default: {flag.default_as_str})"
        print(textwrap.fill(f"--{name}: {flag.help}{default}", HELP_WIDTH, initial_indent="  ",
                            subsequent_indent="      "))
    print("\nTry --helpfull to get a list of all flags, those of the libraries too.")
    sys.exit(0)


HELP_FLAGS = ("--help", "-help", "-h", "--helpshort", "-?")


def run_app(main: Callable[[], None]) -> None:
    """absl's app.run with flag errors as one line, stray positional arguments refused, help on
    stdout with exit 0, and TensorFlow's start-up lines left out unless --verbose."""
    from absl import app, flags

    if "verbose" not in flags.FLAGS:
        flags.DEFINE_boolean("verbose", False, "Show the libraries' own start-up lines and INFO logs "
                             "(TensorFlow's oneDNN and CUDA notices among them).")

    def parse_flags(argv: List[str]) -> List[str]:
        if any(arg in HELP_FLAGS for arg in argv[1:]):
            _print_help(flags.FLAGS)
        try:
            return flags.FLAGS(argv)
        except flags.Error as error:  # absl's own message spans two lines
            fail(re.sub(r"^ERROR::\s*", "", str(error)))
        except SystemExit as exit_:  # --helpfull and kin print on stdout but exit 1
            sys.exit(0 if exit_.code == 1 and any(arg.startswith("--help") for arg in argv[1:]) else exit_.code)

    def absl_main(argv: List[str]) -> None:
        if not flags.FLAGS.verbose:
            quiet_libraries()
            quiet_tensorflow_start_up()
        if len(argv) > 1:
            fail(f"unexpected arguments {argv[1:]}; flags take the form --name=value")
        main()

    app.run(absl_main, flags_parser=parse_flags)


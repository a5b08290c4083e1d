"""Bazel's entry point for one pytest file: `py_test(main = "tests/pytest_main.py", args = [file])`.

    python tests/pytest_main.py tests/test_x.py [pytest arguments]

pytest's exit code is the test's, so a file whose tests fail, or that collects no test (exit 5),
fails its target. The tests start `python -m tfbench.<binary>` subprocesses: they get this
process's import path through PYTHONPATH, which Bazel's Python launcher does not export. Under
`bazel test`, results also go to the JUnit XML file Bazel asks for.
"""

import os
import sys

import pytest


def main(argv):
    if not argv or not argv[0].endswith(".py"):
        print("usage: pytest_main.py TEST_FILE [pytest arguments]", file=sys.stderr)
        return 2
    exported = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    exported += [entry for entry in sys.path if entry and os.path.isdir(entry) and entry not in exported]
    os.environ["PYTHONPATH"] = os.pathsep.join(exported)
    arguments = [argv[0], "-p", "no:cacheprovider", *argv[1:]]
    if os.environ.get("XML_OUTPUT_FILE"):
        arguments.append(f"--junitxml={os.environ['XML_OUTPUT_FILE']}")
    return int(pytest.main(arguments))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

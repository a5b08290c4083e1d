"""setup.py's declared requirements, the lock file's pins, and whether this Python satisfies them.

setup.py is the single source of the requirements: the Bazel lock file (requirements_lock.txt) is
compiled from it, tests/test_build_file.py checks the lock against it, and .ci/setup asks this
module whether anything needs installing, so that an already set-up machine needs neither root
nor network to run the tests:

    python3 .ci/requirements.py installed test ray    exit 0 if tfbench and the requirements of
                                                       .[test,ray] are installed, else 1 (naming
                                                       what is missing)
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import re
import sys
import types
from typing import Dict, List, Set

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCK_FILE = "requirements_lock.txt"
# The platform the lock file is compiled for (and Bazel's hermetic toolchain runs).
LOCK_ENVIRONMENT = {"python_version": "3.11", "python_full_version": "3.11.0", "sys_platform": "linux",
                    "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
                    "implementation_name": "cpython", "platform_python_implementation": "CPython"}

try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version
except ImportError:  # a bare Python, before anything is installed: nothing can be satisfied yet
    Requirement = None


def setup_arguments(root: str = ROOT) -> dict:
    """The keyword arguments setup.py passes to setuptools.setup, read without installing anything."""
    captured = {}
    stub = types.ModuleType("setuptools")
    stub.setup = lambda **kwargs: captured.update(kwargs)
    stub.find_packages = lambda *args, **kwargs: []
    saved = sys.modules.get("setuptools")
    sys.modules["setuptools"] = stub
    try:
        with _working_directory(root):
            source = open("setup.py").read()
            exec(compile(source, os.path.join(root, "setup.py"), "exec"), {"__name__": "__main__"})
    finally:
        if saved is None:
            sys.modules.pop("setuptools", None)
        else:
            sys.modules["setuptools"] = saved
    return captured


def declared(extras: List[str], root: str = ROOT) -> List[Requirement]:
    """install_requires plus the requirements of the given extras (unknown extras raise ValueError)."""
    arguments = setup_arguments(root)
    known = arguments.get("extras_require", {})
    unknown = sorted(set(extras) - set(known))
    if unknown:
        raise ValueError(f"unknown extra {', '.join(unknown)}; setup.py declares: {', '.join(sorted(known))}")
    lines = list(arguments.get("install_requires", []))
    for extra in extras:
        lines += known[extra]
    return [Requirement(line) for line in lines]


def lock_pins(path: str = os.path.join(ROOT, LOCK_FILE)) -> Dict[str, str]:
    """Canonical project name -> pinned version, for every `name==version` line of a lock file."""
    pins = {}
    for match in re.finditer(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(\S+)", open(path).read(), re.M):
        pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def missing(requirements: List[Requirement]) -> List[str]:
    """The requirements (with the extras they ask for, recursively) this Python does not satisfy."""
    problems: List[str] = []
    seen: Set[str] = set()

    def check(requirement: Requirement, extra: str = "") -> None:
        environment = {"extra": extra}
        if requirement.marker is not None and not requirement.marker.evaluate(environment):
            return
        key = f"{canonicalize_name(requirement.name)}[{','.join(sorted(requirement.extras))}]"
        if key in seen:
            return
        seen.add(key)
        try:
            distribution = importlib.metadata.distribution(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{requirement} (not installed)")
            return
        if not requirement.specifier.contains(Version(distribution.version), prereleases=True):
            problems.append(f"{requirement} (installed: {distribution.version})")
            return
        for wanted in requirement.extras:
            for line in distribution.requires or []:
                check(Requirement(line), wanted)

    for requirement in requirements:
        check(requirement)
    return problems


@contextlib.contextmanager
def _working_directory(path: str):
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def main(argv: List[str]) -> int:
    if len(argv) < 1 or argv[0] != "installed":
        print("usage: python3 .ci/requirements.py installed [EXTRA ...]", file=sys.stderr)
        return 2
    if Requirement is None:
        print("requirements: missing packaging (nothing is installed yet)")
        return 1
    try:
        requirements = declared(argv[1:])
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    version = setup_arguments()["version"]
    problems = missing([Requirement(f"tfbench=={version}")] + requirements)
    for problem in problems:
        print(f"requirements: missing {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

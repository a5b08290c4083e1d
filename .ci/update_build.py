"""Writes the Bazel BUILD file from the tree: its targets and dependencies follow the imports.

    python3 .ci/update_build.py            rewrite BUILD
    python3 .ci/update_build.py --check    exit 1 (and say so) if BUILD is not what it would write

Targets, one rule each:
- a py_library per module at the top of tfbench/ (named after it; `tfbench` for __init__.py) and
  per subpackage (tfbench/datasets/ -> `datasets`), with the data files of tfbench/ (outside any
  subpackage) on the `tfbench` package target every module depends on;
- a py_binary `<module>_bin` running `python -m tfbench.<module>` for every module (or package's
  `__main__.py`) with a `__main__` block, with the flagfiles as data;
- a py_test per tests/test_*.py whose main is tests/pytest_main.py, given the test file;
- a py_binary per bench/*.py script.

Dependencies: every tfbench module a file imports (and the packages above it), every third-party
import as the pip hub's `requirement()` of its locked distribution, a direct requirement of
setup.py named in a string (a package imported by name at run time, e.g. the weight packages), and
for tests the tfbench modules they run (`"-m", "tfbench.x"`) and the sibling test modules they
import. An import that no locked distribution provides is an error: add it to setup.py and
recompile the lock file (see its first lines).
"""

from __future__ import annotations

import ast
import glob
import os
import re
import sys
from typing import Dict, Iterable, List, Optional, Set

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import requirements  # noqa: E402  (.ci/requirements.py)

ROOT = requirements.ROOT
COMMAND = "python3 .ci/update_build.py"
RUNNER = "tests/pytest_main.py"
CI_TOOLS = [".ci/requirements.py", ".ci/update_build.py"]
# Import names whose distribution is named differently.
DISTRIBUTION_OF_IMPORT = {
    "PIL": "pillow", "absl": "absl-py", "sklearn": "scikit-learn", "yaml": "pyyaml",
    "google.protobuf": "protobuf", "attr": "attrs", "dateutil": "python-dateutil",
    "pkg_resources": "setuptools", "grpc": "grpcio",
}
# Tests that read the repository itself (BUILD, the lock file, every source) get all of it.
TREE_READING_TESTS = {"tests/test_build_file.py", "tests/test_cluster_manifests.py"}
# (.ci/'s Python files come with the `ci_tools` library: a glob of a hidden folder may match nothing.)
REPOSITORY_FILES = [".bazelrc", ".bazelversion", "BUILD", "CITATION.cff", "Dockerfile", "LICENSE", "MODULE.bazel",
                    "README.md", "requirements_lock.txt", "setup.py"]
REPOSITORY_TREES = ["bench/**", "docs/**", "flags/**", "tests/**", "tfbench/**"]


class BuildGenerationError(ValueError):
    """The tree cannot be described: an import without a locked distribution, or a missing module."""


def _relative(path: str, root: str) -> str:
    return os.path.relpath(path, root).replace(os.sep, "/")


def _python_files(root: str, pattern: str) -> List[str]:
    return sorted(_relative(p, root) for p in glob.glob(os.path.join(root, pattern), recursive=True)
                  if "__pycache__" not in p)


def library_of(path: str) -> Optional[str]:
    """The library target that owns a tfbench source file (None outside tfbench/)."""
    parts = path.split("/")
    if parts[0] != "tfbench":
        return None
    if len(parts) == 2:
        stem = parts[1][:-3]
        return "tfbench" if stem == "__init__" else stem
    return parts[1]


def data_owner(path: str, root: str) -> Optional[str]:
    """The library of the closest Python package holding a data file (tfbench/data/ -> `tfbench`)."""
    folder = os.path.dirname(path)
    while folder.startswith("tfbench"):
        if os.path.exists(os.path.join(root, folder, "__init__.py")):
            return library_of(folder + "/__init__.py")
        folder = os.path.dirname(folder)
    return None


def module_file(module: str, root: str) -> Optional[str]:
    """The source file of a dotted tfbench module name, if it exists in the tree."""
    base = module.replace(".", "/")
    for candidate in (base + ".py", base + "/__init__.py"):
        if os.path.exists(os.path.join(root, candidate)):
            return candidate
    return None


def _package_files(path: str, root: str) -> Set[str]:
    """The __init__.py of every package above a file (importing it imports them)."""
    parts = path.split("/")[:-1]
    found = set()
    for depth in range(1, len(parts) + 1):
        init = "/".join(parts[:depth]) + "/__init__.py"
        if os.path.exists(os.path.join(root, init)):
            found.add(init)
    return found


class Scan:
    """What one source file needs: tfbench files, third-party distributions, sibling test modules."""

    def __init__(self, path: str, root: str, locked: Dict[str, str], direct: Set[str]):
        self.path = path
        tree = ast.parse(open(os.path.join(root, path)).read(), path)
        self.tfbench: Set[str] = set(_package_files(path, root)) if path.startswith("tfbench/") else set()
        self.distributions: Set[str] = set()
        self.siblings: Set[str] = set()
        self.strings: List[str] = [node.value for node in ast.walk(tree)
                                   if isinstance(node, ast.Constant) and isinstance(node.value, str)]
        self.main = any(isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)
                        for node in tree.body)
        for module in self._imports(tree):
            top = module.split(".")[0]
            if top == "tfbench":
                self._add_tfbench(module, root)
            elif top in sys.stdlib_module_names or top == "__future__":
                continue
            elif os.path.exists(os.path.join(root, os.path.dirname(path), top + ".py")):
                self.siblings.add(os.path.dirname(path) + "/" + top + ".py")
            else:
                self.distributions.add(self._distribution(module, locked))
        # Direct requirements a module names in a string: imported by name at run time if nothing
        # imports them (the weight packages).
        self.named = {requirements.canonicalize_name(text) for text in self.strings
                      if re.fullmatch(r"[A-Za-z0-9._-]+", text)} & direct if path.startswith("tfbench/") else set()

    @staticmethod
    def _imports(tree: ast.AST) -> Iterable[str]:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                yield from (alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                yield node.module
                if node.module.split(".")[0] == "tfbench":
                    yield from (f"{node.module}.{alias.name}" for alias in node.names)

    def _add_tfbench(self, module: str, root: str) -> None:
        source = module_file(module, root)
        if source is not None:
            self.tfbench |= {source} | _package_files(source, root)

    def run_modules(self, root: str) -> None:
        """Count `tfbench.x` modules named in strings as needed (tests run them as subprocesses)."""
        for text in self.strings:
            for module in re.findall(r"\btfbench(?:\.[A-Za-z_]\w*)+", text):
                self._add_tfbench(module, root)

    def _distribution(self, module: str, locked: Dict[str, str]) -> str:
        parts = module.split(".")
        for name in (".".join(parts[:2]), parts[0]):
            candidate = requirements.canonicalize_name(DISTRIBUTION_OF_IMPORT.get(name, name))
            if candidate in locked:
                return candidate
        raise BuildGenerationError(
            f"{self.path} imports {module!r}, which no distribution in {requirements.LOCK_FILE} provides: "
            "add it to setup.py and recompile the lock file (its first lines say how), or map its "
            "import name in DISTRIBUTION_OF_IMPORT of .ci/update_build.py")


def _label_list(labels: Iterable[str]) -> str:
    return "[" + "".join(f"\n        {label}," for label in labels) + "\n    ]" if labels else "[]"


def _rule(kind: str, **attributes) -> str:
    lines = [f"{kind}("]
    for key, value in attributes.items():
        if value is None or value == []:
            continue
        text = _label_list(value) if isinstance(value, list) else value
        lines.append(f"    {key} = {text},")
    lines.append(")")
    return "\n".join(lines)


def _quoted(items: Iterable[str]) -> List[str]:
    return [f'"{item}"' for item in items]


def _deps(scans: List[Scan], own: str, dynamic: Set[str], extra_targets: Iterable[str] = ()) -> List[str]:
    targets = {library_of(path) for scan in scans for path in scan.tfbench} - {own, None}
    targets |= set(extra_targets)
    distributions = {name for scan in scans for name in scan.distributions | (scan.named & dynamic)}
    return ([f'":{target}"' for target in sorted(targets)]
            + [f'requirement("{name}")' for name in sorted(distributions)])


def _repository_files(root: str) -> str:
    """REPOSITORY_FILES and REPOSITORY_TREES that exist (Bazel refuses a pattern that matches nothing)."""
    files = [path for path in REPOSITORY_FILES if os.path.exists(os.path.join(root, path))]
    trees = [pattern for pattern in REPOSITORY_TREES if glob.glob(os.path.join(root, pattern), recursive=True)]
    return (_label_list(_quoted(files)) + " + glob(\n        " + _label_list(_quoted(trees)).replace("\n", "\n    ")
            + ',\n        exclude = ["**/__pycache__/**"],\n    )')


def _refuse_cycles(graph: Dict[str, Set[str]]) -> None:
    """Bazel refuses a dependency cycle between targets, which Python would tolerate."""
    state: Dict[str, str] = {}

    def visit(node: str, trail: List[str]) -> None:
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                cycle = trail[trail.index(dep):] + [dep] if dep in trail else [node, dep]
                raise BuildGenerationError(f"import cycle between targets: {' -> '.join(cycle)}")
            if dep not in state:
                visit(dep, trail + [dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def render(root: str = ROOT) -> str:
    """The BUILD file the tree calls for."""
    locked = requirements.lock_pins(os.path.join(root, requirements.LOCK_FILE))
    arguments = requirements.setup_arguments(root)
    direct_lines = list(arguments.get("install_requires", []))
    for extra_lines in arguments.get("extras_require", {}).values():
        direct_lines += extra_lines
    direct = {requirements.canonicalize_name(requirements.Requirement(line).name) for line in direct_lines}

    def scan(path: str) -> Scan:
        return Scan(path, root, locked, direct)

    sources = _python_files(root, "tfbench/**/*.py")
    if not sources:
        raise BuildGenerationError(f"no tfbench/ sources under {root}")
    libraries: Dict[str, List[str]] = {}
    for path in sources:
        libraries.setdefault(library_of(path), []).append(path)
    data = sorted(_relative(p, root) for p in glob.glob(os.path.join(root, "tfbench", "**", "*"), recursive=True)
                  if os.path.isfile(p) and not p.endswith((".py", ".pyc")) and "__pycache__" not in p)
    for path in data:
        if data_owner(path, root) not in libraries:
            raise BuildGenerationError(f"{path} is outside every tfbench package")
    scans = {path: scan(path) for path in sources}
    others = {path: scan(path) for path in _python_files(root, "bench/*.py") + _python_files(root, "tests/*.py")}
    imported = {name for found in list(scans.values()) + list(others.values()) for name in found.distributions}
    dynamic = direct - imported

    blocks = [
        "# Bazel targets for every module, binary, test and benchmark of tfbench (rules_python, with the\n"
        "# pip hub `pip` of MODULE.bazel compiled from setup.py into requirements_lock.txt).\n"
        f"# Written by `{COMMAND}` from the tree's imports: do not edit by hand. Run it after\n"
        "# adding, moving or removing a module; tests/test_build_file.py fails while this file is stale.\n"
        "# `bazel test //...` runs every test file through tests/pytest_main.py (pytest's exit code).\n"
        'load("@pip//:requirements.bzl", "requirement")\n'
        'load("@rules_python//python:defs.bzl", "py_binary", "py_library", "py_test")\n\n'
        'package(default_visibility = ["//visibility:public"])',
        _rule("filegroup", name='"flagfiles"', srcs='glob(["flags/*.flags"])'),
        _rule("filegroup", name='"repository_files"', testonly=True, srcs=_repository_files(root)),
        _rule("py_library", name='"ci_tools"', testonly=True, srcs=_quoted(CI_TOOLS),
              deps=['requirement("packaging")']),
    ]
    _refuse_cycles({name: {library_of(path) for f in files for path in scans[f].tfbench} - {name}
                    for name, files in libraries.items()})
    binaries = []
    for name in sorted(libraries):
        files = libraries[name]
        own_data = [path for path in data if data_owner(path, root) == name]
        blocks.append(_rule("py_library", name=f'"{name}"', srcs=_quoted(files), data=_quoted(own_data),
                            deps=_deps([scans[path] for path in files], name, dynamic)))
        for path in files:
            if scans[path].main:
                binaries.append((path[:-3].replace("/", ".").removesuffix(".__main__"), name))
    for module, library in binaries:
        blocks.append(_rule("py_binary", name=f'"{module.split(".")[-1]}_bin"', data=['":flagfiles"'],
                            main_module=f'"{module}"', deps=[f'":{library}"']))
    for path in _python_files(root, "bench/*.py"):
        siblings = sorted(others[path].siblings)  # a bench script may reuse another's problems
        blocks.append(_rule("py_binary", name=f'"{os.path.basename(path)[:-3]}"', srcs=_quoted([path] + siblings),
                            main=f'"{path}"', data=['":flagfiles"'],
                            deps=_deps([others[path]] + [others[s] for s in siblings], "", dynamic)))

    conftest = "tests/conftest.py"
    if os.path.exists(os.path.join(root, conftest)):
        blocks.append(_rule("py_library", name='"conftest"', testonly=True, srcs=_quoted([conftest]),
                            deps=_deps([others[conftest]], "", dynamic)))
    for path in _python_files(root, "tests/test_*.py"):
        test = others[path]
        test.run_modules(root)
        siblings = sorted(test.siblings)
        extra = ["conftest"] if os.path.exists(os.path.join(root, conftest)) else []
        if any(tool in test.strings for tool in CI_TOOLS):
            extra.append("ci_tools")
        test_data = ['":flagfiles"'] + (['":repository_files"'] if path in TREE_READING_TESTS else [])
        runner = others[RUNNER]
        blocks.append(_rule(
            "py_test", name=f'"{os.path.basename(path)[:-3]}"', size='"large"',
            srcs=_quoted([RUNNER, path]), main=f'"{RUNNER}"', args=_quoted([f"$(rootpath {path})"]),
            data=test_data + _quoted(siblings),
            deps=_deps([test, runner] + [others[s] for s in siblings], "", dynamic, extra)))
    names = re.findall(r'^    name = "([^"]+)",$', "\n".join(blocks), re.M)
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise BuildGenerationError(f"two targets would be called {', '.join(twice)}: rename a file")
    return "\n\n".join(blocks) + "\n"


def main(argv: List[str]) -> int:
    check = argv == ["--check"]
    if argv and not check:
        print(f"usage: {COMMAND} [--check]", file=sys.stderr)
        return 2
    try:
        text = render()
    except BuildGenerationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    path = os.path.join(ROOT, "BUILD")
    current = open(path).read() if os.path.exists(path) else ""
    if check:
        if current != text:
            print(f"BUILD is stale: run `{COMMAND}`")
            return 1
        return 0
    if current != text:
        staging = path + ".tmp"
        with open(staging, "w") as handle:
            handle.write(text)
        os.replace(staging, path)
        print("BUILD rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

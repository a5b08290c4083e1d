"""The Bazel BUILD file stays in step with the tree: every module, binary and test has a target,
every target's files exist, and every tfbench import a module makes is a declared dependency."""

import ast
import glob
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_build():
    """Evaluate BUILD with the rules replaced by recorders (Starlark here is a Python subset)."""
    targets = {}

    def rule(kind):
        def record(**kwargs):
            name = kwargs["name"]
            assert name not in targets, f"target {name} defined twice"
            targets[name] = dict(kwargs, kind=kind)
        return record

    namespace = {
        "load": lambda *args: None,
        "package": lambda **kwargs: None,
        "requirement": lambda name: f"@pip//{name}",
        "py_library": rule("py_library"),
        "py_binary": rule("py_binary"),
        "py_test": rule("py_test"),
        "filegroup": rule("filegroup"),
        "glob": lambda patterns, **_: sorted(
            os.path.relpath(p, ROOT) for pattern in patterns for p in glob.glob(os.path.join(ROOT, pattern))),
    }
    with open(os.path.join(ROOT, "BUILD")) as handle:
        exec(compile(handle.read(), "BUILD", "exec"), namespace)
    return targets


TARGETS = _load_build()
OWNER = {src: name for name, t in TARGETS.items() if t["kind"] != "py_test" for src in t.get("srcs", [])}


def _tfbench_imports(path):
    """Modules of tfbench that a file imports (as repository-relative source paths)."""
    tree = ast.parse(open(os.path.join(ROOT, path)).read())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tfbench"):
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            modules.update(a.name for a in node.names if a.name.startswith("tfbench"))
    sources = set()
    for module in modules:
        base = module.replace(".", "/")
        for candidate in (base + ".py", base + "/__init__.py"):
            if os.path.exists(os.path.join(ROOT, candidate)):
                sources.add(candidate)
    return sources


def test_every_module_belongs_to_exactly_one_library_or_binary():
    modules = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "tfbench", "**", "*.py"), recursive=True))
    claimed = [src for t in TARGETS.values() if t["kind"] != "py_test" for src in t.get("srcs", [])]
    assert sorted(m for m in modules if m not in claimed) == [], "modules without a BUILD target"
    assert len(claimed) == len(set(claimed)), "a source file is claimed by two targets"


def test_every_test_file_has_a_py_test():
    tests = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "tests", "test_*.py")))
    declared = sorted(src for t in TARGETS.values() if t["kind"] == "py_test" for src in t["srcs"])
    assert tests == declared


def test_every_binary_module_has_a_py_binary():
    for path in glob.glob(os.path.join(ROOT, "tfbench", "*.py")):
        source = open(path).read()
        relative = os.path.relpath(path, ROOT)
        if 'if __name__ == "__main__":' in source:
            owner = TARGETS[OWNER[relative]]
            assert owner["kind"] == "py_binary" and owner.get("main") == relative, relative


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_target_files_exist_and_deps_resolve(name):
    target = TARGETS[name]
    for src in target.get("srcs", []) + target.get("data", []):
        if not src.startswith(":"):
            assert os.path.exists(os.path.join(ROOT, src)), f"{name}: missing {src}"
    for dep in target.get("deps", []):
        if dep.startswith(":"):
            assert dep[1:] in TARGETS, f"{name}: unknown dep {dep}"


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_tfbench_imports_are_declared_deps(name):
    target = TARGETS[name]
    own = set(target.get("srcs", []))
    needed = set()
    for src in own:
        needed |= {OWNER[s] for s in _tfbench_imports(src) if s not in own and s in OWNER}
    declared = {d[1:] for d in target.get("deps", []) if d.startswith(":")}
    assert needed - declared == set(), f"{name} imports targets it does not declare"

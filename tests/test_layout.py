"""The package's layout: docs/DESIGN.md's tree matches tfbench/, imports only go downwards in the
sense that library modules never reach the command-line layer (flags), and there are no cycles."""

import ast
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "tfbench")
BINARIES = {"tfbench.probe", "tfbench.estimate", "tfbench.finetune", "tfbench.scratch", "tfbench.sweep", "tfbench.prepare", "tfbench.doctor",
            "tfbench.imagenet_eval", "tfbench.report.__main__"}
COMMAND_LINE = "tfbench.app"


def _modules():
    found = {}
    for folder, _, names in os.walk(PACKAGE):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                found[dotted.removesuffix(".__init__")] = path
    return found


def _imports(path):
    """tfbench modules a file imports, at any depth (lazy imports inside functions count)."""
    tree = ast.parse(open(path).read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names if alias.name.startswith("tfbench")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tfbench"):
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def _resolved(names, modules):
    return {name for name in names if name in modules}


def _defines_flags_on_import(path):
    """Whether importing the module defines absl flags (a definition inside a function does not)."""
    tree = ast.parse(open(path).read())
    top_level = [node for node in tree.body if not isinstance(node, (ast.FunctionDef, ast.ClassDef))]
    return any(isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
               and call.func.attr.startswith("DEFINE_") for node in top_level for call in ast.walk(node))


def test_design_tree_lists_every_module_and_only_those():
    text = open(os.path.join(ROOT, "docs", "DESIGN.md")).read()
    block = re.search(r"## Package tree.*?```\n(.*?)```", text, re.S).group(1)
    listed, folders = set(), []
    for line in block.splitlines():
        match = re.match(r"( *)(\S+)", line)
        if not match or not match.group(2).endswith((".py", "/")):
            continue  # a description's continuation line
        depth = len(match.group(1)) // 2
        folders = folders[:depth] + [match.group(2)]
        if match.group(2).endswith(".py"):
            listed.add("".join(folders))
    described_whole = {"tfbench/backbones/", "tfbench/datasets/"}  # one line for the subpackage
    actual = {os.path.relpath(path, ROOT) for path in _modules().values()}
    actual = {path for path in actual if not any(path.startswith(folder) for folder in described_whole)}
    actual -= {os.path.join(os.path.dirname(p), "__init__.py") for p in actual
               if os.path.dirname(p) != "tfbench" and p.endswith("__init__.py")}
    assert listed == actual, (f"in DESIGN.md but not in tfbench/: {sorted(listed - actual)}; "
                              f"in tfbench/ but not in DESIGN.md: {sorted(actual - listed)}")


def test_no_library_module_imports_flag_definitions():
    modules = _modules()
    defining = {name for name, path in modules.items() if _defines_flags_on_import(path)}
    allowed = {name for name in defining if name.startswith(COMMAND_LINE)} | BINARIES
    assert defining <= allowed, f"flags defined outside the command-line layer: {sorted(defining - allowed)}"
    command_line = defining | {name for name in modules if name.startswith(COMMAND_LINE)}
    for name, path in modules.items():
        if name in BINARIES or name.startswith(COMMAND_LINE):
            continue
        flagged = _resolved(_imports(path), modules) & command_line
        assert not flagged, f"library module {name} imports the command-line layer {sorted(flagged)}"


def test_the_import_graph_has_no_cycles():
    modules = _modules()
    graph = {name: _resolved(_imports(path), modules) - {name} for name, path in modules.items()}
    # A package's __init__ importing its own submodules is how packages re-export: not a cycle.
    for name in graph:
        graph[name] = {other for other in graph[name] if not name.startswith(other + ".")}
    state = {}

    def visit(name, trail):
        state[name] = "open"
        for other in sorted(graph[name]):
            if state.get(other) == "open":
                raise AssertionError("import cycle: " + " -> ".join(trail[trail.index(other):] + [other]))
            if other not in state:
                visit(other, trail + [other])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])

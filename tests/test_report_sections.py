"""The report's one rendering convention (docs/DESIGN.md, "The report"): each section of report.md
after its summary is the result object of the analysis module that owns it, with markdown() (its
lines) and figures(figures) (the figure files those lines name, drawn by tfbench.report.figures);
build.py only orders the sections and writes the files."""

import ast
import importlib
import inspect
import pkgutil

import pytest

from test_report import TOP1, _write
from tfbench import results
from tfbench.report import build, figures

BUILD = build.__file__


class FigureCalls:
    """Stands in for tfbench.report.figures: answers each drawing call with the function's name."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: name


@pytest.fixture(scope="module")
def analysis(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("runs"))
    for model, score in (("mobilenet_v2", 0.60), ("resnet50", 0.70), ("resnet101", 0.72)):
        for regime, offset in (("probe", 0.0), ("finetune", 0.1), ("scratch", -0.2)):
            _write(root, regime, model, "dtd", score + offset)
    _write(root, "scratch", "efficientnet_lite0", "dtd", None, status="failed", reason="OOM")
    return build.analyze(results.collect(root), TOP1.get, output_dir=root, resamples=20)


def test_every_section_comes_from_its_analysis_module_and_names_the_figures_it_draws(analysis):
    sections = build.sections(analysis)
    assert {type(s).__module__ for s in sections} >= {
        "tfbench.report.protocol_groups", "tfbench.report.comparisons", "tfbench.report.analysis",
        "tfbench.report.convergence", "tfbench.report.checkpoints", "tfbench.report.significance"}
    drawn = set()
    for section in sections:
        assert type(section).__module__ != build.__name__
        lines = section.markdown()
        assert lines and all(isinstance(line, str) for line in lines)
        assert lines[0].startswith("## ")
        for file_name, function in section.figures(FigureCalls()).items():
            assert f"]({file_name})" in "\n".join(lines), (type(section).__name__, file_name)
            assert callable(getattr(figures, function))
            drawn.add(function)
    assert {"figure1", "comparison_figure", "per_dataset_figure", "size_split_figure"} <= drawn
    after_summary = "\n".join(line for s in sections for line in s.markdown())
    assert build.report_markdown(analysis).endswith("\n" + after_summary)


def test_every_section_class_of_the_report_has_the_same_entry_points():
    import tfbench.report

    found = []
    for info in pkgutil.iter_modules(tfbench.report.__path__):
        if info.name == "__main__":  # the report's binary: its flags clash with the others' in one process
            continue
        module = importlib.import_module(f"tfbench.report.{info.name}")
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and hasattr(cls, "markdown"):
                found.append(name)
                assert list(inspect.signature(cls.markdown).parameters) == ["self"], name
                assert list(inspect.signature(cls.figures).parameters) == ["self", "figures"], name
    assert len(found) >= 12


def test_build_formats_no_section_of_its_own():
    tree = ast.parse(open(BUILD).read())
    functions = [node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)]
    assert not [f for f in functions if f.endswith("_rows") or f.startswith("_") and f.endswith("_markdown")]
    assert "markdown_table" not in {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    texts = [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)]
    headings = [t for t in texts if t.startswith("#")]
    assert headings == ["# tfbench report\n", "## Summary\n"]
    assert not [t for t in texts if "| " in t or "](" in t or t.startswith("![")]

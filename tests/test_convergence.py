"""Convergence (the paper's Figure 8) on hand-written run records whose validation curves have
steps to 90% / 95% of their final score worked out by hand; the report's table, figure and JSON,
and the one line it writes when the curves or the scratch runs are missing."""

import io
import json
import os

import pytest

from tfbench import files, results
from tfbench.report import convergence, figures, build as report
from tfbench.report.comparisons import NotDrawn
from tfbench.experiment import path_component

STEPS = {"search": "grid", "train_steps": 400}
CHEAP_SECTION = "## Convergence, cheap approximation"  # after Figure 8 as the paper measured it (test_budgets.py)

# Curves of the chosen trials, and by hand: final (last point), 90% and 95% of it, and the first
# logged step at or above each.
A_FINETUNE = [[100, 0.50], [200, 0.72], [300, 0.79], [400, 0.80]]  # 0.72 = 90% exactly -> 200; 0.76 -> 300
A_SCRATCH = [[100, 0.10], [200, 0.30], [300, 0.58], [400, 0.60]]  # 0.54 -> 300; 0.57 -> 300
B_FINETUNE = [[100, 0.95], [200, 0.97], [300, 0.96], [400, 0.98]]  # 0.882 and 0.931 -> 100, the first point
B_SCRATCH = [[100, 0.20], [200, 0.50], [300, 0.60], [400, 0.90]]  # 0.81 and 0.855 -> 400, only the end
ONE_POINT = [[400, 0.70]]  # logged only at the end (--eval_every=0)
EXPECTED = {  # (model, dataset): (fine-tuned 90%, 95%), (scratch 90%, 95%), ratios at 90%, 95%
    ("a_net", "dtd"): ((200, 300), (300, 300), (1.5, 1.0)),
    ("b_net", "dtd"): ((100, 100), (400, 400), (4.0, 4.0)),
    ("a_net", "pets"): ((200, 300), (300, 300), (1.5, 1.0)),
}


def _write(root, regime, model, dataset, curve, *, status="ok", settings=STEPS):
    """A fine-tune or scratch run record as tfbench.finetune writes it (curve None: an older
    record, without the field)."""
    experiment = {"regime": regime, "model": model, "dataset": dataset, "output_dir": str(root),
                  "settings": settings, "seed": 0, "data_dir": None, "image_size": 32, "batch_size": 16,
                  "precision": "auto", "cache_dir": None, "preset": "mini"}
    record = {"schema_version": 2, "experiment": experiment, "status": status, "reason": None,
              "metric": "top1", "hyperparameters": {}, "trials": [], "timings": {},
              "test_score": curve[-1][1] if curve and status == "ok" else (0.5 if status == "ok" else None),
              "protocol": {"name": "mini", "differences": {}}, "started_at": "2026-01-01T00:00:00+00:00",
              "finished_at": "2026-01-01T00:00:00+00:00"}
    if curve is not None:
        record[results.CHOSEN_CURVE] = curve
    folder = os.path.join(str(root), regime, path_component(dataset), path_component(model))
    files.write_json_atomic(os.path.join(folder, results.RECORD_FILE), record)


def _study(root):
    for dataset in ("dtd", "pets"):
        _write(root, "finetune", "a_net", dataset, A_FINETUNE)
        _write(root, "scratch", "a_net", dataset, A_SCRATCH)
    _write(root, "finetune", "b_net", "dtd", B_FINETUNE)
    _write(root, "scratch", "b_net", "dtd", B_SCRATCH)
    _write(root, "finetune", "c_net", "pets", ONE_POINT)
    _write(root, "scratch", "c_net", "pets", A_SCRATCH)
    _write(root, "finetune", "d_net", "pets", None)  # written before records carried the curve
    _write(root, "scratch", "d_net", "pets", A_SCRATCH)
    _write(root, "finetune", "e_net", "pets", A_FINETUNE)
    _write(root, "scratch", "e_net", "pets", None, status="diverged")


def _report(root):
    out = io.StringIO()
    analysis, paths = report.report(str(root), str(root / "report"), imagenet_top1=lambda model: None,
                                    resamples=100, file=out)
    with open(root / "report" / "report.md") as handle:
        return analysis, {os.path.basename(p) for p in paths}, handle.read()


def test_steps_to_90_and_95_percent_and_ratios_match_the_hand_computed_ones(tmp_path):
    _study(tmp_path)
    analysis, names, markdown = _report(tmp_path)
    [outcome] = convergence.converge(analysis.comparisons)
    rows = {(r.model, r.dataset): r for r in outcome.rows}
    assert set(rows) == set(EXPECTED) | {("c_net", "pets")}
    for cell, (finetuned, scratch, ratios) in EXPECTED.items():
        row = rows[cell]
        assert tuple(row.finetune.steps_to(f) for f in (0.9, 0.95)) == finetuned, cell
        assert tuple(row.scratch.steps_to(f) for f in (0.9, 0.95)) == scratch, cell
        assert tuple(row.ratio(f) for f in (0.9, 0.95)) == pytest.approx(ratios), cell
    assert rows[("a_net", "dtd")].finetune.final == 0.80 and rows[("b_net", "dtd")].scratch.final == 0.90
    assert rows[("b_net", "dtd")].finetune.reached_at_first_point(0.9)
    assert not rows[("a_net", "dtd")].finetune.reached_at_first_point(0.9)
    # Too short a curve gives no steps, and says why.
    assert rows[("c_net", "pets")].finetune.steps_to(0.9) is None and rows[("c_net", "pets")].ratio(0.9) is None
    assert outcome.median_ratio(0.9) == pytest.approx(1.5) and outcome.median_ratio(0.95) == pytest.approx(1.0)
    assert outcome.missing == (
        "fine-tuned (finetune): c_net on pets: a curve of 1 point(s), fewer than 3 (run with --eval_every "
        "below the steps)",
        "fine-tuned (finetune): d_net on pets: its record has no validation curve (written before run "
        "records carried one)",
        "from scratch (scratch): e_net on pets: no ok run")

    # The report: its table (<= marks a step reached at the first logged point), JSON and figure.
    section = markdown.split(CHEAP_SECTION)[1].split("\n## ")[0]
    assert ("| b_net | dtd | 98.0 | 90.0 | <=100 | 400 | 4.00 | <=100 | 400 | 4.00 |") in section
    assert "| a_net | pets | 80.0 | 60.0 | 200 | 300 | 1.50 | 300 | 300 | 1.00 |" in section
    assert "median over 3 (model, dataset) pairs: 1.50 to 90%, 1.00 to 95%." in section
    assert "d_net on pets" in section
    assert "![Convergence, cheap approximation](convergence.png)" in section and "convergence.png" in names
    with open(tmp_path / "report" / "report.json") as handle:
        [entry] = json.load(handle)["convergence"]
    b_row = next(r for r in entry["rows"] if r["model"] == "b_net")
    assert b_row["finetune"]["steps_to"] == {"0.9": 100, "0.95": 100} and b_row["ratio"]["0.9"] == 4.0
    assert b_row["scratch"]["curve"] == B_SCRATCH and entry["median_ratio"]["0.9"] == 1.5


def test_figure_has_a_panel_per_dataset_and_two_curves_per_network(tmp_path):
    _study(tmp_path)
    analysis, _, _ = _report(tmp_path)
    [outcome] = convergence.converge(analysis.comparisons)
    figure = figures.convergence_figure(outcome, {"a_net": "A-Net"})
    panels = {axes.get_title(): axes for axes in figure.axes}
    assert set(panels) == {"dtd", "pets"}
    # dtd: a_net and b_net, fine-tuned and scratch; pets: a_net and c_net (c_net's one point drawn too)
    assert sorted(len(line.get_xdata()) for line in panels["dtd"].lines) == [4, 4, 4, 4]
    assert sorted(len(line.get_xdata()) for line in panels["pets"].lines) == [1, 4, 4, 4]
    assert 100 * B_SCRATCH[-1][1] in [line.get_ydata()[-1] for line in panels["dtd"].lines]  # in percent
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    assert legend == ["A-Net", "b_net", "c_net", "fine-tuned", "from scratch"]
    figures.png(figure)  # renders


def test_without_scratch_runs_or_curves_one_line_says_what_is_missing(tmp_path):
    _write(tmp_path, "finetune", "a_net", "dtd", A_FINETUNE)
    analysis, names, markdown = _report(tmp_path)
    outcomes = convergence.converge(analysis.comparisons)
    assert all(isinstance(outcome, NotDrawn) for outcome in outcomes) and len(outcomes) == 2
    section = markdown.split(CHEAP_SECTION)[1].split("\n## ")[0]
    assert ("each with its own protocol: not drawn: no scratch runs of the same protocol (paper, or the "
            "same preset) in this folder.") in section
    assert not any(name.startswith("convergence") for name in names)

    _write(tmp_path, "scratch", "a_net", "dtd", None)  # an older record: no curve
    analysis, names, markdown = _report(tmp_path)
    [outcome] = convergence.converge(analysis.comparisons)
    assert not outcome.drawn()
    lines = [line for line in markdown.split(CHEAP_SECTION)[1].split("\n## ")[0].splitlines()
             if line.startswith("Convergence")]
    assert lines == ["Convergence (Fine-tuning vs training from scratch, each with its own protocol: finetune "
                     "vs scratch): not drawn: no (model, dataset) has a validation curve "
                     "of at least 3 points on both sides; missing: from scratch (scratch): a_net on dtd: its "
                     "record has no validation curve (written before run records carried one)."]
    assert not any(name.startswith("convergence") for name in names)


def test_each_regime_pairs_with_its_own_protocol_and_equal_steps_is_a_second_view(tmp_path):
    # The paper pairs its 20,000-step fine-tune with its 78,125-step scratch; within one preset, the
    # preset's fine-tune pairs with its scratch whatever their steps.
    long_scratch = [[step * 10, score] for step, score in A_SCRATCH]
    _write(tmp_path, "finetune", "a_net", "dtd", A_FINETUNE)
    _write(tmp_path, "scratch", "a_net", "dtd", long_scratch, settings={"search": "grid", "train_steps": 4000})
    analysis, names, markdown = _report(tmp_path)
    own, equal_steps = convergence.converge(analysis.comparisons)
    assert own.drawn() and own.comparison.kind.key == "finetune_vs_scratch"
    (row,) = own.rows
    assert row.finetune.steps_to(0.9) == 200 and row.scratch.steps_to(0.9) == 3000 and row.ratio(0.9) == 15.0
    assert "convergence.png" in names and "finetune_vs_scratch.png" in names  # per dataset: no top-1 here
    assert isinstance(equal_steps, NotDrawn)
    assert "finetune trains 400 steps of 16, scratch 4000 steps of 16" in equal_steps.reason
    assert "(tfbench's view): not drawn" in markdown

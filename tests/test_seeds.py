"""Several seeds per (model, dataset): mean ± sd in the tables, error bars on Figure 1, r on means.

References are numpy's std with ddof=1 (the sample standard deviation) and scipy's Pearson r,
computed here from the scores the test writes.
"""

import io

import numpy as np
import pytest
from scipy import special, stats

from tfbench.report import figures, build as report
from tfbench.report.analysis import score_rows, transfer_rows

TOP1 = {"m1": 0.70, "m2": 0.74, "m3": 0.78}
# (model, dataset) -> scores of seeds 0, 1, 2
SCORES = {("m1", "d1"): (0.60, 0.64, 0.62), ("m1", "d2"): (0.50, 0.55, 0.51),
          ("m2", "d1"): (0.70, 0.66, 0.69), ("m2", "d2"): (0.58, 0.60, 0.65),
          ("m3", "d1"): (0.80, 0.83, 0.78), ("m3", "d2"): (0.66, 0.70, 0.71)}


def _records(seeds=(0, 1, 2)):
    return [{"experiment": {"regime": "finetune", "model": model, "dataset": dataset, "seed": seed,
                            "settings": {}, "batch_size": 32, "image_size": 64, "precision": "auto"},
             "status": "ok", "metric": "top1", "test_score": scores[seed],
             "protocol": {"name": "study", "differences": {}}}
            for (model, dataset), scores in SCORES.items() for seed in seeds]


def _analyze(records):
    return report.analyze(records, TOP1.get, resamples=100)


def test_score_table_shows_mean_and_sample_sd_over_seeds():
    group = _analyze(_records()).groups["finetune"]
    table = group.table
    for (model, dataset), scores in SCORES.items():
        assert table.score(model, dataset) == pytest.approx(np.mean(scores))
        assert table.sd(model, dataset) == pytest.approx(np.std(scores, ddof=1))
    rows = {row["model"]: row for row in score_rows(table, {})}
    assert rows["m1"]["d1 (top1, %)"] == f"62.0 \u00b1 {100 * np.std((0.60, 0.64, 0.62), ddof=1):.1f}"


def test_mean_log_odds_carries_its_sd_over_seeds_and_r_uses_the_means():
    group = _analyze(_records()).groups["finetune"]
    for model in group.models:
        per_seed = [np.mean(special.logit([SCORES[(model.model, d)][seed] for d in ("d1", "d2")]))
                    for seed in range(3)]
        assert model.seed_sd == pytest.approx(np.std(per_seed, ddof=1))
        means = [np.mean(SCORES[(model.model, d)]) for d in ("d1", "d2")]
        assert model.mean_log_odds == pytest.approx(np.mean(special.logit(means)))
    expected = stats.pearsonr(list(TOP1.values()),
                              [np.mean(special.logit([np.mean(SCORES[(m, d)]) for d in ("d1", "d2")]))
                               for m in TOP1]).statistic
    assert group.correlation.r == pytest.approx(expected)
    rows = {row["model"]: row for row in transfer_rows(group)}
    assert "\u00b1" in rows["m1"]["mean log odds"]


def test_figure1_draws_error_bars_of_the_sd_over_seeds():
    group = _analyze(_records()).groups["finetune"]
    (axes,) = figures.figure1([group]).axes
    (bars,) = axes.containers
    segments = bars.lines[2][0].get_segments()
    half_heights = sorted((top[1] - bottom[1]) / 2 for bottom, top in segments)
    assert half_heights == pytest.approx(sorted(m.seed_sd for m in group.included()))


def test_a_single_seed_looks_as_before():
    group = _analyze(_records(seeds=(0,))).groups["finetune"]
    assert group.table.sd("m1", "d1") is None and all(m.seed_sd is None for m in group.models)
    assert score_rows(group.table, {})[0]["d1 (top1, %)"] == "60.0"
    assert not figures.figure1([group]).axes[0].containers
    out = io.StringIO()
    report.print_summary(_analyze(_records(seeds=(0,))), file=out)
    assert "\u00b1" not in out.getvalue()

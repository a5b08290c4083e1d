"""What the cheaper protocols cost in accuracy, in the paper's regime of epochs: grid vs halving vs
hyperrule vs the free alternatives read off the grid.

    python bench/protocol_study.py --parallel=2          # the study: about 100 minutes for two pairs on 2 loaded cores
    python bench/protocol_study.py --report_only         # the CSVs, figures and table from what finished

The paper's budget is 20,000 steps of 256: about 5,000 epochs of Flowers, 630 of Cars and 68 of
Food-101, and halving's first rung (741 steps at eta 3) is still about 185, 23 and 2.5 epochs. A
study where every trial sees under an epoch (the first version of this bench) measures another
regime. The defaults keep the paper's ratio of budget to training set at a size two CPU cores
carry: fashion_mnist_mini with 5 training images per class (50 images; the 600 validation and
1,000 test images unchanged), 32 px, batch 16, 320 steps per full-budget trial (102.4 epochs: at
160 steps the best validation curve was still climbing), halving at eta 3 with rungs of 12, 36,
107 and 320 steps (first rung 3.8 epochs). The grid is a
documented sub-grid of the paper's 7 x 8 (sub_grid below) unless --grid=paper.

Phases, each a resumable set of ordinary tfbench runs under --output_dir (a killed study given
the same command skips the finished trials and runs and goes on), in this order:
  grid       every configuration of the (sub-)grid at the full budget, then the retrain;
  hyperrule  tfbench.hyperrule's one configuration;
  halving    successive halving over the same grid, restarting each rung from the initial weights
             on a cosine schedule of the rung's length;
  halving_continue  the same rungs, every trial on the full budget's schedule, a promoted trial
             continued from its checkpoint of the rung before (ASHA-style promotion);
  curve      the grid's chosen configuration trained again with the validation split scored every
             --curve_every steps, on the full budget and on twice it: does the best curve flatten
             by the full budget, and would a longer budget still pay? (trials only, no retrain);
  estimate   python -m tfbench.estimate's transferability estimators for ESTIMATED_MODELS;
  probe      the linear probe (the paper's 45-value L2 grid) of the same networks on the same split:
             a ranking of the networks to hold the estimators against at the cost of extraction;
  choices    the retrain of each free alternative's choice that differs from the grid's (search
             "none" with that configuration), then of the grid's other configurations, best first
             (random search's expected test score needs every one it may choose).
The free alternatives (tfbench.report.cheap_alternatives: VTAB 2 x 2 subset, random search,
leave-one-network-out, most frequent) cost no training beyond those retrains.

Writes under --results: protocol_study.csv (per pair and protocol: choice, validation and test
score, test gap to the grid in points with its paired standard error, training steps and share of
the grid's), protocol_study_rungs.csv (per rung of either halving: where the grid's choice
ranked, rank agreement with the full budget), protocol_study_estimators.csv (each transferability
estimator's ranking of the networks, beside the probe's and the grid's where those ran for more
than one network), protocol_study_estimator_agreement.csv (each estimator's and ImageNet top-1's
weighted Kendall tau and Pearson r with those test scores), protocol_study_curve.csv and protocol_study_curve.png (the chosen configuration's
validation score along its schedule, and the grid's best at halving's first budget and at the full
budget), protocol_study.png (test score against training steps).
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import sys
import textwrap
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tfbench import files, predictions, protocol, results, study, tuning  # noqa: E402
from tfbench.backbones.catalog import REGISTRY as BACKBONES  # noqa: E402
from tfbench.report import cheap_alternatives as cheap  # noqa: E402
from tfbench.report.correlation import logit  # noqa: E402
from tfbench.report.estimator_agreement import BASELINE, agreement  # noqa: E402
from tfbench.tasks import executors  # noqa: E402
from tfbench.experiment import Experiment  # noqa: E402
from tfbench.settings import HALVING_SEARCHES, EstimateSettings, ProbeSettings, Runtime, TrainingSettings  # noqa: E402

PROTOCOLS = ("grid", "hyperrule", "halving", "halving_continue")  # run order: the reference first
RUNG_COLUMNS = ("regime", "model", "protocol", "rung", "train_steps", "configurations", "promoted", "grid_choice_rank",
                "rho_with_full_budget", "promoted_lr_geomean", "grid_top_lr_geomean")
CURVE, ESTIMATE, PROBE, CHOICES = "curve", "estimate", "probe", "choices"


def sub_grid(regime: str) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """The paper's grid thinned to 4 x 2 = 8 configurations for two CPU cores: every other learning
    rate (both ends kept) x the third and seventh weight decay of the log-spaced ones (fine-tune
    1e-5 and 1e-3, scratch 1e-4 and 1e-2: a factor 100 apart, inside the range)."""
    rates, decays = protocol.PAPER_GRIDS[regime]
    return rates[::2], (decays[2], decays[6])


def settings(protocol_name_: str, regime: str, args) -> TrainingSettings:
    common = {"train_steps": args.train_steps, "bn_momentum": args.bn_momentum}
    rates, decays = sub_grid(regime) if args.grid == "sub" else protocol.PAPER_GRIDS[regime]
    given = {"learning_rates": rates, "weight_decays": decays}
    if protocol_name_ == "hyperrule":
        return TrainingSettings(search="hyperrule", **common)
    if protocol_name_ in HALVING_SEARCHES:
        return TrainingSettings(search=protocol_name_, halving_eta=args.halving_eta,
                                halving_min_steps=args.halving_min_steps, **given, **common)
    return TrainingSettings(search="grid", **given, **common)


def experiment(regime: str, model: str, folder: str, training: TrainingSettings, args) -> Experiment:
    return Experiment(regime=regime, model=model, dataset=args.dataset,
                      output_dir=os.path.join(args.output_dir, folder), settings=training,
                      image_size=args.image_size, batch_size=args.batch_size, data_dir=args.data_dir,
                      train_examples_per_class=args.train_examples_per_class)


def experiments(args, protocols: Sequence[str] = PROTOCOLS) -> List[Experiment]:
    """Protocol by protocol, each over every pair."""
    return [experiment(regime, model, name, settings(name, regime, args), args)
            for name in protocols for regime, model in args.pairs]


def parse_pairs(text: str) -> List[tuple]:
    """"finetune:efficientnet_lite0,scratch:efficientnet_lite0" -> [(regime, model), ...]."""
    pairs = [tuple(item.split(":", 1)) for item in text.split(",") if item]
    bad = [item for item in pairs if len(item) != 2 or item[0] not in ("finetune", "scratch")]
    if bad:
        raise argparse.ArgumentTypeError(f"--pairs wants regime:model with regime finetune or scratch, got {bad}")
    return pairs


def protocol_name(experiment: Experiment) -> str:
    return os.path.basename(experiment.output_dir)


def finished_records(planned: Sequence[Experiment]) -> Dict[tuple, Dict[str, object]]:
    """{(regime, model, protocol): run record} of the finished runs."""
    records = {}
    for experiment in planned:
        record = results.read_record(results.record_path(experiment), fields=results.RUN_FIELDS)
        if record is not None and record["status"] in results.FINISHED_STATUSES:
            record["run_dir"] = experiment.run_dir()
            records[(experiment.regime, experiment.model, protocol_name(experiment))] = record
    return records


def _config(trial: Mapping[str, object]) -> tuple:
    return (trial["hyperparameters"]["learning_rate"], trial["hyperparameters"]["weight_decay"])


def _geometric_mean(values: Sequence[float]) -> Optional[float]:
    return round(math.exp(sum(math.log(v) for v in values) / len(values)), 6) if values else None


def rung_rows(records: Mapping[tuple, Mapping[str, object]]) -> List[Dict[str, object]]:
    """Does a short rung rank configurations as the full budget does, and does it favour small
    learning rates? Per (regime, model) and halving rung: how the grid's choice (at the full
    budget) ranked in the rung, Spearman's rho between the rung's validation scores and the same
    configurations' at the full budget (the grid's trials), and the geometric mean learning rate of
    the configurations the rung promoted against that of the grid's best as many configurations at
    the full budget. A rung biased towards small learning rates promotes smaller ones than the
    grid ranks highest."""
    out = []
    for (regime, model, name), halving in sorted(records.items()):
        grid = records.get((regime, model, "grid"))
        if name not in HALVING_SEARCHES or grid is None or not grid.get("hyperparameters"):
            continue
        grid_choice = (grid["hyperparameters"]["learning_rate"], grid["hyperparameters"]["weight_decay"])
        grid_ranked = sorted((t for t in grid["trials"] if t["status"] == "ok"),
                             key=lambda t: -t["validation_score"])
        trials = halving["trials"]
        last = max(t.get("rung") or 0 for t in trials)
        for rung in range(last + 1):
            ranked = sorted((t for t in trials if (t.get("rung") or 0) == rung and t["status"] == "ok"),
                            key=lambda t: -t["validation_score"])
            promoted = {_config(t) for t in trials if (t.get("rung") or 0) == rung + 1}
            if rung == last:  # the last rung "promotes" its choice to the retrain
                promoted = {(halving["hyperparameters"]["learning_rate"],
                             halving["hyperparameters"]["weight_decay"])}
            position = [i + 1 for i, t in enumerate(ranked) if _config(t) == grid_choice]
            full = {_config(t): t["validation_score"] for t in grid_ranked}
            both = [(t["validation_score"], full[_config(t)]) for t in ranked if _config(t) in full]
            out.append({
                "regime": regime, "model": model, "protocol": name, "rung": rung,
                "train_steps": ranked[0].get("train_steps") if ranked else None,
                "configurations": len(ranked), "promoted": len(promoted),
                "grid_choice_rank": position[0] if position else None,
                "rho_with_full_budget": spearman([a for a, _ in both], [b for _, b in both]),
                "promoted_lr_geomean": _geometric_mean([lr for lr, _ in promoted]),
                "grid_top_lr_geomean": _geometric_mean(
                    [_config(t)[0] for t in grid_ranked[:len(promoted)]]),
            })
    return out


def ranks(values: Sequence[float]) -> List[float]:
    """Ranks from 1, ties sharing their mean rank (what Spearman's rho correlates)."""
    ordered = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    start = 0
    while start < len(ordered):
        end = start
        while end + 1 < len(ordered) and values[ordered[end + 1]] == values[ordered[start]]:
            end += 1
        for position in range(start, end + 1):
            out[ordered[position]] = (start + end) / 2 + 1
        start = end + 1
    return out


def spearman(a: Sequence[float], b: Sequence[float]) -> Optional[float]:
    """Pearson r of the ranks; None with fewer than 3 pairs or a constant side."""
    if len(a) < 3:
        return None
    ra, rb = ranks(a), ranks(b)
    mean_a, mean_b = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - mean_a) * (y - mean_b) for x, y in zip(ra, rb))
    var_a, var_b = sum((x - mean_a) ** 2 for x in ra), sum((y - mean_b) ** 2 for y in rb)
    return None if not var_a or not var_b else round(cov / (var_a * var_b) ** 0.5, 4)


def write_csv(path: str, table: Sequence[Dict[str, object]], columns: Sequence[str]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    files.write_bytes_atomic(path, text.getvalue().encode())


def hyperparameters(record: Mapping[str, object]) -> Optional[Tuple[float, float]]:
    """(learning rate, weight decay) exactly as the run trained them; None without a choice."""
    chosen = record.get("hyperparameters") or {}
    if chosen.get("learning_rate") is None or chosen.get("weight_decay") is None:
        return None
    return chosen["learning_rate"], chosen["weight_decay"]


def grid_settings(grid: Mapping[str, object]) -> List[Tuple[float, float]]:
    """The grid run's scored configurations, best on validation first."""
    scored = [t for t in grid["trials"] if t["status"] == "ok" and t.get("validation_score") is not None]
    return [hyperparameters(t) for t in sorted(scored, key=lambda t: -t["validation_score"])]


def single(regime: str, model: str, folder: str, setting: Tuple[float, float], args,
           budget: int = 1) -> Experiment:
    """One configuration's run (search "none") in `folder`, on `budget` times the full budget."""
    return experiment(regime, model, folder, TrainingSettings(
        search="none", learning_rate=setting[0], weight_decay=setting[1], train_steps=budget * args.train_steps,
        bn_momentum=args.bn_momentum), args)


CURVE_BUDGETS = {1: CURVE, 2: CURVE + "_x2"}  # times the full budget -> folder


def curve_experiments(grids: Mapping[tuple, Mapping[str, object]], args) -> List[tuple]:
    """The grid's choice of every pair on the full budget, then on twice it (would a longer budget
    still pay?), scored on validation every --curve_every steps x the budget's factor."""
    return [(single(regime, model, folder, hyperparameters(grid), args, budget),
             Runtime(eval_every=budget * args.curve_every, steps_per_loop=budget * args.curve_every, verbose=False))
            for budget, folder in CURVE_BUDGETS.items()
            for (regime, model, _), grid in grids.items() if hyperparameters(grid)]


def alternatives(grids: Mapping[tuple, Mapping[str, object]]) -> Dict[tuple, Dict[str, Optional[cheap.Setting]]]:
    """{(regime, model): {alternative: its choice}} of the single-choice free alternatives
    (tfbench.report.cheap_alternatives), as the grid's trials spell the configuration."""
    parsed = {key: cheap.grid_of(record) for key, record in grids.items()}
    out = {}
    for (regime, model, name), grid in parsed.items():
        same_regime = [k for k in parsed if k[0] == regime]
        others = [k for k in same_regime if k[1] != model]
        chosen = {k: parsed[k].best(list(parsed[k].scores)) for k in same_regime}
        subset = cheap.vtab_subset(grid)
        out[(regime, model)] = {
            cheap.VTAB: grid.best(subset) if subset else None,
            cheap.TRANSFER: cheap.consensus([chosen[k] for k in others], [parsed[k] for k in others]),
            cheap.MOST_FREQUENT: cheap.consensus(list(chosen.values()), list(parsed.values())),
        }
    return out


def exact(grid: Mapping[str, object], setting: Optional[cheap.Setting]) -> Optional[Tuple[float, float]]:
    """`setting` (rounded by cheap_alternatives) as the grid trained it."""
    return next((s for s in grid_settings(grid) if setting is not None and cheap.setting_of(
        {"learning_rate": s[0], "weight_decay": s[1]}) == setting), None)


def choice_experiments(grids: Mapping[tuple, Mapping[str, object]], args) -> List[tuple]:
    """The retrain of every configuration an alternative may choose, so that each has a test score:
    first the single-choice alternatives' choices that differ from the grid's, then the grid's other
    configurations (random search's expectation needs them all), best first. Each run reuses the
    grid's trial of that configuration (the same trial: tuning.trial_identity), so it trains only
    the retrain."""
    picks = alternatives(grids)
    first, rest = [], []
    for (regime, model, _), grid in grids.items():
        ranked = grid_settings(grid)[1:]
        wanted = [exact(grid, s) for s in picks[(regime, model)].values()]
        wanted = [s for s in dict.fromkeys(wanted) if s in ranked]
        first += [(regime, model, s, grid) for s in wanted]
        rest += [(rank, regime, model, s, grid) for rank, s in enumerate(ranked) if s not in wanted]
    rest = [item[1:] for item in sorted(rest, key=lambda item: item[0])]  # pairs in turn, best first
    runtime = Runtime(eval_every=0, verbose=False)
    out = []
    for regime, model, setting, grid in first + rest:
        run = single(regime, model, choice_folder(setting), setting, args)
        trial_id = tuning.Trial(*setting).trial_id
        source = os.path.join(grid["run_dir"], results.TRIALS_DIR, trial_id + ".json")
        target = results.trial_path(run, trial_id)
        if not os.path.exists(target):
            with open(source, "rb") as handle:
                files.write_bytes_atomic(target, handle.read())
        out.append((run, runtime))
    return out


def choice_folder(setting: Tuple[float, float]) -> str:
    """A folder per configuration: a run folder holds one run."""
    return os.path.join(CHOICES, tuning.Trial(*setting).trial_id)


def correct(record: Mapping[str, object]) -> Optional[np.ndarray]:
    """1.0 where the run's test answer was right, per test example (tfbench.predictions)."""
    stored = predictions.read(record["run_dir"], record)
    return None if stored is None else (stored.classes == stored.labels).astype(np.float64)


def paired_gap(mixture: Sequence[Tuple[float, np.ndarray]], reference: np.ndarray) -> Tuple[float, float]:
    """Test gap in points of a run (or a probability mixture of runs: random search) to the grid's,
    and its standard error over test examples, paired: the sd of the per-example difference / sqrt(n)."""
    difference = sum(weight * answers for weight, answers in mixture) - reference
    return 100 * difference.mean(), 100 * difference.std(ddof=1) / math.sqrt(len(difference))


def binomial_se(score: float, n: int) -> float:
    return 100 * math.sqrt(score * (1 - score) / n)


COLUMNS = ("regime", "model", "protocol", "choice", "validation_score", "validation_regret_points",
           "test_score", "test_se_points", "test_gap_points", "gap_se_points", "train_steps",
           "share_of_grid", "epochs_per_full_budget", "first_rung_epochs")


def table(records: Mapping[tuple, Mapping[str, object]], retrains: Mapping[tuple, Mapping[str, object]],
          args) -> List[Dict[str, object]]:
    """Per pair: the grid, every protocol run and every free alternative against it."""
    images = args.train_examples_per_class * 10  # the datasets here have 10 classes
    epochs = args.train_steps * args.batch_size / images
    grids = {k: r for k, r in records.items() if k[2] == "grid"}
    picks = alternatives(grids)
    out = []
    for (regime, model, _), grid_record in grids.items():
        grid = cheap.grid_of(grid_record)
        reference = correct(grid_record)
        n = len(reference)
        by_setting = {hyperparameters(grid_record): grid_record}
        by_setting.update({hyperparameters(r): r for k, r in retrains.items() if k[:2] == (regime, model)})

        def row(name, setting, validation, test, gap, share, steps, first_rung=None):
            return {"regime": regime, "model": model, "protocol": name, "choice": setting,
                    "validation_score": validation, "validation_regret_points": (
                        None if validation is None else round(100 * (max(grid.scores.values()) - validation), 2)),
                    "test_score": test, "test_se_points": None if test is None else round(binomial_se(test, n), 2),
                    "test_gap_points": None if gap is None else round(gap[0], 2),
                    "gap_se_points": None if gap is None else round(gap[1], 2),
                    "train_steps": steps, "share_of_grid": None if share is None else round(share, 4),
                    "epochs_per_full_budget": round(epochs, 1), "first_rung_epochs": first_rung}

        def measured(setting):
            run = by_setting.get(setting)
            return None if run is None else run.get("test_score"), None if run is None else correct(run)

        def one(name, setting, share, steps):
            test, answers = measured(exact(grid_record, setting))
            return row(name, cheap.describe(setting), grid.scores.get(setting), test,
                       None if answers is None else paired_gap([(1.0, answers)], reference), share, steps)

        out.append(row("grid", cheap.describe(cheap.setting_of(grid_record["hyperparameters"])),
                       max(grid.scores.values()), grid_record["test_score"], (0.0, 0.0), 1.0, grid.total_steps))
        for name in PROTOCOLS[1:]:
            run = records.get((regime, model, name))
            if run is None:
                continue
            setting = cheap.setting_of(run["hyperparameters"])
            rungs = sorted({t.get("train_steps") for t in run["trials"]})
            answers = correct(run)
            out.append(row(name, cheap.describe(setting), grid.scores.get(setting), run["test_score"],
                           None if answers is None else paired_gap([(1.0, answers)], reference),
                           run["total_train_steps"] / grid.total_steps, run["total_train_steps"],
                           round(rungs[0] * args.batch_size / images, 1) if len(rungs) > 1 else None))
        subset = cheap.vtab_subset(grid)
        for name, setting in picks[(regime, model)].items():
            share = None if setting is None else grid.share(subset if name == cheap.VTAB else [])
            out.append(one(name, setting, share, None if share is None else round(share * grid.total_steps)))
        ranked = sorted(grid.scores, key=lambda s: -grid.scores[s])
        mean_steps = sum(grid.trial_steps.values()) / len(grid.trial_steps)
        for k in cheap.RANDOM_SEARCH_TRIALS:
            if k >= len(ranked):
                break
            chance = cheap.best_of_random_k(len(ranked), k)
            runs = [measured(exact(grid_record, s)) for s in ranked]
            known = all(answers is not None for p, (_, answers) in zip(chance, runs) if p > 0)
            steps = round(k * mean_steps + grid.retrain_steps)
            validation = sum(p * grid.scores[s] for p, s in zip(chance, ranked))
            out.append(row(f"random search, k = {k} (expected)", f"best of {k} of {len(ranked)}", validation,
                           sum(p * t for p, (t, _) in zip(chance, runs) if p > 0) if known else None,
                           paired_gap([(p, a) for p, (_, a) in zip(chance, runs) if p > 0], reference)
                           if known else None,
                           steps / grid.total_steps, steps))
    return out


def curve_rows(records: Mapping[tuple, Mapping[str, object]], curves: Mapping[tuple, Mapping[str, object]],
               args) -> List[Dict[str, object]]:
    """The grid choice's validation score along its schedule (curve phase), and the best validation
    score over the grid's configurations trained to each halving budget (rung 0 trains them all)."""
    images = args.train_examples_per_class * 10
    out = []
    for (regime, model, folder), trial in curves.items():
        series = "chosen configuration, along its schedule" + ("" if folder == CURVE else ", twice the budget")
        for step, score in trial.get("validation_curve") or []:
            out.append({"regime": regime, "model": model, "series": series,
                        "steps": step, "epochs": round(step * args.batch_size / images, 2),
                        "validation_score": score})
    for (regime, model, name), run in records.items():
        if name != "halving" or (regime, model, "grid") not in records:
            continue
        budgets = [(min(t["train_steps"] for t in run["trials"]), [t for t in run["trials"] if not t.get("rung")]),
                   (args.train_steps, records[(regime, model, "grid")]["trials"])]
        for steps, trials in budgets:
            scores = [t["validation_score"] for t in trials if t.get("validation_score") is not None]
            out.append({"regime": regime, "model": model, "series": "best of the grid, trained to this budget",
                        "steps": steps, "epochs": round(steps * args.batch_size / images, 2),
                        "validation_score": max(scores)})
    return out


def curve_figure(path: str, rows_: Sequence[Dict[str, object]], title: str) -> None:
    """Validation score against epochs, a panel per pair: has the best curve flattened?"""
    pairs = sorted({(row["regime"], row["model"]) for row in rows_})
    fig, axes = plt.subplots(1, max(1, len(pairs)), figsize=(5 * max(1, len(pairs)), 3.8), squeeze=False)
    for axis, pair in zip(axes[0], pairs):
        for series, style in (("chosen configuration, along its schedule", "-o"),
                              ("chosen configuration, along its schedule, twice the budget", "--^"),
                              ("best of the grid, trained to this budget", "s")):
            points = sorted((row["epochs"], row["validation_score"]) for row in rows_
                            if (row["regime"], row["model"]) == pair and row["series"] == series)
            if points:
                axis.plot(*zip(*points), style, markersize=4, label=series)
        label(axis, pair, "epochs of the training split", "validation top-1")
    save(fig, path, title)


def cost_figure(path: str, rows_: Sequence[Dict[str, object]], title: str) -> None:
    """Test score against training steps, a panel per pair, error bars of the test set's SE."""
    pairs = sorted({(row["regime"], row["model"]) for row in rows_})
    fig, axes = plt.subplots(1, max(1, len(pairs)), figsize=(5.5 * max(1, len(pairs)), 4.4), squeeze=False)
    protocols = list(dict.fromkeys(row["protocol"] for row in rows_))  # one colour and marker each, in every panel
    for axis, pair in zip(axes[0], pairs):
        for row in rows_:
            if (row["regime"], row["model"]) == pair and row["test_score"] is not None:
                index = protocols.index(row["protocol"])
                axis.errorbar(row["train_steps"], 100 * row["test_score"], yerr=row["test_se_points"],
                              fmt="os^vD"[index // 10 % 5], color=f"C{index % 10}", capsize=3, label=row["protocol"])
        axis.set_xscale("log")
        label(axis, pair, "training steps (all trials + retrain)", "test top-1 (%), ± binomial SE")
    save(fig, path, title)


def label(axis, pair: Tuple[str, str], x: str, y: str) -> None:
    axis.set_xlabel(x)
    axis.set_ylabel(y)
    axis.set_title(" ".join(pair))
    axis.legend(fontsize=6)


def save(fig, path: str, title: str) -> None:
    fig.suptitle(textwrap.fill(title, width=int(fig.get_figwidth() * 16)), fontsize=9)  # a one-panel figure is narrow
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    files.write_bytes_atomic(path, buffer.getvalue())


def curve_records(grids: Mapping[tuple, Mapping[str, object]], args) -> Dict[tuple, Dict[str, object]]:
    """The curve phase's finished trial records by (regime, model, folder)."""
    out = {}
    for run, _ in curve_experiments(grids, args):
        trial = results.read_record(results.trial_path(run, tuning.Trial(
            run.settings.learning_rate, run.settings.weight_decay).trial_id), fields=results.RUN_FIELDS)
        if trial is not None and trial["status"] == "ok":
            out[(run.regime, run.model, protocol_name(run))] = trial
    return out


def retrain_records(grids: Mapping[tuple, Mapping[str, object]], args) -> Dict[tuple, Dict[str, object]]:
    """The choices phase's finished runs by (regime, model, setting)."""
    out = {}
    for (regime, model, _), grid in grids.items():
        for setting in grid_settings(grid):
            run = single(regime, model, choice_folder(setting), setting, args)
            record = results.read_record(results.record_path(run), fields=results.RUN_FIELDS)
            if record is not None and record["status"] == "ok":
                record["run_dir"] = run.run_dir()
                out[(regime, model, setting)] = record
    return out


ESTIMATED_MODELS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def frozen_experiments(regime: str, args) -> List[Experiment]:
    """The estimate or probe runs of ESTIMATED_MODELS on the study's split, under <output_dir>/<regime>."""
    settings = EstimateSettings() if regime == ESTIMATE else ProbeSettings()
    return [Experiment(regime=regime, model=model, dataset=args.dataset, settings=settings,
                       image_size=args.image_size, batch_size=args.batch_size, data_dir=args.data_dir,
                       train_examples_per_class=args.train_examples_per_class,
                       output_dir=os.path.join(args.output_dir, regime)) for model in ESTIMATED_MODELS]


def target_scores(records: Mapping[tuple, Mapping[str, object]], args) -> Dict[str, Dict[str, float]]:
    """Test score per network of each target: the probe, and each regime's grid."""
    targets: Dict[str, Dict[str, float]] = {}
    for run in frozen_experiments(PROBE, args):
        record = results.read_record(results.record_path(run), fields=results.RUN_FIELDS)
        if record is not None and record["status"] == "ok":
            targets.setdefault("probe", {})[run.model] = record["test_score"]
    for (regime, model, name), record in records.items():
        if name == "grid":
            targets.setdefault(f"{regime}_grid", {})[model] = record["test_score"]
    return targets


def read_estimates(args) -> Dict[str, Dict[str, float]]:
    """Estimator -> network -> estimate, with ImageNet top-1 as the baseline predictor."""
    estimates: Dict[str, Dict[str, float]] = {}
    for run in frozen_experiments(ESTIMATE, args):
        record = results.read_record(results.record_path(run), fields=("estimates",))
        if record is not None and record.get("status") == "ok":
            for name, value in record["estimates"].items():
                if value is not None:
                    estimates.setdefault(name, {})[run.model] = value
            estimates.setdefault(BASELINE, {})[run.model] = BACKBONES.get(run.model).imagenet_top1
    return estimates


def estimator_rows(estimates: Mapping[str, Mapping[str, float]],
                   targets: Mapping[str, Mapping[str, float]]) -> List[Dict[str, object]]:
    """Each estimator's score and rank of the networks (python -m tfbench.estimate on the study's
    training split), beside each target's test score and rank (the probe, each regime's grid) where
    it ran for more than one network: does the estimator order networks as training does?"""
    out = []
    for estimator, scored in sorted(estimates.items()):
        for (model, value), rank in zip(scored.items(), ranks([-v for v in scored.values()])):
            row = {"estimator": estimator, "model": model, "estimate": round(value, 4), "estimator_rank": rank}
            for target, tested in sorted(targets.items()):
                tested = {m: tested[m] for m in scored if m in tested}
                row[f"{target}_test"] = tested.get(model)
                row[f"{target}_rank"] = (dict(zip(tested, ranks([-v for v in tested.values()]))).get(model)
                                         if len(tested) > 1 else None)
            out.append(row)
    return out


def agreement_rows(estimates: Mapping[str, Mapping[str, float]],
                   targets: Mapping[str, Mapping[str, float]]) -> List[Dict[str, object]]:
    """Per estimator (and ImageNet top-1) and target: weighted Kendall tau and Pearson r (on the
    test score's log odds) across the networks both have, as the report's estimator agreement."""
    out = []
    for estimator, scored in sorted(estimates.items()):
        for target, tested in sorted(targets.items()):
            models = [m for m in scored if m in tested]
            found = agreement([scored[m] for m in models], [logit(tested[m]) for m in models])
            out.append({"estimator": estimator, "target": target, "networks": found.n,
                        "weighted_tau": found.tau, "pearson_r": found.r, "why_not": found.reason})
    return out


def report(args) -> None:
    records = finished_records(experiments(args, PROTOCOLS))
    grids = {k: r for k, r in records.items() if k[2] == "grid"}
    rows_ = table(records, retrain_records(grids, args), args)
    curve = curve_rows(records, curve_records(grids, args), args)
    images = args.train_examples_per_class * 10
    title = (f"{args.dataset}, {args.train_examples_per_class} training images per class, {args.image_size} px, "
             f"batch {args.batch_size}, {args.train_steps} steps = "
             f"{args.train_steps * args.batch_size / images:g} epochs at the full budget; {args.grid} grid")
    write_csv(os.path.join(args.results, "protocol_study.csv"), rows_, COLUMNS)
    write_csv(os.path.join(args.results, "protocol_study_rungs.csv"), rung_rows(records), RUNG_COLUMNS)
    write_csv(os.path.join(args.results, "protocol_study_curve.csv"), curve,
              ("regime", "model", "series", "steps", "epochs", "validation_score"))
    estimates, targets = read_estimates(args), target_scores(records, args)
    estimated = estimator_rows(estimates, targets)
    if estimated:
        write_csv(os.path.join(args.results, "protocol_study_estimators.csv"), estimated, list(estimated[0]))
        agreed = agreement_rows(estimates, targets)
        write_csv(os.path.join(args.results, "protocol_study_estimator_agreement.csv"), agreed, list(agreed[0]))
    if rows_:
        cost_figure(os.path.join(args.results, "protocol_study.png"), rows_, title)
    if curve:
        curve_figure(os.path.join(args.results, "protocol_study_curve.png"), curve, title)
    print(markdown(rows_))


def markdown(rows_: Sequence[Dict[str, object]]) -> str:
    """The table per pair as Markdown: choice, test score, gap ± paired SE, cost."""
    def cell(value, scale=1.0, signed=False):
        return "—" if value is None else f"{scale * value:{'+' if signed else ''}.1f}"

    lines = ["| pair | protocol | choice | validation regret, points | test % (± SE) | gap to grid, points (± SE) "
             "| steps | share of grid |", "|---|---|---|---|---|---|---|---|"]
    for row in rows_:
        test = "—" if row["test_score"] is None else f"{cell(row['test_score'], 100)} ± {row['test_se_points']:.1f}"
        gap = ("—" if row["test_gap_points"] is None else
               f"{cell(row['test_gap_points'], signed=True)} ± {row['gap_se_points']:.1f}")
        share = "—" if row["share_of_grid"] is None else f"{100 * row['share_of_grid']:.0f}%"
        lines.append(f"| {row['regime']} {row['model']} | {row['protocol']} | {row['choice']} | "
                     f"{cell(row['validation_regret_points'])} | {test} | {gap} | "
                     f"{row['train_steps'] if row['train_steps'] is not None else '—'} | {share} |")
    return "\n".join(lines)


PHASES = PROTOCOLS + (CURVE, ESTIMATE, PROBE, CHOICES)


def run_phase(name: str, args, executor) -> None:
    """One phase's runs; curve and choices read the grid's finished records to know what to train."""
    if name in PROTOCOLS:
        planned = [(e, Runtime(eval_every=0, verbose=False)) for e in experiments(args, (name,))]
        tasks = None
    elif name in (ESTIMATE, PROBE):
        planned, tasks = [(run, Runtime(verbose=False)) for run in frozen_experiments(name, args)], None
    else:
        grids = finished_records(experiments(args, ("grid",)))
        planned = (curve_experiments if name == CURVE else choice_experiments)(grids, args)
        tasks = "trial" if name == CURVE else None  # the curve needs no retrain
    if not planned:
        print(f"{name}: nothing to run (no finished grid)", flush=True)
        return
    counts = {outcome: 0 for outcome in executors.OUTCOMES}
    for batch in batches(planned):
        study_plan = study.study_plan(batch)
        chosen = [t for t in study_plan.tasks if tasks is None or t.kind == tasks]
        summary = executors.execute(study_plan, chosen, executor, log=print)
        counts = {outcome: counts[outcome] + summary.count(outcome) for outcome in counts}
    print(f"{name}: {counts['ran']} tasks ran, {counts['skipped']} skipped, {counts['failed']} failed", flush=True)


def batches(planned: Sequence[tuple]) -> List[List[tuple]]:
    """`planned` in order, split so that no two runs of a batch share a task key (a plan's keys are
    relative to each run's output folder: the same pair in two folders would clash)."""
    out: List[List[tuple]] = []
    for item in planned:
        key = study.run_key(item[0])
        if not out or key in {study.run_key(e) for e, _ in out[-1]}:
            out.append([])
        out[-1].append(item)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=parse_pairs, default=parse_pairs(
        "finetune:efficientnet_lite0,scratch:efficientnet_lite0"), help="regime:model pairs.")
    parser.add_argument("--phases", default=",".join(PHASES),
                        help=f"Comma-separated, run in the order given; of {','.join(PHASES)}.")
    parser.add_argument("--dataset", default="fashion_mnist_mini")
    parser.add_argument("--train_examples_per_class", type=int, default=5)
    parser.add_argument("--train_steps", type=int, default=320)
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--bn_momentum", type=float, default=0.9)
    parser.add_argument("--grid", choices=("sub", "paper"), default="sub",
                        help="sub: sub_grid()'s 4 x 2; paper: the paper's 7 x 8.")
    parser.add_argument("--halving_eta", type=int, default=3)
    parser.add_argument("--halving_min_steps", type=int, default=10)
    parser.add_argument("--curve_every", type=int, default=16,
                        help="Steps between validation scores of the curve phase.")
    parser.add_argument("--parallel", type=int, default=1,
                        help="Trials at once: 1 runs them in this process, N > 1 on a local Ray cluster.")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--output_dir", default=os.path.join(ROOT, "runs", "protocol_study"))
    parser.add_argument("--results", default=os.path.join(ROOT, "bench", "results"))
    parser.add_argument("--report_only", action="store_true", help="Write the CSVs and figures from the "
                        "runs finished so far, training nothing.")
    args = parser.parse_args(argv)
    phases = [p for p in args.phases.split(",") if p]
    unknown = [p for p in phases if p not in PHASES]
    if unknown:
        print(f"error: --phases: unknown {','.join(unknown)}; choose from {','.join(PHASES)}", file=sys.stderr)
        return 2

    if not args.report_only:
        with (executors.LocalExecutor() if args.parallel == 1
              else executors.RayExecutor(num_cpus=args.parallel)) as executor:
            for name in phases:
                run_phase(name, args, executor)
    report(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the cheaper protocols cost in accuracy: the paper's grid vs successive halving vs BiT-HyperRule.

    python bench/protocol_study.py --parallel=2                     # the study: about 2 hours on 2 cores
    python bench/protocol_study.py --pairs=finetune:efficientnet_lite0 \\
        --learning_rates=0.01,0.1 --weight_decays=0,0.0001 --train_steps=9 \\
        --output_dir=/tmp/protocol_check --results=/tmp/protocol_check/results     # an end-to-end check

For every (regime, model) pair on --dataset, three runs of the same experiment that differ only in
the search: "grid" (the paper's 7 x 8 grid, or --learning_rates x --weight_decays when given),
"halving" (successive halving over the same grid, --halving_eta, --halving_min_steps) and
"hyperrule" (one configuration, tfbench.hyperrule). Each protocol has its own output folder under
--output_dir, and every run is an ordinary tfbench run: a killed study given the same command again
skips the finished trials and runs and goes on. Pairs run one after the other, each pair's
protocols cheapest first, so a study stopped early holds complete pairs. --parallel=N runs N trials
at once on a local Ray cluster (a rung's trials are independent); on two cores two workers finish
sooner than one, because building and tracing a model is one core's work.

Writes under --results: protocol_study.csv (one row per run: the choice, validation and test score,
total training steps, the test gap to the grid's choice in points and the steps as a fraction of
the grid's), protocol_study_agreement.csv (per regime and protocol, and over all pairs, Spearman's
rho between the runs' test scores and the grid's), protocol_study_rungs.csv (per halving rung: where
the grid's choice ranked, and whether the rung promoted smaller learning rates than the grid ranks
highest), protocol_study.png (test score against training
steps).

Scale (the defaults, sized for two CPU cores): EfficientNet-Lite0/1/2 with ImageNet weights
(fine-tune) or random initialisation (scratch), the 2,400-image training split of
fashion_mnist_mini (600 validation, 1,000 test images), 32 px crops, batch 16, 120 steps per
full-budget trial (0.8 epoch), batch-norm momentum 0.9. Halving with eta 4 from 8 steps trains
rungs of 56 x 8, 14 x 30 and 3 x 120 steps. Hyperrule scales BiT's 500 steps (of 20,000) for a
training set under 20k images to 3 steps. It tells whether the cheaper protocols pick what the grid
picks when every protocol is starved alike, not what they do at 20,000 steps of 256 on full-size
images.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import sys
from typing import Dict, List, Mapping, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tfbench import files, results, study  # noqa: E402
from tfbench.tasks import executors
from tfbench.experiment import Experiment  # noqa: E402
from tfbench.settings import Runtime, TrainingSettings  # noqa: E402

PROTOCOLS = ("hyperrule", "halving", "grid")  # cheapest first
COLUMNS = ("regime", "model", "protocol", "status", "learning_rate", "weight_decay", "train_steps",
           "validation_score", "test_score", "total_train_steps", "test_gap_points", "steps_fraction")

RUNG_COLUMNS = ("regime", "model", "rung", "train_steps", "configurations", "promoted", "grid_choice_rank",
                "rho_with_full_budget", "promoted_lr_geomean", "grid_top_lr_geomean")


def settings(protocol: str, args) -> TrainingSettings:
    common = {"train_steps": args.train_steps, "bn_momentum": args.bn_momentum}
    given = {"learning_rates": tuple(args.learning_rates), "weight_decays": tuple(args.weight_decays)}
    if protocol == "hyperrule":
        return TrainingSettings(search="hyperrule", **common)
    if protocol == "halving":
        return TrainingSettings(search="halving", halving_eta=args.halving_eta,
                                halving_min_steps=args.halving_min_steps,
                                **(given if args.learning_rates else {}), **common)
    if args.learning_rates:
        return TrainingSettings(search="grid", **given, **common)
    return TrainingSettings(search="paper", **common)


def experiments(args) -> List[Experiment]:
    """Pair by pair, each pair's protocols cheapest first."""
    return [Experiment(regime=regime, model=model, dataset=args.dataset,
                       output_dir=os.path.join(args.output_dir, protocol), settings=settings(protocol, args),
                       image_size=args.image_size, batch_size=args.batch_size, data_dir=args.data_dir)
            for regime, model in args.pairs for protocol in PROTOCOLS]


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
            records[(experiment.regime, experiment.model, protocol_name(experiment))] = record
    return records


def rows(records: Mapping[tuple, Mapping[str, object]]) -> List[Dict[str, object]]:
    """One row per finished run, with its gap to the grid's run of the same (regime, model)."""
    out = []
    for (regime, model, protocol), record in records.items():
        grid = records.get((regime, model, "grid"))
        chosen = record.get("hyperparameters") or {}
        test = record.get("test_score")
        gap = fraction = None
        if grid is not None and grid.get("test_score") is not None and test is not None:
            gap = round(100 * (test - grid["test_score"]), 2)
        if grid is not None and grid.get("total_train_steps"):
            fraction = round(record["total_train_steps"] / grid["total_train_steps"], 4)
        out.append({"regime": regime, "model": model, "protocol": protocol, "status": record["status"],
                    "learning_rate": chosen.get("learning_rate"), "weight_decay": chosen.get("weight_decay"),
                    "train_steps": (record.get("training") or {}).get("train_steps"),
                    "validation_score": record.get("validation_score"), "test_score": test,
                    "total_train_steps": record.get("total_train_steps"), "test_gap_points": gap,
                    "steps_fraction": fraction})
    order = {name: i for i, name in enumerate(PROTOCOLS)}
    return sorted(out, key=lambda row: (row["regime"], row["model"], order[row["protocol"]]))


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
    for (regime, model, protocol), halving in sorted(records.items()):
        grid = records.get((regime, model, "grid"))
        if protocol != "halving" or grid is None or not grid.get("hyperparameters"):
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
                "regime": regime, "model": model, "rung": rung,
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


def agreement(table: Sequence[Dict[str, object]]) -> List[Dict[str, object]]:
    """Spearman's rho of the runs' test scores against the grid's, per (regime, protocol) over the
    models, and per protocol over every (regime, model) pair ("all")."""
    grid = {(row["regime"], row["model"]): row["test_score"] for row in table
            if row["protocol"] == "grid" and row["test_score"] is not None}
    out = []
    for regime in sorted({row["regime"] for row in table}) + ["all"]:
        for protocol in PROTOCOLS[:-1]:
            pairs = [(grid[(row["regime"], row["model"])], row["test_score"]) for row in table
                     if regime in ("all", row["regime"]) and row["protocol"] == protocol
                     and row["test_score"] is not None and (row["regime"], row["model"]) in grid]
            out.append({"regime": regime, "protocol": protocol, "pairs": len(pairs),
                        "spearman_rho": spearman([p[0] for p in pairs], [p[1] for p in pairs])})
    return out


def write_csv(path: str, table: Sequence[Dict[str, object]], columns: Sequence[str]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    files.write_bytes_atomic(path, text.getvalue().encode())


def figure(path: str, table: Sequence[Dict[str, object]], title: str) -> None:
    """Test score against total training steps, one panel per regime, a marker per protocol."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regimes = sorted({row["regime"] for row in table})
    models = sorted({row["model"] for row in table})
    markers = {"grid": "s", "halving": "o", "hyperrule": "^"}
    fig, axes = plt.subplots(1, max(1, len(regimes)), figsize=(5.5 * max(1, len(regimes)), 4.2), squeeze=False)
    for axis, regime in zip(axes[0], regimes):
        for color, model in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"], models):
            for protocol, marker in markers.items():
                points = [(row["total_train_steps"], row["test_score"]) for row in table
                          if (row["regime"], row["model"], row["protocol"]) == (regime, model, protocol)
                          and row["test_score"] is not None]
                if points:
                    axis.scatter(*zip(*points), marker=marker, color=color, s=60,
                                 label=f"{model} {protocol}")
        axis.set_xscale("log")
        axis.set_xlabel("total training steps (all trials + retrain)")
        axis.set_ylabel("test score")
        axis.set_title(regime)
        axis.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    files.write_bytes_atomic(path, buffer.getvalue())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=parse_pairs, default=parse_pairs(
        "finetune:efficientnet_lite0,scratch:efficientnet_lite0,finetune:efficientnet_lite1,"
        "finetune:efficientnet_lite2,scratch:efficientnet_lite1,scratch:efficientnet_lite2"),
        help="regime:model pairs, run in this order.")
    parser.add_argument("--dataset", default="fashion_mnist_mini")
    parser.add_argument("--train_steps", type=int, default=120)
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--bn_momentum", type=float, default=0.9)
    parser.add_argument("--halving_eta", type=int, default=4)
    parser.add_argument("--halving_min_steps", type=int, default=8)
    parser.add_argument("--learning_rates", type=lambda text: [float(v) for v in text.split(",")], default=[])
    parser.add_argument("--weight_decays", type=lambda text: [float(v) for v in text.split(",")], default=[])
    parser.add_argument("--parallel", type=int, default=1,
                        help="Trials at once: 1 runs them in this process, N > 1 on a local Ray cluster.")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--output_dir", default=os.path.join(ROOT, "runs", "protocol_study"))
    parser.add_argument("--results", default=os.path.join(ROOT, "bench", "results"))
    parser.add_argument("--report_only", action="store_true", help="Write the CSVs and figure from the "
                        "runs finished so far, training nothing.")
    args = parser.parse_args(argv)

    planned = experiments(args)
    if not args.report_only:
        runtime = Runtime(eval_every=0, verbose=False)  # score a trial once, at its end
        with (executors.LocalExecutor() if args.parallel == 1
              else executors.RayExecutor(num_cpus=args.parallel)) as executor:
            for experiment in planned:  # pair by pair, each pair's protocols cheapest first
                study_plan = study.study_plan([(experiment, runtime)])  # keys are relative to its folder
                summary = executors.execute(study_plan, study_plan.tasks, executor, log=print)
                print(f"{experiment.regime} {experiment.model} {protocol_name(experiment)}: "
                      f"{summary.count('ran')} tasks ran, {summary.count('skipped')} skipped, "
                      f"{summary.count('failed')} failed", flush=True)
    records = finished_records(planned)
    table = rows(records)
    grid = (f"{len(args.learning_rates)} lr x {len(args.weight_decays)} wd grid" if args.learning_rates
            else "the paper's grid")
    title = (f"{args.dataset}, {args.image_size} px, batch {args.batch_size}, {args.train_steps} steps at the "
             f"full budget;\n{grid}; halving eta {args.halving_eta}")
    write_csv(os.path.join(args.results, "protocol_study.csv"), table, COLUMNS)
    write_csv(os.path.join(args.results, "protocol_study_agreement.csv"), agreement(table),
              ("regime", "protocol", "pairs", "spearman_rho"))
    write_csv(os.path.join(args.results, "protocol_study_rungs.csv"), rung_rows(records), RUNG_COLUMNS)
    if table:
        figure(os.path.join(args.results, "protocol_study.png"), table, title)
    for row in table:
        print(",".join(str(row[column]) for column in COLUMNS))
    return 0


if __name__ == "__main__":
    sys.exit(main())

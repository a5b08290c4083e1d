"""How long will this take: the one estimate behind the regime binaries' plan line and `--dry_run`
and the sweep's `--dry_run`.

Work. A run is images trained (steps x batch) and images passed forward only: validation scored
after every trial and at every curve point (`--eval_every`), the test split after the retrain, and
a probe's feature extraction of train, val and test. Split sizes come from the dataset table
(tfbench.datasets.catalog.estimated_split_sizes), so no data is read. The probe's L2 search runs
on the CPU after extraction and is not counted.

Throughput, per device, for a network at an image size; the first of:
  1. `--images_per_second` (the sweep): ResNet-50's training rate, scaled to each network by
     multiply-adds (tfbench.backbones.compute);
  2. measured for this network and image size: finished records in the output folder (trial and
     run records give the training rate, probe records the extraction rate), then the
     measurements of this machine in THROUGHPUT_FILE;
  3. in a binary's run (not `--dry_run`), before the first trial: a few timed warm-up steps
     (tfbench.regimes.trained), stored in THROUGHPUT_FILE for later estimates;
  4. measurements of other networks (records first, then THROUGHPUT_FILE), scaled by multiply-adds
     (not those of networks too small to scale, compute.MIN_SCALABLE_COST: tiny);
  5. the table alone: ResNet-50 at TABLE_RESNET50_IMAGES_PER_SECOND on one GPU, scaled.
When only one of the training and forward rates is measured, the other is FORWARD_SPEEDUP times
faster or slower. `--dry_run` never builds a model: it uses 1, 2, 4 or 5 and says which.

THROUGHPUT_FILE, `<cache root>/throughput.json` (tfbench.files.cache_root: $TFBENCH_CACHE or
~/.cache/tfbench), holds this machine's measurements; `python -m tfbench.doctor` and the binaries'
warm-up write it through `store_measurement`:

    {"measurements": [{"model": "resnet50", "image_size": 224, "kind": "train" or "forward",
                       "images_per_second": 41.5,       # per device
                       "batch_size": 256, "precision": "float32", "by": "tfbench.doctor",
                       "measured_at": "2026-12-06T07:00:00+00:00"}]}

A new measurement replaces the one of the same model, image size, kind and writer.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import statistics
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from tfbench import cli, files
from tfbench.backbones import catalog as backbone_catalog
from tfbench.backbones import compute
from tfbench.experiment import Experiment
from tfbench.settings import HALVING_SEARCHES, TRAINED_REGIMES, Runtime

TRAIN, FORWARD = "train", "forward"
THROUGHPUT_FILE = "throughput.json"
# A forward pass costs about a third of a training step's forward and backward pass (the backward
# pass costs about twice the forward one): the usual rule, used only to fill in the rate that was
# not measured.
FORWARD_SPEEDUP = 3.0
# Keras Applications documentation table (keras.io/api/applications): ResNet50, 4.6 ms per
# inference step of a batch of 32 on its GPU; training taken as FORWARD_SPEEDUP times slower.
TABLE_RESNET50_IMAGES_PER_SECOND = 32 / 0.0046 / FORWARD_SPEEDUP
RECORDS, STORED = "records", "stored"
MEASURED, GIVEN, SCALED, TABLE = "measured", "given", "scaled", "table"
BASES = {
    MEASURED: "measured on the network",
    GIVEN: "--images_per_second for ResNet-50, scaled by multiply-adds",
    SCALED: "scaled by multiply-adds from measurements of other networks",
    TABLE: f"table: ResNet-50 at {TABLE_RESNET50_IMAGES_PER_SECOND:,.0f} images/s per GPU, scaled by multiply-adds",
}
FINISHED = ("ok", "diverged")


@dataclasses.dataclass(frozen=True)
class Rate:
    """One measured throughput: images per second per device, training or forward only."""

    model: str
    image_size: Optional[int]
    kind: str
    images_per_second: float
    origin: str  # RECORDS or STORED


@dataclasses.dataclass(frozen=True)
class Throughput:
    """A network's rates per device and how they were obtained (for the plan line)."""

    train: float
    forward: float
    source: str
    basis: str  # one of BASES: how, without the numbers (the sweep groups networks by it)
    where: str  # what the time is for, in the plan line: "on this machine", "on one GPU by the table"


@dataclasses.dataclass(frozen=True)
class Work:
    """Images trained and images passed forward only (scoring, feature extraction)."""

    trained_images: int = 0
    forward_images: int = 0
    sizes_known: bool = True  # False: the dataset's size is unknown, scoring is not counted

    def __add__(self, other: "Work") -> "Work":
        return Work(self.trained_images + other.trained_images, self.forward_images + other.forward_images,
                    self.sizes_known and other.sizes_known)

    def seconds(self, throughput: Throughput) -> float:
        return self.trained_images / throughput.train + self.forward_images / throughput.forward


# ---------------------------------------------------------------------------------------------
# Throughput


def native_size(model: str) -> Optional[int]:
    """The registered network's native image size; None for a user model (not built here)."""
    return backbone_catalog.REGISTRY.get(model).image_size if model in backbone_catalog.REGISTRY else None


def image_size(experiment: Experiment) -> Optional[int]:
    return experiment.image_size or native_size(experiment.model)


def _record_rate(record: Mapping[str, Any]) -> Optional[Rate]:
    experiment = record.get("experiment")
    if record.get("status") not in FINISHED or not isinstance(experiment, dict):
        return None
    size = experiment.get("image_size") or native_size(experiment.get("model", ""))
    training = record.get("training") or {}
    if experiment.get("regime") not in TRAINED_REGIMES:  # probe, estimate: features only
        kind, value = FORWARD, (record.get("timings") or {}).get("images_per_second")
    else:
        kind = TRAIN
        value = training.get("images_per_second") or (record.get("timings") or {}).get("images_per_second")
    if not value:
        return None
    return Rate(experiment.get("model", ""), size, kind,
                float(value) / max(1, int(training.get("replicas") or 1)), RECORDS)


def rates_in_records(output_dirs: Iterable[str]) -> List[Rate]:
    """Throughput of every finished run and trial record under the folders."""
    rates = []
    for output_dir in sorted(set(output_dirs)):
        for root, _, names in os.walk(output_dir):
            for name in sorted(names):
                if name.endswith(".json") and (name == "record.json" or os.path.basename(root) == "trials"):
                    record = _read_json(os.path.join(root, name))
                    rate = _record_rate(record) if isinstance(record, dict) else None
                    if rate is not None:
                        rates.append(rate)
    return rates


def throughput_path() -> str:
    return os.path.join(files.cache_root(), THROUGHPUT_FILE)


def stored_measurements() -> List[Dict[str, Any]]:
    payload = _read_json(throughput_path())
    measurements = payload.get("measurements") if isinstance(payload, dict) else None
    return [m for m in measurements if isinstance(m, dict)] if isinstance(measurements, list) else []


def stored_rates() -> List[Rate]:
    """This machine's measurements in THROUGHPUT_FILE (a damaged file counts as empty)."""
    rates = []
    for entry in stored_measurements():
        try:
            rates.append(Rate(str(entry["model"]), entry.get("image_size"), entry["kind"],
                              float(entry["images_per_second"]), STORED))
        except (KeyError, TypeError, ValueError):
            continue
    return [rate for rate in rates if rate.kind in (TRAIN, FORWARD) and rate.images_per_second > 0]


def store_measurement(model: str, image_size: int, kind: str, images_per_second: float, by: str,
                      **details: Any) -> None:
    """Add (or replace) a measurement of this machine in THROUGHPUT_FILE; a cache that cannot be
    written costs later estimates their measurement, never the run."""
    entry = {"model": model, "image_size": image_size, "kind": kind, "images_per_second": images_per_second,
             "by": by, "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             **details}
    same = (model, image_size, kind, by)
    kept = [m for m in stored_measurements()
            if (m.get("model"), m.get("image_size"), m.get("kind"), m.get("by")) != same]
    try:
        files.write_json_atomic(throughput_path(), {"measurements": kept + [entry]})
    except OSError as error:
        cli.warn(f"throughput measurement not stored in {throughput_path()}: {error.strerror}")


def _read_json(path: str) -> Any:
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def measured(model: str, size: Optional[int], rates: Sequence[Rate]) -> Optional[Throughput]:
    """The network's own measured throughput at this size (records first), or None."""
    for origin, where, machine in ((RECORDS, "records in the output folder", "at the recorded rate"),
                                   (STORED, throughput_path(), "on this machine")):
        own = [r for r in rates if r.origin == origin and (r.model, r.image_size) == (model, size)]
        if own:
            train, forward = _both(own)
            return Throughput(train, forward, f"measured: {len(own)} in {where}", MEASURED, machine)
    return None


def from_warmup(images_per_second: float, steps: int) -> Throughput:
    return Throughput(images_per_second, images_per_second * FORWARD_SPEEDUP,
                      f"measured: {steps} warm-up steps", MEASURED, "on this machine")


def throughput(model: str, size: Optional[int], rates: Sequence[Rate],
               resnet50_images_per_second: Optional[float] = None) -> Throughput:
    """The network's throughput per device at `size`, from the first source that has it."""
    cost = compute.relative_cost(model, size)
    if cost is None:
        scaled, cost = "costed as ResNet-50 (not in the table)", 1.0
    elif cost < compute.MIN_SCALABLE_COST:  # no step is cheaper than the fixed overhead
        scaled, cost = f"costed at the overhead floor, {compute.MIN_SCALABLE_COST:g} x ResNet-50", compute.MIN_SCALABLE_COST
    else:
        scaled = "scaled by multiply-adds"
    if resnet50_images_per_second:
        train = resnet50_images_per_second / cost
        return Throughput(train, train * FORWARD_SPEEDUP,
                          f"--images_per_second={resnet50_images_per_second:g} for ResNet-50, {scaled}", GIVEN,
                          "per device at the given rate")
    own = measured(model, size, rates)
    if own is not None:
        return own
    for origin in (RECORDS, STORED):
        usable = [r for r in rates if r.origin == origin and compute.scalable(r.model, r.image_size)]
        others = [dataclasses.replace(r, images_per_second=r.images_per_second * compute.relative_cost(r.model, r.image_size))
                  for r in usable]
        if others:
            train, forward = _both(others)
            names = sorted({r.model for r in usable})
            return Throughput(train / cost, forward / cost,
                              f"{scaled} from {len(others)} measurements of {', '.join(names[:3])}"
                              f"{', ...' if len(names) > 3 else ''}", SCALED, "scaled from measured networks")
    train = TABLE_RESNET50_IMAGES_PER_SECOND / cost
    return Throughput(train, train * FORWARD_SPEEDUP,
                      f"table: ResNet-50 at {TABLE_RESNET50_IMAGES_PER_SECOND:,.0f} images/s on one GPU, {scaled}; "
                      "nothing measured here", TABLE, "on one GPU by the published table")


def _both(rates: Sequence[Rate]) -> Tuple[float, float]:
    """(training, forward) rate: the median of each kind, the missing one converted."""
    train = [r.images_per_second for r in rates if r.kind == TRAIN]
    forward = [r.images_per_second for r in rates if r.kind == FORWARD]
    train_rate = statistics.median(train) if train else None
    forward_rate = statistics.median(forward) if forward else None
    return (train_rate or forward_rate / FORWARD_SPEEDUP), (forward_rate or train_rate * FORWARD_SPEEDUP)


# ---------------------------------------------------------------------------------------------
# Work


def split_sizes(experiment: Experiment) -> Optional[Dict[str, int]]:
    from tfbench.datasets import catalog

    return catalog.estimated_split_sizes(experiment.dataset_spec(), experiment.train_examples_per_class)


def trial_work(experiment: Experiment, runtime: Runtime, steps: int) -> Work:
    """One trial: `steps` batches trained; validation scored at every curve point and at the end."""
    sizes = split_sizes(experiment)
    interval = runtime.validation_interval
    scorings = 1 + ((steps - 1) // interval if interval else 0)
    return Work(steps * experiment.batch_size, scorings * sizes["val"] if sizes else 0, sizes is not None)


def conclude_work(experiment: Experiment, steps: int) -> Work:
    """The retrain on trainval for `steps`, then the test split scored once."""
    sizes = split_sizes(experiment)
    return Work(steps * experiment.batch_size, sizes["test"] if sizes else 0, sizes is not None)


def probe_work(experiment: Experiment) -> Work:
    """The probe's feature extraction of train, val and test (cached features cost nothing, but
    whether they are cached is not looked up here)."""
    sizes = split_sizes(experiment)
    return Work(0, sum(sizes[split] for split in ("train", "val", "test")) if sizes else 0, sizes is not None)


def retrain_steps(experiment: Experiment, shape: Sequence[Tuple[int, int]]) -> int:
    """The steps of a trained run's retrain on trainval: the last rung's budget (`shape` as for
    `run_work`); halving's last budget is train_steps, however many steps its rungs add."""
    if experiment.settings.search in HALVING_SEARCHES:
        return experiment.settings.train_steps
    return shape[-1][1]


def run_work(experiment: Experiment, runtime: Runtime, shape: Sequence[Tuple[int, int]] = ()) -> Work:
    """The work of a whole run; `shape`: (trials, steps each trains) of every rung of a fine-tune
    or scratch run (tfbench.regimes.trained.rung_plan)."""
    if experiment.regime not in TRAINED_REGIMES:
        return probe_work(experiment)
    work = conclude_work(experiment, retrain_steps(experiment, shape))
    for count, steps in shape:
        for _ in range(count):
            work += trial_work(experiment, runtime, steps)
    return work


# ---------------------------------------------------------------------------------------------
# What the binaries and the sweep print


def duration(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:,.1f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:,.1f} h"
    if seconds >= 120:
        return f"{seconds / 60:,.0f} min"
    return f"{seconds:,.0f} s"


def plan_line(experiment: Experiment, runtime: Runtime, speed: Throughput, devices: int = 1,
              shape: Sequence[Tuple[int, int]] = ()) -> str:
    """The binaries' plan line: what the run does and how long it takes on `devices` devices
    (`shape` as for `run_work`)."""
    work = run_work(experiment, runtime, shape)
    seconds = work.seconds(speed) / devices
    scored = f"{work.forward_images:,} images scored" if work.sizes_known else "scoring not counted (dataset size unknown)"
    if experiment.regime not in TRAINED_REGIMES:
        return (f"plan: extract features of {work.forward_images:,} images (train, val, test) at "
                f"{image_size(experiment) or 'the native'} px, then the {'estimators' if experiment.regime == 'estimate' else 'L2 search'} on the CPU; extraction "
                f"≈ {duration(seconds)} {speed.where} ({speed.forward * devices:,.1f} images/s, {speed.source})")
    retrain = retrain_steps(experiment, shape)
    steps = sum(count * each for count, each in shape) + retrain
    batch = experiment.batch_size
    if len(shape) == 1:
        trials_text = f"{shape[0][0]} trials + 1 retrain on trainval, {shape[0][1]:,} steps of {batch} each"
    else:
        continued = " more" if experiment.settings.search == "halving_continue" else ""
        trials_text = (f"rungs of {', '.join(f'{count} x {each:,}' for count, each in shape)}{continued} steps "
                       f"+ 1 retrain on trainval of {retrain:,}, batches of {batch}")
    return (f"plan: {trials_text} = {'at most ' if len(shape) > 1 else ''}{steps:,} steps, "
            f"{steps * batch:,} images; ≈ {duration(seconds)} {speed.where} "
            f"({_milliseconds(batch / (speed.train * devices))}/step, {speed.source}; {scored})")


def _milliseconds(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:.2g} ms"


def estimated_plan_line(experiment: Experiment, runtime: Runtime, shape: Sequence[Tuple[int, int]] = ()) -> str:
    """The plan line on one device from what is known without building a model (records, this
    machine's stored measurements, the table): what `--dry_run` prints, and a probe's first line."""
    rates = rates_in_records([experiment.output_dir]) + stored_rates()
    return plan_line(experiment, runtime, throughput(experiment.model, image_size(experiment), rates), shape=shape)


def task_work(task) -> Tuple[Experiment, Work]:
    """A study task's experiment and work (tfbench.study's trial, conclude, budget and probe tasks)."""
    experiment = Experiment.from_dict(task.call.arguments["experiment"])
    if task.kind not in ("trial", "conclude", "budget"):  # a probe or estimate run: features only
        return experiment, probe_work(experiment)
    if task.kind in ("conclude", "budget", "retrain"):  # a retrain on trainval, test scored once
        return experiment, conclude_work(experiment, task.steps)
    return experiment, trial_work(experiment, Runtime(**task.call.arguments["runtime"]), task.steps)


def study_estimate(tasks: Sequence, gpus: int, resnet50_images_per_second: Optional[float] = None) -> str:
    """The sweep's `--dry_run` time lines for the tasks not finished: GPU-hours per regime (probe
    extraction, training, scoring) and the wall time on `gpus` GPUs."""
    from tfbench.tasks import plan

    remaining = [task for task in tasks if not plan.finished(task)]
    output_dirs = {task.call.arguments["experiment"]["output_dir"] for task in remaining}
    rates = rates_in_records(output_dirs) + stored_rates()
    speeds: Dict[Tuple[str, Optional[int]], Throughput] = {}
    by_regime: Dict[str, list] = {}  # regime: [training seconds, forward seconds, forward images, runs]
    sources: Dict[str, set] = {}
    unsized = set()
    for task in remaining:
        experiment, work = task_work(task)
        key = (experiment.model, image_size(experiment))
        if key not in speeds:
            speeds[key] = throughput(*key, rates, resnet50_images_per_second)
            sources.setdefault(BASES[speeds[key].basis], set()).add(experiment.model)
        speed = speeds[key]
        totals = by_regime.setdefault(experiment.regime, [0.0, 0.0, 0, set()])
        train_seconds, forward_seconds = work.trained_images / speed.train, work.forward_images / speed.forward
        totals[0] += train_seconds
        totals[1] += forward_seconds
        totals[2] += work.forward_images
        totals[3].add(task.run)
        if not work.sizes_known:
            unsized.add(experiment.dataset)
    lines = []
    total = 0.0
    for regime, (train_seconds, forward_seconds, forward_images, runs) in by_regime.items():
        total += train_seconds + forward_seconds
        if regime not in TRAINED_REGIMES:
            lines.append(f"  {regime}: {len(runs):,} runs, {forward_images:,} images extracted: "
                         f"{forward_seconds / 3600:,.1f} GPU-hours")
        else:
            lines.append(f"  {regime}: {len(runs):,} runs: {train_seconds / 3600:,.1f} GPU-hours training + "
                         f"{forward_seconds / 3600:,.1f} scoring {forward_images:,} images")
    head = (f"time (tasks not finished): {total / 3600:,.1f} GPU-hours; wall time on {gpus} GPU(s) >= "
            f"{duration(total / gpus)} (perfect packing; the probe's L2 search on CPU not counted)")
    described = "; ".join(f"{kind}: {', '.join(sorted(models)[:4])}{', ...' if len(models) > 4 else ''}"
                          for kind, models in sorted(sources.items()))
    tail = [f"throughput per network: {described}"] if described else []
    if unsized:
        tail.append(f"scoring not counted for datasets of unknown size: {', '.join(sorted(unsized))}")
    return "\n".join([head] + lines + tail)


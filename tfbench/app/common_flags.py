"""Flags and the `main` that the three regime binaries share.

Each binary (`tfbench.probe`, `tfbench.finetune`, `tfbench.scratch`) defines only its own flags and a
`run(experiment, runtime) -> record` function; this module turns flags into typed settings, an
`Experiment` and a `Runtime`, answers `--model=list` / `--dataset=list`, skips finished runs, turns
user mistakes into one-line errors with a non-zero exit, and writes nothing for a run that never
started. Names are checked against the registries before TensorFlow is imported, so a typo answers
at once.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from absl import flags

from tfbench import estimate_cost, preflight, protocol, results, runs
from tfbench.cli import HELP_WIDTH, RUN_FAILED, fail, run_app
from tfbench.experiment import Experiment
from tfbench.settings import PRECISIONS, STRATEGIES, TRAINED_REGIMES, InvalidSettingError, Runtime

FLAGS = flags.FLAGS
PROBE_BATCH_SIZE = 64  # extraction only: it does not change a probe's result

flags.DEFINE_string(
    "model", None,
    "Backbone: a registry name (--model=list prints them), hub:<TF-Hub handle or path>, a local "
    "SavedModel directory, or a .keras file.")
flags.DEFINE_string(
    "dataset", None,
    "Dataset: a registry name (--dataset=list prints them) or folder:PATH (one sub-folder per "
    "class, optionally under train/val/test).")
flags.DEFINE_string(
    "data_dir", None,
    "TFDS data directory holding prepared datasets and manual downloads "
    "(default: TFDS_DATA_DIR or ~/tensorflow_datasets).")
flags.DEFINE_string(
    "output_dir", "runs", "Root folder of run records: <output_dir>/<regime>/<dataset>/<model>/.")
flags.DEFINE_integer("seed", 0, "Seed for initialisation, data order and augmentation.")
flags.DEFINE_integer(
    "image_size", None, "Input resolution in pixels; default: the backbone's native size.")
flags.DEFINE_integer(
    "batch_size", None,
    f"Images per batch (global, across replicas); default {protocol.BATCH_SIZE} (the paper's) for "
    f"fine-tune and scratch, {PROBE_BATCH_SIZE} for probe feature extraction.", lower_bound=1)
flags.DEFINE_enum(
    "precision", "auto", PRECISIONS,
    "Numeric precision; auto = mixed_float16 on GPU, float32 on CPU (faster there).")
flags.DEFINE_boolean("overwrite", False, "Rerun even if a finished run record exists.")
flags.DEFINE_boolean(
    "dry_run", False,
    "Print the plan and how long it takes, and exit; builds no model: throughput per network from "
    "the records in --output_dir, this machine's measurements or the published table "
    "(tfbench/estimate_cost.py). A regime binary first checks what could fail late: the output "
    "folder, the image size, free disk, the dataset; tfbench.sweep prints GPU-hours per regime.")
flags.DEFINE_string(
    "models_file", None,
    "A TOML file naming your own models (a path or hub: source, a display name, an ImageNet top-1 "
    "with its source, the input range or mean/std they expect); --model and --models then take "
    "their names. See the README, 'Your own backbone'.")
flags.DEFINE_string("display_name", None, "For a path or hub: --model: its name in reports and figures.")
flags.DEFINE_float(
    "imagenet_top1", None,
    "For a path or hub: --model: its ImageNet top-1 as a fraction (needs --top1_source), so that it "
    "enters the correlation with transfer accuracy.")
flags.DEFINE_string("top1_source", None, "Where --imagenet_top1 comes from (a paper, a model card, a "
                    "measurement).")
flags.DEFINE_list(
    "input_range", None,
    "For a path or hub: --model: the pixel range it expects, e.g. -1,1 or 0,1 (default: a .keras "
    "file scales [0, 255] itself; a SavedModel takes [0, 1]).")
flags.DEFINE_list("input_mean", None, "With --input_std, instead of --input_range: per-channel mean "
                  "of pixels in [0, 1] that the model subtracts, e.g. 0.485,0.456,0.406.")
flags.DEFINE_list("input_std", None, "With --input_mean: per-channel standard deviation.")
flags.DEFINE_boolean(
    "skip_bad_images", False,
    "For folder:PATH datasets: leave images that do not decode out (with a warning, counted in the "
    "record) instead of refusing the folder.")
flags.DEFINE_list(
    "train_examples_per_class", None,
    "Train on this many examples of every class of the training split (drawn with --seed, the same "
    "for every model; the final model trains on exactly that subset; val, for the choice, and test "
    "whole). Default: all. tfbench.sweep takes a list (e.g. 10,25,50,100,all) and runs each size; "
    "'paper' is the paper's Figure 9 sizes of each dataset (1, 2, 4, ... up to its largest, "
    "tfbench/protocol.py). Single-label datasets only.")
flags.DEFINE_string(
    "preset", None,
    "A name for these settings, recorded as the run's protocol where they differ from the paper's "
    "(the flagfiles in flags/ set it); without it such runs are 'custom'. Not part of a run's identity.")
flags.DEFINE_enum(
    "strategy", "auto", STRATEGIES,
    "Devices: auto = MirroredStrategy over all local GPUs (one device otherwise); one_device; "
    "mirrored; multi_worker = MultiWorkerMirroredStrategy from TF_CONFIG (spans hosts; "
    "--output_dir must be shared storage).")

def print_models() -> None:
    from tfbench import backbones

    rows = []
    for name in backbones.names():
        spec = backbones.spec(name)
        top1 = "-" if spec.imagenet_top1 is None else f"{spec.imagenet_top1:.3f}"
        rows.append({"model": name, "source": spec.source, "image_size": spec.image_size,
                     "feature_dim": spec.feature_dim, "imagenet_top1": top1,
                     "top1_source": spec.top1_source or "-"})
    results.print_table(rows, width=HELP_WIDTH)


def print_datasets() -> None:
    from tfbench import datasets

    rows = []
    for name in datasets.names():
        spec = datasets.spec(name)
        rows.append({"dataset": name, "classes": spec.num_classes, "metric": spec.metric,
                     "multi_label": spec.multi_label, "source": spec.source,
                     "prepared": "yes" if datasets.is_prepared(spec, FLAGS.data_dir) else "no"})
    results.print_table(rows, width=HELP_WIDTH)
    print(f"prepared: readable from --data_dir={FLAGS.data_dir or datasets.default_data_dir()};\n"
          "python -m tfbench.prepare --datasets=NAME prepares the others.")


MODEL_DESCRIPTION = ("display_name", "imagenet_top1", "top1_source", "input_range", "input_mean",
                     "input_std")


def load_user_models(model: Optional[str] = None) -> None:
    """Register the --models_file models and, for a path or hub: `model`, its description flags."""
    from tfbench import backbones

    if FLAGS.models_file:
        backbones.load_models_file(FLAGS.models_file)
    described = {name: FLAGS[name].value for name in MODEL_DESCRIPTION if FLAGS[name].value is not None}
    if not described:
        return
    if model is None:
        raise InvalidSettingError(
            f"--{next(iter(described))} describes one model; in a sweep, describe models in a --models_file")
    if model in backbones.names():
        raise InvalidSettingError(
            f"--{next(iter(described))} describes a path or hub: model; {model!r} is a registered "
            "model and has its own")
    for name in ("input_range", "input_mean", "input_std"):
        if name in described:
            described[name] = _numbers(name, described[name])
    backbones.describe_source(model, described)


def _numbers(flag: str, texts) -> list:
    try:
        return [float(text) for text in texts]
    except ValueError:
        raise InvalidSettingError(f"--{flag} takes numbers, got {','.join(texts)}") from None


ALL_EXAMPLES = "all"
PAPER_SIZES = "paper"  # the paper's Figure 9 sizes of each dataset (tfbench/protocol.py)


def train_sizes_from_flags() -> List[Union[int, None, str]]:
    """--train_examples_per_class as sizes (None: the whole training set; PAPER_SIZES: the paper's
    sizes of each dataset, expanded by train_sizes_for), or [None] if unset."""
    texts = FLAGS.train_examples_per_class or [ALL_EXAMPLES]
    sizes = []
    for text in texts:
        if text.strip() in (ALL_EXAMPLES, PAPER_SIZES):
            sizes.append(None if text.strip() == ALL_EXAMPLES else PAPER_SIZES)
            continue
        try:
            size = int(text)
        except ValueError:
            size = 0
        if size < 1:
            raise InvalidSettingError(f"--train_examples_per_class takes whole numbers of at least 1, "
                                      f"{ALL_EXAMPLES!r} or {PAPER_SIZES!r}, got {text!r}")
        sizes.append(size)
    return list(dict.fromkeys(sizes))


def train_sizes_for(dataset: str, sizes: Sequence[Union[int, None, str]]) -> List[Optional[int]]:
    """`sizes` on one dataset, PAPER_SIZES replaced by the paper's sizes of that dataset."""
    expanded: List[Optional[int]] = []
    for size in sizes:
        if size != PAPER_SIZES:
            expanded.append(size)
        elif dataset in protocol.DATA_SIZE_LARGEST:
            expanded += protocol.data_size_examples_per_class(dataset)
        else:
            raise InvalidSettingError(
                f"--train_examples_per_class={PAPER_SIZES}: the paper's Figure 9 sizes are known for "
                f"{', '.join(sorted(protocol.DATA_SIZE_LARGEST))}, not {dataset!r}")
    return list(dict.fromkeys(expanded))


def check_train_subset(dataset: str, size: Optional[int]) -> None:
    """A subset of a multi-label dataset is refused before anything runs."""
    from tfbench import datasets
    from tfbench.datasets import splits

    if size is not None:
        splits.check_subset_allowed(datasets.spec(dataset, skip_bad_images=FLAGS.skip_bad_images))


def experiment_from_flags(regime: str, settings) -> Experiment:
    """Validate names against the registries first, so a typo fails before anything runs."""
    from tfbench import backbones, datasets

    for flag in ("model", "dataset"):
        if not getattr(FLAGS, flag):
            fail(f"--{flag} is required (--{flag}=list prints the choices)")
    load_user_models(FLAGS.model)
    model_spec = backbones.spec(FLAGS.model)
    datasets.spec(FLAGS.dataset, skip_bad_images=FLAGS.skip_bad_images)
    sizes = train_sizes_for(FLAGS.dataset, train_sizes_from_flags())
    if len(sizes) > 1:
        raise InvalidSettingError(f"--train_examples_per_class takes one value here, got "
                                  f"{','.join(FLAGS.train_examples_per_class)}; tfbench.sweep runs a list")
    check_train_subset(FLAGS.dataset, sizes[0])
    batch_size = FLAGS.batch_size or (protocol.BATCH_SIZE if regime in TRAINED_REGIMES else PROBE_BATCH_SIZE)
    return Experiment(
        regime=regime, model=FLAGS.model, dataset=FLAGS.dataset, output_dir=FLAGS.output_dir,
        seed=FLAGS.seed, data_dir=FLAGS.data_dir, image_size=FLAGS.image_size,
        batch_size=batch_size, precision=FLAGS.precision, settings=settings,
        cache_dir=FLAGS["cache_dir"].value if "cache_dir" in FLAGS else None, preset=FLAGS.preset,
        skip_bad_images=FLAGS.skip_bad_images, display_name=model_spec.display_name,
        train_examples_per_class=sizes[0])


def runtime_from_flags(**regime_knobs) -> Runtime:
    """The Runtime: the shared --strategy plus the knobs a regime's own flags give."""
    return Runtime(strategy=FLAGS.strategy, **regime_knobs)


def rung_shape(experiment: Experiment) -> List[Tuple[int, int]]:
    """(trials, steps each) of every rung of a fine-tune or scratch run; none for a probe."""
    if experiment.regime not in TRAINED_REGIMES:
        return []
    from tfbench.regimes import trained

    return trained.rung_plan(experiment, trained.trials(experiment))


def run_summary_line(record: Mapping[str, Any], skipped: bool = False) -> str:
    """The one line every binary ends with."""
    experiment = record["experiment"]
    timings = record.get("timings", {})
    score = record.get("test_score")
    parts = [
        f"{experiment['regime']}: model={experiment['model']} dataset={experiment['dataset']}",
        f"status={record['status']}",
        f"test_{record.get('metric')}=" + ("-" if score is None else f"{score:.4f}"),
    ]
    for name, value in (record.get("estimates") or {}).items():
        parts.append(f"{name}={'n/a' if value is None else format(value, '.4g')}")
    for name, value in record.get("hyperparameters", {}).items():
        parts.append(f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}")
    if timings.get("wall_seconds") is not None:
        parts.append(f"wall={timings['wall_seconds']:.1f}s")
    if timings.get("images_per_second") is not None:
        parts.append(f"images/s={timings['images_per_second']:.1f}")
    if skipped:
        parts.append("(finished earlier; --overwrite reruns)")
    return " ".join(parts)


def main(regime: str, settings_from_flags: Callable[[], Any],
         run: Callable[[Experiment, Runtime], Dict[str, Any]],
         runtime: Callable[[], Runtime] = runtime_from_flags) -> None:
    """absl entry point shared by the regime binaries."""

    def _main():
        if FLAGS.model == "list":
            load_user_models()
            print_models()
            return
        if FLAGS.dataset == "list":
            print_datasets()
            return
        errors = runs.user_errors()
        try:  # names and settings first: a typo answers before TensorFlow is imported
            experiment = experiment_from_flags(regime, settings_from_flags())
            run_runtime = runtime()
            finished = not FLAGS.overwrite and results.finished_run(experiment) is not None
            if not finished:  # then what can fail late, before anything is written
                preflight.check(experiment)
            if FLAGS.dry_run:
                print(estimate_cost.estimated_plan_line(experiment, run_runtime, rung_shape(experiment))
                      + ("; finished earlier, nothing to run (--overwrite reruns)" if finished else ""))
                return
            outcome = runs.run_experiment(experiment, run, run_runtime, overwrite=FLAGS.overwrite,
                                   user_errors=errors)
        except errors as error:
            fail(str(error))
        if not outcome.skipped:
            print(f"record: {results.record_path(experiment)}")
        print(run_summary_line(outcome.record, skipped=outcome.skipped))
        if outcome.error is not None:
            print(outcome.record["traceback"], file=sys.stderr)
            print(f"error: {regime} run failed: {outcome.record['reason']} "
                  f"(recorded in {results.record_path(experiment)})", file=sys.stderr)
            sys.exit(RUN_FAILED)

    run_app(_main)

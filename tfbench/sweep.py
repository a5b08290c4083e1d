"""Run every (regime x dataset x model) of a study through the regime binaries' own code.

    python -m tfbench.sweep --flagfile=flags/mini.flags
    python -m tfbench.sweep --models=resnet50,mobilenet_v2 --datasets=dtd,oxford_pets \
        --regimes=probe,finetune --finetune_flags=flags/finetune.flags --data_dir=~/tensorflow_datasets

Each regime's settings come from the same flags its binary takes; `--<regime>_flags=FILE` gives a
regime its own flagfile (fine-tuning and scratch share flag names but not values). Finished runs
are skipped, a failed run is recorded with its error and the sweep goes on, and the exit code is
non-zero if any run failed. When every run is done the report (tfbench.report) is rebuilt.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Dict, List, Tuple

from absl import flags

from tfbench import cli, finetune, flags_common, probe, protocol, runs
from tfbench.experiment import Experiment
from tfbench.settings import REGIMES, TRAINED_REGIMES, Runtime

FLAGS = flags.FLAGS

flags.DEFINE_list("models", None, "Backbones to run (registry names or paths), comma-separated.")
flags.DEFINE_list("datasets", None, "Datasets to run, comma-separated.")
flags.DEFINE_list("regimes", list(REGIMES), "Regimes to run, in this order.")
for _regime in REGIMES:
    flags.DEFINE_string(f"{_regime}_flags", None,
                        f"Flagfile with the {_regime} regime's own settings, read after the "
                        "command line for that regime only.")
flags.DEFINE_list(
    "probe_inits", ["imagenet"],
    "Probe the features of these initialisations: imagenet (the paper), random (the same network "
    "randomly initialised: what the architecture alone gives; the report compares the two).")
flags.DEFINE_boolean("report", True, "Rebuild the report under <output_dir>/report at the end.")

SETTINGS = {
    "probe": probe.settings_from_flags,
    "finetune": lambda: finetune.settings_from_flags("finetune"),
    "scratch": lambda: finetune.settings_from_flags("scratch"),
}
RUNTIMES = {
    "probe": flags_common.runtime_from_flags,
    "finetune": finetune.runtime_from_flags,
    "scratch": finetune.runtime_from_flags,
}
RUN = {"probe": probe.run, "finetune": finetune.run, "scratch": finetune.run}


def regime_settings(regime: str, argv: List[str]) -> Tuple[Dict, object, Runtime, List[str], List[str]]:
    """(shared Experiment fields, regime settings, runtime, models, datasets) as the regime's
    binary would parse them; a regime's flagfile may also narrow --models and --datasets."""
    flagfile = FLAGS[f"{regime}_flags"].value
    if flagfile:
        FLAGS.unparse_flags()
        FLAGS(argv + [f"--flagfile={flagfile}"])
    batch_size = FLAGS.batch_size or (protocol.BATCH_SIZE if regime in TRAINED_REGIMES
                                      else flags_common.PROBE_BATCH_SIZE)
    shared = {"output_dir": FLAGS.output_dir, "seed": FLAGS.seed, "data_dir": FLAGS.data_dir,
              "image_size": FLAGS.image_size, "batch_size": batch_size,
              "precision": FLAGS.precision, "cache_dir": FLAGS.cache_dir, "preset": FLAGS.preset,
              "skip_bad_images": FLAGS.skip_bad_images}
    settings, runtime = SETTINGS[regime](), RUNTIMES[regime]()
    models, datasets = list(FLAGS.models), list(FLAGS.datasets)
    if flagfile:  # back to the command line alone for the next regime
        FLAGS.unparse_flags()
        FLAGS(argv)
    return shared, settings, runtime, models, datasets


def plan(argv: List[str]) -> List[Tuple[Experiment, Runtime]]:
    """Every experiment of the sweep with its runtime, validated before any of them runs."""
    from tfbench import backbones, datasets

    for flag in ("models", "datasets"):
        if not FLAGS[flag].value:
            cli.fail(f"--{flag} is required (a comma-separated list)")
    unknown = [r for r in FLAGS.regimes if r not in REGIMES]
    if unknown:
        cli.fail(f"unknown regime {unknown[0]!r}; valid choices: {', '.join(REGIMES)}")
    experiments = []
    for regime in FLAGS.regimes:
        shared, settings, runtime, models, names = regime_settings(regime, argv)
        flags_common.load_user_models()
        display_names = {model: backbones.spec(model).display_name for model in models}
        for dataset in names:
            datasets.spec(dataset, skip_bad_images=FLAGS.skip_bad_images)
        variants = ([dataclasses.replace(settings, init=init) for init in FLAGS.probe_inits]
                    if regime == "probe" else [settings])
        experiments += [(Experiment(regime=regime, model=model, dataset=dataset, settings=variant,
                                    display_name=display_names[model], **shared), runtime)
                        for variant in variants for dataset in names for model in models]
    return experiments


def eta(seconds_by_regime: Dict[str, List[float]], remaining: List[Tuple[Experiment, Runtime]]) -> str:
    """Remaining time from the mean wall time of runs done so far, per regime where known."""
    everything = [s for values in seconds_by_regime.values() for s in values]
    if not everything:
        return "ETA unknown"
    total = 0.0
    for experiment, _ in remaining:
        known = seconds_by_regime.get(experiment.regime) or everything
        total += sum(known) / len(known)
    return f"ETA {time.strftime('%H:%M:%S', time.gmtime(total))}"


def sweep(experiments: List[Tuple[Experiment, Runtime]], overwrite: bool,
          user_errors: tuple) -> Dict[str, int]:
    """Run them in order; returns how many were run, skipped and failed."""
    counts = {"ran": 0, "skipped": 0, "failed": 0}
    seconds_by_regime: Dict[str, List[float]] = {}
    for index, (experiment, runtime) in enumerate(experiments):
        label = f"[{index + 1}/{len(experiments)}] {experiment.regime} {experiment.dataset} {experiment.model}"
        print(f"{label} ... {eta(seconds_by_regime, experiments[index:])}", flush=True)
        started = time.time()
        outcome = runs.execute(experiment, RUN[experiment.regime], runtime, overwrite=overwrite,
                               user_errors=user_errors)
        if outcome.skipped:
            counts["skipped"] += 1
        else:
            counts["ran"] += 1
            seconds_by_regime.setdefault(experiment.regime, []).append(time.time() - started)
        if outcome.error is not None:
            counts["failed"] += 1
            print(f"{label} failed: {outcome.record['reason']} (recorded; continuing)", file=sys.stderr)
        print(f"{label} {flags_common.summary_line(outcome.record, skipped=outcome.skipped)}", flush=True)
    return counts


def main():
    def _main():
        from tfbench import report

        argv = list(sys.argv)
        errors = flags_common.user_errors() + (report.ReportInputError,)
        try:
            experiments = plan(argv)
            started = time.time()
            counts = sweep(experiments, FLAGS.overwrite, errors)
            if FLAGS.report:
                report.report(FLAGS.output_dir)
        except errors as error:
            cli.fail(str(error))
        print(f"sweep: {len(experiments)} runs: {counts['ran']} ran, {counts['skipped']} skipped "
              f"(finished earlier), {counts['failed']} failed in {time.time() - started:.0f}s; "
              f"records under {FLAGS.output_dir}")
        if counts["failed"]:
            sys.exit(cli.RUN_FAILED)

    cli.run_app(_main)


if __name__ == "__main__":
    main()

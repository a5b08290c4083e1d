"""Will this machine carry the study? Checks it in about a minute, before a run of hours.

    python -m tfbench.doctor
    python -m tfbench.doctor --model=efficientnet_lite0 --data_dir=DIR --output_dir=runs
    python -m tfbench.doctor --ray_address=auto --json

Prints one line per check -- ok / warning / fail, what was found and what to do -- and exits 0
unless a check failed (1). --json prints the same as one JSON object instead. The checks are
tfbench.checkup's: software versions and GPUs, numerics under each precision and strategy, the
input pipeline's and --model's training throughput (kept for plan estimates), storage, prepared
datasets and cached weights, and with --ray_address the Ray cluster's GPUs.
"""

from __future__ import annotations

import json
import sys


def define_flags(flag_values=None) -> None:
    """Flags of this binary only, defined when it runs (into `flag_values` if given)."""
    from absl import flags

    into = dict(flag_values=flag_values if flag_values is not None else flags.FLAGS)
    flags.DEFINE_string("model", "resnet50",
                        "Backbone whose training step is timed (if its weights are cached) and whose run's "
                        "disk needs are checked; --model=list of any regime binary prints them.", **into)
    flags.DEFINE_string("data_dir", None,
                        "TFDS data directory to look for prepared datasets in (default: TFDS_DATA_DIR or "
                        "~/tensorflow_datasets).", **into)
    flags.DEFINE_string("output_dir", "runs", "Folder the study will write its runs to.", **into)
    flags.DEFINE_string("ray_address", None, "Ray cluster to check (e.g. auto, or ray://host:10001); "
                        "default: no cluster check.", **into)
    flags.DEFINE_boolean("json", False, "Print the checks as one JSON object instead of lines.", **into)


def main() -> None:
    from absl import flags, logging

    from tfbench import backbones, checkup, cli

    define_flags()
    FLAGS = flags.FLAGS

    def run() -> None:
        if not FLAGS["verbosity"].present:  # TFDS warns about every dataset folder it cannot use
            logging.set_verbosity(logging.ERROR)
        if FLAGS.model not in backbones.names():
            cli.fail(f"--model={FLAGS.model!r} is not a registered backbone; valid choices: "
                     f"{', '.join(backbones.names())}")
        report = checkup.doctor(FLAGS.model, FLAGS.data_dir, FLAGS.output_dir, FLAGS.ray_address,
                                print_lines=not FLAGS.json)
        if FLAGS.json:
            print(json.dumps(report.as_json(), indent=2, default=str))
        else:
            counts = {verdict: sum(check.verdict == verdict for check in report.checks)
                      for verdict in checkup.VERDICTS}
            print(f"doctor: {counts['ok']} ok, {counts['warning']} warning(s), {counts['fail']} failed "
                  f"in {report.seconds:.0f} s" + ("" if report.passed else "; fix the failures before a study"))
        sys.exit(0 if report.passed else cli.RUN_FAILED)

    cli.run_app(run)


if __name__ == "__main__":
    main()

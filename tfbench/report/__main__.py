"""`python -m tfbench.report --output_dir=runs`: rebuild the report of an output folder."""

from absl import flags

from tfbench import cli
from tfbench.report import checkpoints, permutation, significance
from tfbench.report.build import BOOTSTRAP_RESAMPLES, ReportInputError, report

FLAGS = flags.FLAGS

flags.DEFINE_string("output_dir", None, "Root folder of the run records (the regime binaries' "
                    "--output_dir, or a folder holding several).")
flags.DEFINE_string("report_dir", None, "Where the report goes (default: <output_dir>/report).")
flags.DEFINE_string("protocol", None, "Report only this protocol: its name (paper, a preset's "
                    "name, custom) or the id the report shows beside it.")
flags.DEFINE_integer("bootstrap_resamples", BOOTSTRAP_RESAMPLES,
                     "Bootstrap resamples of the models for the r intervals.", lower_bound=100)
flags.DEFINE_integer("seed", 0, "Seed of the bootstrap resampling and of the permutations.")
flags.DEFINE_enum("significance_test", significance.PERMUTATION, list(significance.TESTS),
                  "How the other networks are compared with each dataset's best: the paper's two-sided "
                  "paired permutation test, or tfbench's one-sided paired bootstrap.")
flags.DEFINE_enum("imagenet_top1", checkpoints.ANY, list(checkpoints.KINDS),
                  "Which ImageNet top-1 enters r: any (measured where it exists, else published; "
                  "the report says when they mix), only measured, or only published values.")
flags.DEFINE_integer("permutation_samples", permutation.SAMPLES,
                     "Permutations per comparison (top-1 of single runs is exact McNemar, no sampling).",
                     lower_bound=100)
flags.DEFINE_integer("map_permutation_samples", permutation.MAP_SAMPLES,
                     "Permutations per comparison for 11-point mAP (each recomputes both mAPs).",
                     lower_bound=100)


def main() -> None:
    def run():
        if not FLAGS.output_dir:
            cli.fail("--output_dir is required: the root folder of the run records")
        try:
            report(FLAGS.output_dir, FLAGS.report_dir, resamples=FLAGS.bootstrap_resamples,
                   seed=FLAGS.seed, protocol=FLAGS.protocol,
                   significance_test=significance.Test(FLAGS.significance_test, FLAGS.permutation_samples,
                                                       FLAGS.map_permutation_samples),
                   top1_kind=FLAGS.imagenet_top1)
        except ReportInputError as error:
            cli.fail(str(error))

    cli.run_app(run)


if __name__ == "__main__":
    main()

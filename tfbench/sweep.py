"""Run every (regime x dataset x model) of a study through the regime binaries' own code.

    python -m tfbench.sweep --flagfile=flags/mini.flags
    python -m tfbench.sweep --models=resnet50,mobilenet_v2 --datasets=dtd,oxford_pets \
        --regimes=probe,finetune --finetune_flags=flags/finetune.flags --data_dir=~/tensorflow_datasets

Each regime's settings come from the same flags its binary takes; `--<regime>_flags=FILE` gives a
regime its own flagfile (fine-tuning and scratch share flag names but not values). Finished runs
are skipped, a failed run is recorded with its error and the sweep goes on, and the exit code is
non-zero if any run failed. When every run is done the report (tfbench.report) is built, once: by
the first driver to find the study complete, and again only when a run record has changed.

A run decomposes into tasks (tfbench.study): a fine-tune or scratch run into its trials, then the
selection, retrain and test score (then, with `--convergence_budgets`, the retrain of that choice at
each budget); a probe run into one task. An executor runs them:
`--executor=local` (the default) one after another in this process; `--executor=ray` as Ray
tasks, each with `--cpus_per_trial` CPUs and `--gpus_per_trial` GPUs, on this machine or the
cluster at `--ray_address`, many at once. `--shard=INDEX/COUNT` (or `auto/COUNT` under a
Kubernetes Indexed Job or a Slurm array) runs a deterministic slice of the tasks; a lock per task
lets several drivers share one output folder (`--lock_heartbeat_seconds`, `--lock_stale_seconds`).
`--retrain_cheap_choices` adds the retrains of what cheaper searches would have chosen on the
finished grid runs (tfbench.report.cheap_alternatives), so that the report shows their test scores.
Exit codes: 0 done, 1 a run failed, 2 bad input, 3 (cli.INCOMPLETE) some tasks were left to other
shards or a rerun. `--dry_run` prints the plan and its cost instead.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Dict, List, Optional, Tuple

from absl import flags

from tfbench import cheap_retrains, cli, estimate_cost, preflight, runs, study
from tfbench.app import common_flags, estimate_flags, probe_flags, training_flags
from tfbench.tasks import executors, locks, plan
from tfbench.experiment import Experiment
from tfbench.settings import PAPER_REGIMES, REGIMES, InvalidSettingError, Runtime

FLAGS = flags.FLAGS

flags.DEFINE_list("models", None, "Backbones to run (registry names or paths), comma-separated.")
flags.DEFINE_list("datasets", None, "Datasets to run, comma-separated.")
flags.DEFINE_list("regimes", list(PAPER_REGIMES),
                  f"Regimes to run, in this order, of {', '.join(REGIMES)} (estimate: transferability "
                  "estimators of the training features, scored by the report against the others).")
for _regime in REGIMES:
    flags.DEFINE_string(f"{_regime}_flags", None,
                        f"Flagfile with the {_regime} regime's own settings, read after the "
                        "command line for that regime only.")
flags.DEFINE_list(
    "probe_inits", ["imagenet"],
    "Probe the features of these initialisations: imagenet (the paper), random (the same network "
    "randomly initialised: what the architecture alone gives; the report compares the two).")
flags.DEFINE_list("seeds", None,
                  "Run every configuration once per seed (distinct runs, each in its own folder); "
                  "the report shows mean ± sd over them. Default: --seed alone.")
flags.DEFINE_list(
    "convergence_budgets", [],
    "The paper's Figure 8: after each fine-tune and scratch run, retrain its chosen hyperparameters "
    "for a complete schedule of each of these many steps (e.g. 2500,5000,10000), test scored, each a "
    "task of the plan; the report plots test score against steps. The run's own --train_steps is "
    "the run itself. Empty: none (the report's partial-curve view, a cheap approximation, remains).")
flags.DEFINE_boolean("report", True, "Build the report under <output_dir>/report once every run is finished "
                     "(once per study: by the first driver to see it complete).")
flags.DEFINE_enum("executor", "local", executors.EXECUTORS,
                  "Where tasks run: local = one after another in this process; ray = Ray tasks on "
                  "this machine or on the cluster at --ray_address (pip install 'tfbench[ray]').")
flags.DEFINE_string("ray_address", None,
                    "Ray cluster to run on (auto = the one this machine belongs to, or host:6379, "
                    "ray://host:10001); default: RAY_ADDRESS if set, else start Ray on this machine.")
flags.DEFINE_float("gpus_per_trial", 0, "GPUs each Ray task asks for (it sees only those).", lower_bound=0)
flags.DEFINE_float("cpus_per_trial", 1, "CPUs each Ray task asks for.", lower_bound=0)
flags.DEFINE_string("shard", None,
                    "Run only shard INDEX of COUNT (INDEX/COUNT), or auto/COUNT with INDEX from "
                    "JOB_COMPLETION_INDEX (Kubernetes Indexed Job) or SLURM_ARRAY_TASK_ID.")
flags.DEFINE_float("wait_for_needs", 0,
                   "Seconds to wait, once this driver has nothing else to run, for needs that another "
                   "shard or driver runs (the clock restarts whenever a task starts here); then the "
                   "tasks that need them are left for a rerun and the exit code is 3. 0: leave them at "
                   "once. A need that failed is never waited for.", lower_bound=0)
flags.DEFINE_float("lock_heartbeat_seconds", locks.HEARTBEAT_SECONDS,
                   "How often a running task refreshes its lock, and how often a driver looks at the "
                   "locks of tasks another owner holds.", lower_bound=0)
flags.DEFINE_float("lock_stale_seconds", locks.STALE_AFTER_SECONDS,
                   "A lock not refreshed for this long is stale: its owner is taken to be gone and the "
                   "task runs again elsewhere (resuming from its checkpoint); an owner that was only "
                   "paused stops. At least twice --lock_heartbeat_seconds.", lower_bound=0)
flags.DEFINE_float("images_per_second", None,
                   "For --dry_run: ResNet-50's training throughput per GPU, scaled to every network by "
                   "its multiply-adds; default: measured in the finished records (or by "
                   "python -m tfbench.doctor), else the published table.", lower_bound=0)
flags.DEFINE_integer("dry_run_gpus", 1, "GPUs that --dry_run's wall-time estimate assumes.", lower_bound=1)
flags.DEFINE_boolean(
    "retrain_cheap_choices", False,
    "Also retrain, on train+val and scored on test as a grid run's conclusion does, each setting that "
    "the report's cheaper searches (VTAB 2 x 2, transfer from other networks, most frequent) choose on "
    "the finished grid runs of this sweep and that no run has retrained, so that the cheap-alternatives "
    "table shows their test scores; recorded in <run dir>/cheap_retrains/. Planned from the records "
    "as they are: run it once the grid runs are finished.")

SETTINGS = {
    "probe": probe_flags.settings_from_flags,
    "finetune": lambda: training_flags.settings_from_flags("finetune"),
    "scratch": lambda: training_flags.settings_from_flags("scratch"),
    "estimate": estimate_flags.settings_from_flags,
}
RUNTIMES = {
    "probe": common_flags.runtime_from_flags,
    "finetune": training_flags.runtime_from_flags,
    "scratch": training_flags.runtime_from_flags,
    "estimate": common_flags.runtime_from_flags,
}


def regime_settings(regime: str, argv: List[str]) -> Tuple[Dict, object, Runtime, List[str], List[str]]:
    """(shared Experiment fields, regime settings, runtime, models, datasets) as the regime's
    binary would parse them; a regime's flagfile may also narrow --models and --datasets."""
    flagfile = FLAGS[f"{regime}_flags"].value
    if flagfile:
        FLAGS.unparse_flags()
        FLAGS(argv + [f"--flagfile={flagfile}"])
    batch_size = FLAGS.batch_size or runs.default_batch_size(regime)
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


def seeds_from_flags() -> List[int]:
    """--seeds as distinct integers in the order given, or [--seed] when unset."""
    if not FLAGS.seeds:
        return [FLAGS.seed]
    try:
        return list(dict.fromkeys(int(text) for text in FLAGS.seeds))
    except ValueError:
        raise InvalidSettingError(f"--seeds takes whole numbers, got {','.join(FLAGS.seeds)}") from None


def budgets_from_flags() -> List[int]:
    """--convergence_budgets as distinct step counts of at least 1, ascending."""
    try:
        budgets = [int(text) for text in FLAGS.convergence_budgets]
    except ValueError:
        budgets = []
    if len(budgets) != len(FLAGS.convergence_budgets) or any(steps < 1 for steps in budgets):
        raise InvalidSettingError(f"--convergence_budgets takes whole numbers of steps of at least 1 "
                                  f"(e.g. 2500,5000,10000), got {','.join(FLAGS.convergence_budgets)}")
    return sorted(set(budgets))


def experiments_from_flags(argv: List[str]) -> List[Tuple[Experiment, Runtime]]:
    """Every experiment of the sweep with its runtime, validated before any of them runs: each
    (regime, settings, training-set size, dataset, model) once per seed."""
    from tfbench import backbones, datasets

    for flag in ("models", "datasets"):
        if not FLAGS[flag].value:
            cli.fail(f"--{flag} is required (a comma-separated list)")
    unknown = [r for r in FLAGS.regimes if r not in REGIMES]
    if unknown:
        cli.fail(f"unknown regime {unknown[0]!r}; valid choices: {', '.join(REGIMES)}")
    seeds, sizes = seeds_from_flags(), common_flags.train_sizes_from_flags()
    experiments = []
    for regime in FLAGS.regimes:
        shared, settings, runtime, models, names = regime_settings(regime, argv)
        del shared["seed"]
        common_flags.load_user_models()
        display_names = {model: backbones.spec(model).display_name for model in models}
        for dataset in names:
            datasets.spec(dataset, skip_bad_images=FLAGS.skip_bad_images)
            for size in common_flags.train_sizes_for(dataset, sizes):
                common_flags.check_train_subset(dataset, size)
        variants = ([dataclasses.replace(settings, init=init) for init in FLAGS.probe_inits]
                    if regime == "probe" else [settings])
        experiments += [(Experiment(regime=regime, model=model, dataset=dataset, settings=variant,
                                    display_name=display_names[model], seed=seed,
                                    train_examples_per_class=size, **shared), runtime)
                        for variant in variants for dataset in names
                        for size in common_flags.train_sizes_for(dataset, sizes)
                        for model in models for seed in seeds]
    return experiments


def selected_tasks(study_plan: plan.Plan, shard: Optional[plan.Shard]) -> List[plan.Task]:
    return study_plan.tasks if shard is None else study_plan.shard(shard.index, shard.count)


def print_run_summary(task: plan.Task, outcome: executors.TaskOutcome) -> None:
    """The line each regime binary ends with, for each run a task concluded (or found finished)."""
    record = plan.read_record(task.record)
    if task.kind not in ("trial", "budget", "retrain") and record is not None and "experiment" in record:
        print(f"  {common_flags.run_summary_line(record, skipped=outcome.status == 'skipped')}", flush=True)


def lock_timing() -> locks.Timing:
    try:
        return locks.Timing(FLAGS.lock_heartbeat_seconds, FLAGS.lock_stale_seconds)
    except locks.TimingError as error:
        raise plan.PlanError(f"--lock_heartbeat_seconds/--lock_stale_seconds: {error}") from None


def exit_code(summary: executors.Summary, study_plan: plan.Plan) -> int:
    """0 when every selected task finished; cli.RUN_FAILED when a task failed or waits for one
    that failed (running this command again alone cannot complete it); cli.INCOMPLETE when tasks
    wait only for tasks that other shards or drivers have not finished yet. Cluster schedulers
    rerun a shard on INCOMPLETE without counting a failure (docs/cluster/)."""
    waits_for_a_failure = any((plan.read_record(study_plan[need].record) or {}).get("status") == "failed"
                              for needs in summary.waiting.values() for need in needs)
    if summary.count("failed") or waits_for_a_failure:
        return cli.RUN_FAILED
    return 0 if summary.complete() else cli.INCOMPLETE


def make_executor(timing: locks.Timing):
    if FLAGS.executor == "local":
        return executors.LocalExecutor(timing)
    return executors.RayExecutor(address=FLAGS.ray_address, cpus_per_task=FLAGS.cpus_per_trial,
                                 gpus_per_task=FLAGS.gpus_per_trial, timing=timing)


def main():
    def _main():
        from tfbench.report import build as report

        argv = list(sys.argv)
        errors = runs.user_errors() + (report.ReportInputError, plan.PlanError, executors.ExecutorError)
        try:
            if FLAGS.retrain_cheap_choices and FLAGS.overwrite:
                raise plan.PlanError("--retrain_cheap_choices cannot be combined with --overwrite: it retrains "
                                     "the choices of finished grid runs, which --overwrite reruns; run the "
                                     "sweep first, then again with --retrain_cheap_choices")
            if FLAGS.shard and FLAGS.overwrite:
                raise plan.PlanError("--overwrite cannot be combined with --shard: a shard would discard the "
                                     "trials of runs that other shards are training; delete the runs' "
                                     "folders once, then start the shards")
            shard = plan.parse_shard(FLAGS.shard) if FLAGS.shard else None  # before any slow work
            timing = lock_timing()
            preflight.check_output_dir(FLAGS.output_dir)
            budgets = budgets_from_flags()
            experiments = experiments_from_flags(argv)
            study_plan = study.study_plan(experiments, overwrite=FLAGS.overwrite, models_file=FLAGS.models_file,
                                          budgets=budgets)
            if FLAGS.retrain_cheap_choices:
                study_plan = plan.Plan(study_plan.tasks + cheap_retrains.tasks(experiments, FLAGS.output_dir,
                                                                                   FLAGS.models_file))
            tasks = selected_tasks(study_plan, shard)
            if FLAGS.dry_run:
                print(plan.cost(tasks).summary())
                print(estimate_cost.study_estimate(tasks, FLAGS.dry_run_gpus, FLAGS.images_per_second))
                return
            if FLAGS.overwrite:
                study.discard(tasks)
            started = time.time()
            def run_tasks():
                with make_executor(timing) as executor:
                    return executors.execute(study_plan, tasks, executor, wait_for_needs=FLAGS.wait_for_needs,
                                             on_outcome=print_run_summary)

            summary = cli.interruptible(run_tasks)
            if FLAGS.report and all(plan.finished(task) for task in study_plan.tasks):
                print(study.report_once(study_plan, FLAGS.output_dir, report.report, timing), flush=True)
        except errors as error:
            cli.fail(str(error))
        print(f"sweep: {summary.line()} in {time.time() - started:.0f}s; records under {FLAGS.output_dir}")
        code = exit_code(summary, study_plan)
        if code == cli.INCOMPLETE:
            print("sweep: some tasks wait for tasks that are not finished; run the same command again "
                  "once those are done", file=sys.stderr)
        sys.exit(code)

    cli.run_app(_main)


if __name__ == "__main__":
    main()

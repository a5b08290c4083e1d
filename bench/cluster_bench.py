"""The executors at work: scheduling overhead, the mini's grids local vs Ray, the paper's plan.

    python bench/cluster_bench.py                       # all three parts
    python bench/cluster_bench.py --parts=overhead --tasks=1000 --workers=2

1. overhead: a plan of --tasks no-op tasks (each writes its record and nothing else; one conclude task per 50
needs them, like a run's conclusion) runs on the local executor and on a Ray started here with
--workers CPUs. Each task goes the full way a trial goes: finished check, lock with heartbeat
thread, the call, the record check, and for Ray the submission, a worker and the result. Reported:
wall time per task, and the worker-seconds per task (wall x parallel workers / tasks), i.e. the
share of a worker a task occupies without computing anything. Goal: under 1% of a 60-second trial
(0.6 s). Ray's start-up (about 10 s) is reported apart: it is paid once per study, not per task.
2. grids: the mini-reproduction's fine-tune and scratch grids (flags/mini.flags: 3 EfficientNet-
Lite networks on the Fashion-MNIST subset, 2 trials + 1 retrain per run) run by `tfbench.sweep`
with the local executor (one task at a time) and with Ray on this machine (one task per core at
once; TensorFlow's thread pools are left at their default in both, since their size changes a CPU
result), into separate folders; wall time of each and whether they choose the same
hyperparameters and reach the same test scores.
3. dry_run: `tfbench.sweep --dry_run` of the paper's full study (flags/paper.flags: 12 datasets x
3 regimes; its 15 registered networks plus resnet50_v2 standing in for Inception v4, which the
registry lacks: the plan's size does not depend on which network) at --images_per_second per GPU.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tfbench import files, plan  # noqa: E402
from tfbench.tasks import executors

TRIAL_SECONDS = 60.0
RUN_SIZE = 50


def noop(record: str) -> None:
    files.write_json_atomic(record, {"status": "ok"})


def noop_plan(folder: str, count: int) -> plan.Plan:
    tasks, needs = [], []
    for index in range(count):
        key = f"task{index:05d}"
        record = os.path.join(folder, key + ".json")
        conclude = len(needs) == RUN_SIZE
        tasks.append(plan.Task(key=key, kind="conclude" if conclude else "trial", record=record,
                               needs=tuple(needs) if conclude else (),
                               call=plan.Call("cluster_bench:noop", {"record": record})))
        needs = [] if conclude else needs + [key]
    return plan.Plan(tasks)


def measure(name: str, executor, count: int, workers: int) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"cluster-bench-{name}-") as folder:
        study = noop_plan(folder, count)
        started = time.perf_counter()
        summary = executors.execute(study, study.tasks, executor, log=lambda line: None)
        wall = time.perf_counter() - started
    assert summary.count("ran") == count, summary.line()
    return {"executor": name, "tasks": count, "wall_s": wall, "per_task_ms": 1000 * wall / count,
            "worker_s_per_task": wall * workers / count,
            "share_of_60s_trial": wall * workers / count / TRIAL_SECONDS}


def overhead(args) -> None:
    bench_dir = os.path.dirname(os.path.abspath(__file__))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [bench_dir, ROOT, os.environ.get("PYTHONPATH")]))
    sys.modules.setdefault("cluster_bench", sys.modules[__name__])  # the tasks name this module

    rows = [measure("local", executors.LocalExecutor(), args.tasks, workers=1)]
    import ray

    started = time.perf_counter()
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    startup = time.perf_counter() - started
    with executors.RayExecutor(cpus_per_task=1) as executor:
        rows.append(measure("ray", executor, args.tasks, workers=args.workers))
    ray.shutdown()

    print(f"{'executor':8} {'tasks':>6} {'wall s':>8} {'ms/task':>8} {'worker-s/task':>14} {'of a 60 s trial':>16}")
    for row in rows:
        print(f"{row['executor']:8} {row['tasks']:>6} {row['wall_s']:>8.2f} {row['per_task_ms']:>8.2f} "
              f"{row['worker_s_per_task']:>14.4f} {100 * row['share_of_60s_trial']:>15.3f}%")
    print(f"ray start-up (once per study): {startup:.1f} s; goal: under 1% of a {TRIAL_SECONDS:.0f}-second trial")


def sweep(*args: str) -> str:
    completed = subprocess.run([sys.executable, "-m", "tfbench.sweep", *args], cwd=ROOT,
                               capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit(f"tfbench.sweep {' '.join(args)} failed:\n{completed.stderr[-3000:]}")
    return completed.stdout


def grids(args) -> None:
    from tfbench import results

    folder = tempfile.mkdtemp(prefix="cluster-bench-grids-")
    common = ["--flagfile=flags/mini.flags", "--regimes=finetune,scratch", "--report=false"]
    if args.models:
        common.append(f"--models={args.models}")
    rows = {}
    for name, extra in [("local", []), ("ray", ["--executor=ray", "--cpus_per_trial=1"])]:
        started = time.perf_counter()
        sweep(*common, f"--output_dir={folder}/{name}", *extra)
        rows[name] = time.perf_counter() - started
        answers = {(r["experiment"]["regime"], r["experiment"]["model"]): (r["hyperparameters"], r["test_score"])
                   for r in results.collect(f"{folder}/{name}")}
        rows[name + "_answers"] = answers
    same = rows["local_answers"] == rows["ray_answers"]
    print(f"mini fine-tune + scratch grids ({len(rows['local_answers'])} runs) on {os.cpu_count()} cores:")
    print(f"  local (one task at a time): {rows['local']:.0f} s")
    print(f"  ray ({os.cpu_count()} workers, one task each): {rows['ray']:.0f} s  (Ray start-up included)")
    print(f"  ray / local: {rows['ray'] / rows['local']:.2f}; same choices and test scores: {same}")
    print(f"  records: {folder}")


def dry_run(args) -> None:
    with open(os.path.join(ROOT, "flags", "paper.flags")) as handle:
        models = next(line for line in handle if line.startswith("--models=")).strip()
    output = sweep("--flagfile=flags/paper.flags", f"{models},resnet50_v2", "--dry_run",
                   f"--images_per_second={args.images_per_second}", f"--dry_run_gpus={args.gpus}",
                   f"--output_dir={tempfile.mkdtemp(prefix='cluster-bench-paper-')}")
    print("the paper's study (16 networks x 12 datasets x 3 regimes):")
    print("\n".join("  " + line for line in output.strip().splitlines()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="overhead,grids,dry_run")
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2, help="CPUs of the local Ray (one task each)")
    parser.add_argument("--images_per_second", type=float, default=500.0,
                        help="training throughput per GPU assumed by the dry run")
    parser.add_argument("--gpus", type=int, default=64, help="GPUs the dry run's wall time assumes")
    parser.add_argument("--models", default=None,
                        help="grids: only these of the mini's networks (comma-separated); default all three")
    args = parser.parse_args()
    os.chdir(ROOT)
    for part in args.parts.split(","):
        {"overhead": overhead, "grids": grids, "dry_run": dry_run}[part](args)


if __name__ == "__main__":
    main()

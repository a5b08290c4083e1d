"""The executors at work: scheduling overhead, the mini's grids local vs Ray, the paper's plan,
how fast a stale lock is taken over, and fencing under induced pauses.

    python bench/cluster_bench.py                       # every part
    python bench/cluster_bench.py --parts=overhead --tasks=1000 --workers=2
    python bench/cluster_bench.py --parts=takeover,fencing --pauses=100

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
4. takeover: on a Ray started here with 2 CPUs, one slot runs a long task (until the other task is
done, at most a minute) while the other task's lock names a remote owner that beats until the
driver finds the task busy, then goes silent. Reported: from the moment its lock goes stale
(last heartbeat + --stale_after) to the task starting again, over --takeovers repetitions. Goal:
one heartbeat interval (--heartbeat), not the long task's end.
5. fencing: two drivers run the same plan of stepped tasks (each step a fenced atomic write) on one
folder with --heartbeat/--stale_after, while one of them at a time is SIGSTOPped for longer than
the stale timeout and resumed, --pauses times in all. Reported: tasks run, owners that found their
lock lost, and overlaps: a write that landed (its file's ctime) after the next owner had begun
taking the lock (its `acquired` time, which precedes the takeover itself: a conservative count;
goal 0), and tasks finished twice (goal 0).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tfbench import fencing, files  # noqa: E402
from tfbench.tasks import executors, locks, plan  # noqa: E402

TRIAL_SECONDS = 60.0
RUN_SIZE = 50


def noop(record: str) -> None:
    files.write_json_atomic(record, {"status": "ok"})


def stamp(record: str) -> None:
    """Record when the task started (the takeover's measure)."""
    files.write_json_atomic(record, {"status": "ok", "started": time.time()})


def run_until(record: str, until: str, timeout: float) -> None:
    deadline = time.time() + timeout
    while not os.path.exists(until) and time.time() < deadline:
        time.sleep(0.05)
    files.write_json_atomic(record, {"status": "ok", "ended": time.time()})


def steps(record: str, log: str, count: int, seconds: float) -> None:
    """A trial in miniature: steps that end at a step boundary and save progress (fenced writes).
    Each write, once landed, looks at the lock. Held by another process that began taking it
    before the rename landed (the file's ctime, while the file is still ours): an overlap. Taken
    over while the write was under way but the file already overwritten by the taker, so that
    when ours landed is unknown: "unknown". Taken over after: fine."""

    def write(path, payload, event):
        nonce, before = uuid.uuid4().hex, time.time()
        files.write_json_atomic(path, {**payload, "nonce": nonce})
        after = time.time()
        with open(path) as handle:
            landed = os.fstat(handle.fileno()).st_ctime if json.load(handle).get("nonce") == nonce else None
        owner = locks.read_owner(locks.lock_path(record)) or {"pid": os.getpid()}
        if owner["pid"] != os.getpid() and owner["acquired"] < after:
            if landed is not None:
                event = "overlap" if owner["acquired"] <= landed else event
            else:
                event = "overlap" if owner["acquired"] < before else "unknown"
        with open(log, "a") as handle:
            handle.write(f"{event} {os.path.basename(record)}\n")

    for step in range(count):
        time.sleep(seconds)
        fencing.check()
        write(record + ".progress", {"step": step}, "write")
    write(record, {"status": "ok", "pid": os.getpid()}, "end")


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
    _bench_path()

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


def _bench_path() -> None:
    """Workers and drivers import this module as `cluster_bench` (the tasks name it)."""
    bench_dir = os.path.dirname(os.path.abspath(__file__))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [bench_dir, ROOT, os.environ.get("PYTHONPATH")]))
    sys.modules.setdefault("cluster_bench", sys.modules[__name__])


def takeover(args) -> None:
    import ray

    _bench_path()
    timing = locks.Timing(args.heartbeat, args.stale_after)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    delays, before_long_end, rng = [], 0, random.Random(0)
    try:
        for _ in range(args.takeovers):
            with tempfile.TemporaryDirectory(prefix="cluster-bench-takeover-") as folder:
                orphan_record, long_record = os.path.join(folder, "orphan.json"), os.path.join(folder, "long.json")
                study = plan.Plan([
                    plan.Task(key="long", kind="trial", record=long_record,
                              call=plan.Call("cluster_bench:run_until",
                                             {"record": long_record, "until": orphan_record, "timeout": 60.0})),
                    plan.Task(key="orphan", kind="trial", record=orphan_record,
                              call=plan.Call("cluster_bench:stamp", {"record": orphan_record}))])
                lock, lines, beats = locks.lock_path(orphan_record), [], [time.time()]
                files.write_json_atomic(lock, {"host": "elsewhere", "pid": 1, "token": "gone", "heartbeat": beats[-1]})

                silent_after = [float("inf")]

                def remote_owner():  # beats until the driver found the task busy, and then for a random
                    # part of a heartbeat, so that the lock goes stale at any phase of the driver's looks
                    while time.time() < silent_after[0]:
                        if silent_after[0] == float("inf") and any(line.startswith("busy: trial orphan")
                                                                   for line in lines):
                            silent_after[0] = time.time() + rng.uniform(0, args.heartbeat)
                        beats.append(time.time())
                        files.write_json_atomic(lock, {"host": "elsewhere", "pid": 1, "token": "gone",
                                                       "heartbeat": beats[-1]})
                        time.sleep(0.1)

                owner = threading.Thread(target=remote_owner)
                owner.start()
                with executors.RayExecutor(timing=timing) as executor:
                    summary = executors.execute(study, study.tasks, executor, log=lines.append)
                owner.join()
                assert summary.complete(), summary.line()
                started = plan.read_record(orphan_record)["started"]
                delays.append(started - (beats[-1] + timing.stale_after))
                before_long_end += started < plan.read_record(long_record)["ended"]
    finally:
        ray.shutdown()
    delays.sort()
    print(f"takeover on Ray (2 slots, one busy with a long task), heartbeat {args.heartbeat:g}s, "
          f"stale after {args.stale_after:g}s, {len(delays)} times:")
    print(f"  lock stale -> task running again: median {delays[len(delays) // 2]:.2f}s, "
          f"max {delays[-1]:.2f}s (goal: {args.heartbeat:g}s); before the long task ended: "
          f"{before_long_end}/{len(delays)}")


FENCED_DRIVER = """
import sys
import cluster_bench
from tfbench.tasks import executors, locks, plan
folder, log, count, heartbeat, stale_after = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
tasks = []
for index in range(count):
    record = f"{folder}/task{index:03d}.json"
    tasks.append(plan.Task(key=f"task{index:03d}", kind="trial", record=record,
                           call=plan.Call("cluster_bench:steps", {"record": record, "log": log, "count": 10,
                                                                  "seconds": 0.1})))
study = plan.Plan(tasks)
with executors.LocalExecutor(locks.Timing(heartbeat, stale_after)) as executor:
    summary = executors.execute(study, study.tasks, executor, log=print)
sys.exit(0 if summary.complete() else 1)
"""


def _overlaps(log: str):
    """Writes that landed while another process held (or was taking) the task's lock, writes that
    cannot be placed, and tasks finished twice."""
    with open(log) as handle:
        events = [line.split() for line in handle]
    ends = collections.Counter(task for event, task in events if event == "end")
    return (sum(event == "overlap" for event, _ in events), sum(event == "unknown" for event, _ in events),
            sum(count > 1 for count in ends.values()))


def fencing_under_pauses(args) -> None:
    _bench_path()
    pauses = ran = lost = overlaps = unknown = twice = rounds = 0
    rng = random.Random(0)
    while pauses < args.pauses:
        rounds += 1
        with tempfile.TemporaryDirectory(prefix="cluster-bench-fencing-") as folder:
            log = os.path.join(folder, "log")
            drivers = [subprocess.Popen([sys.executable, "-c", FENCED_DRIVER, folder, log, str(args.fencing_tasks),
                                         str(args.heartbeat_fencing), str(args.stale_after_fencing)],
                                        stdout=subprocess.PIPE, text=True) for _ in range(2)]
            outputs = ["", ""]

            def drain(index):
                outputs[index] = drivers[index].communicate()[0]

            readers = [threading.Thread(target=drain, args=(index,)) for index in range(2)]
            for reader in readers:
                reader.start()
            while pauses < args.pauses and all(driver.poll() is None for driver in drivers):
                victim = drivers[pauses % 2]
                time.sleep(rng.uniform(0.1, 0.5))
                if victim.poll() is not None:
                    break
                victim.send_signal(signal.SIGSTOP)
                time.sleep(args.stale_after_fencing + 0.3)
                victim.send_signal(signal.SIGCONT)
                pauses += 1
            for reader in readers:
                reader.join()
            assert all(driver.returncode == 0 for driver in drivers), outputs
            found = _overlaps(log)
            overlaps, unknown, twice = overlaps + found[0], unknown + found[1], twice + found[2]
            lines = [line for output in outputs for line in output.splitlines()]
            lost += sum(line.startswith("lost: ") for line in lines)
            ran += sum("] ran " in line for line in lines)
    print(f"fencing: {pauses} pauses of {args.stale_after_fencing + 0.3:.1f}s (stale after "
          f"{args.stale_after_fencing:g}s, heartbeat {args.heartbeat_fencing:g}s), two drivers, {rounds} rounds "
          f"of {args.fencing_tasks} tasks:")
    print(f"  tasks run: {ran}; owners that found their lock lost and stopped: {lost}")
    print(f"  writes that landed after the next owner began taking the lock: {overlaps}; tasks finished "
          f"twice: {twice} (goal: 0 and 0)")
    print(f"  writes taken over while under way and overwritten before they could be placed: {unknown}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="overhead,grids,dry_run,takeover,fencing")
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2, help="CPUs of the local Ray (one task each)")
    parser.add_argument("--images_per_second", type=float, default=500.0,
                        help="training throughput per GPU assumed by the dry run")
    parser.add_argument("--gpus", type=int, default=64, help="GPUs the dry run's wall time assumes")
    parser.add_argument("--models", default=None,
                        help="grids: only these of the mini's networks (comma-separated); default all three")
    parser.add_argument("--heartbeat", type=float, default=1.0, help="takeover: lock heartbeat (s)")
    parser.add_argument("--stale_after", type=float, default=3.0, help="takeover: stale-lock timeout (s)")
    parser.add_argument("--takeovers", type=int, default=10, help="takeover: repetitions")
    parser.add_argument("--pauses", type=int, default=100, help="fencing: SIGSTOP/SIGCONT pauses in all")
    parser.add_argument("--fencing_tasks", type=int, default=12, help="fencing: tasks of one round's plan")
    parser.add_argument("--heartbeat_fencing", type=float, default=0.2, help="fencing: lock heartbeat (s)")
    parser.add_argument("--stale_after_fencing", type=float, default=1.0, help="fencing: stale-lock timeout (s)")
    args = parser.parse_args()
    os.chdir(ROOT)
    parts = {"overhead": overhead, "grids": grids, "dry_run": dry_run, "takeover": takeover,
             "fencing": fencing_under_pauses}
    for part in args.parts.split(","):
        parts[part](args)


if __name__ == "__main__":
    main()

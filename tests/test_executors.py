"""Executors on fake tasks: local and Ray agree, a killed Ray worker is retried, a stale lock is
taken over while other work runs, GPU tasks get fresh workers, shards and two drivers on one
folder run every task exactly once, and a paused owner that lost its lock writes nothing."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import cluster_fakes
import pytest
from tfbench import files
from tfbench.tasks import executors, locks, plan

TESTS = os.path.dirname(os.path.abspath(__file__))


def _run(study, executor, tasks=None, wait_for_needs=0.0, poll_seconds=0.1):
    lines = []
    with executor:
        summary = executors.execute(study, study.tasks if tasks is None else tasks, executor,
                                    log=lines.append, poll_seconds=poll_seconds, wait_for_needs=wait_for_needs)
    return summary, lines


def _records(folder):
    out = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".json"):
            with open(os.path.join(folder, name)) as handle:
                out[name] = json.load(handle)
    return out


def test_local_runs_in_dependency_order_and_a_second_run_skips_everything(tmp_path):
    log = os.path.join(tmp_path, "log")
    study = cluster_fakes.study(tmp_path, log=log, runs=2, trials=2)
    summary, lines = _run(study, executors.LocalExecutor())
    assert summary.complete() and summary.count("ran") == 6
    with open(log) as handle:
        order = [line.split()[1] for line in handle if line.startswith("end")]
    assert order == [task.key for task in study.tasks]
    assert lines[0].startswith("[1/6] ran trial run0-trial0 in ") and f"on {os.uname().nodename}:{os.getpid()}" in lines[0]
    again, _ = _run(study, executors.LocalExecutor())
    assert again.count("skipped") == 6 and again.complete()


@pytest.mark.slow
def test_ray_gives_the_same_records_as_local_from_worker_processes(tmp_path, ray_cluster):
    local_dir, ray_dir = os.path.join(tmp_path, "local"), os.path.join(tmp_path, "ray")
    for folder, executor in [(local_dir, executors.LocalExecutor()), (ray_dir, executors.RayExecutor())]:
        os.makedirs(folder)
        study = plan.Plan(cluster_fakes.task(folder, t.key, needs=t.needs, kind=t.kind, value=t.key)
                          for t in cluster_fakes.study(folder, runs=2, trials=3).tasks)
        summary, _ = _run(study, executor)
        assert summary.complete() and summary.count("ran") == 8
    assert _records(ray_dir) == _records(local_dir) and len(_records(ray_dir)) == 8
    assert {o.pid for o in summary.outcomes.values()} - {os.getpid()} == {o.pid for o in summary.outcomes.values()}
    assert ray_cluster.is_initialized()  # the executor did not shut down a Ray it did not start


@pytest.mark.slow
def test_a_ray_worker_killed_mid_task_is_retried_and_the_record_written_once(tmp_path, ray_cluster):
    log, pid_file = os.path.join(tmp_path, "log"), os.path.join(tmp_path, "pid")
    victim = cluster_fakes.task(tmp_path, "victim", log=log, seconds=2.0, pid_file=pid_file)
    study = plan.Plan([victim, cluster_fakes.task(tmp_path, "conclude", needs=["victim"], log=log)])
    killed = []

    def kill_the_worker():
        deadline = time.time() + 60
        while not os.path.exists(pid_file) and time.time() < deadline:
            time.sleep(0.05)
        with open(pid_file) as handle:
            killed.append(int(handle.read()))
        os.unlink(pid_file)
        os.kill(killed[0], signal.SIGKILL)

    killer = threading.Thread(target=kill_the_worker)
    killer.start()
    summary, _ = _run(study, executors.RayExecutor(max_retries=2))
    killer.join()
    assert summary.complete(), summary.outcomes
    assert cluster_fakes.events(log, "start") == {"victim": 2, "conclude": 1}
    assert cluster_fakes.events(log, "end") == {"victim": 1, "conclude": 1}
    assert summary.outcomes["victim"].pid != killed[0]
    # no lock and no temporary file left (the retry announced its pid again)
    assert sorted(os.listdir(tmp_path)) == ["conclude.json", "log", "pid", "victim.json"]


@pytest.mark.slow
def test_ray_does_not_retry_a_task_that_raised(tmp_path, ray_cluster):
    log = os.path.join(tmp_path, "log")
    study = plan.Plan([cluster_fakes.task(tmp_path, "bad", log=log, function="raise_error")])
    summary, _ = _run(study, executors.RayExecutor(max_retries=3))
    assert (summary.outcomes["bad"].status, summary.outcomes["bad"].reason) == ("failed", "ValueError: the data is bad")
    assert cluster_fakes.events(log, "start") == {"bad": 1}


@pytest.mark.slow
def test_a_stale_lock_is_taken_over_within_a_heartbeat_while_a_long_task_runs(tmp_path, ray_cluster):
    """Two slots: a long task runs in one (until the other task is done, or 30 s); the other task's
    lock names a remote owner that stops beating. It must run again once the lock is stale, not
    once the long task ends."""
    log, timing = os.path.join(tmp_path, "log"), locks.Timing(heartbeat_seconds=0.5, stale_after=2.0)
    orphan = cluster_fakes.task(tmp_path, "orphan", log=log)
    study = plan.Plan([cluster_fakes.task(tmp_path, "long", log=log, function="run_until", until=orphan.record),
                       orphan])
    lock, lines, beats = locks.lock_path(study["orphan"].record), [], []

    def remote_owner():  # beats until the driver has found the task busy, then goes silent
        while not any(line.startswith("busy: trial orphan") for line in lines):
            beats.append(time.time())
            files.write_json_atomic(lock, {"host": "elsewhere", "pid": 1, "token": "gone", "heartbeat": beats[-1]})
            time.sleep(0.1)

    files.write_json_atomic(lock, {"host": "elsewhere", "pid": 1, "token": "gone", "heartbeat": time.time()})
    owner = threading.Thread(target=remote_owner)
    owner.start()
    with executors.RayExecutor(timing=timing) as executor:
        summary = executors.execute(study, study.tasks, executor, log=lines.append)
    owner.join()
    assert summary.complete() and summary.outcomes["orphan"].status == "ran"
    assert sum(line.startswith("busy: trial orphan") for line in lines) == 1  # said once, not every poll
    started = {name: when for name, _, when in cluster_fakes.lines(log, "start")}
    ended = {name: when for name, _, when in cluster_fakes.lines(log, "end")}
    stale_at = beats[-1] + timing.stale_after
    # within a heartbeat of going stale, plus Ray's dispatch (up to a second on a loaded 2-core machine)
    assert 0 < started["orphan"] - stale_at < timing.heartbeat_seconds + 1.0
    assert started["orphan"] < ended["long"]


@pytest.mark.slow
def test_each_gpu_task_gets_a_fresh_ray_worker(tmp_path, ray_cluster):
    """Ray keeps reusing a worker for tasks given num_gpus through .options(); a GPU task must not
    inherit the memory and devices of the trials before it."""
    study = plan.Plan(cluster_fakes.task(tmp_path, f"gpu{index}") for index in range(3))
    summary, _ = _run(study, executors.RayExecutor(cpus_per_task=0.5, gpus_per_task=1))
    assert summary.count("ran") == 3
    assert len({outcome.pid for outcome in summary.outcomes.values()}) == 3


def test_waiting_for_needs_counts_from_when_there_is_nothing_else_to_run(tmp_path):
    """A shard busy for longer than --wait_for_needs with its own trial still waits that long for
    another shard's trial once it is idle, so the conclusion runs in this pass."""
    study = cluster_fakes.study(tmp_path, runs=1, trials=2)
    own = cluster_fakes.task(tmp_path, "run0-trial0", seconds=2.0)
    study = plan.Plan([own] + study.tasks[1:])
    other_shard = threading.Timer(2.8, cluster_fakes.write_record, [study["run0-trial1"].record])
    other_shard.start()
    summary, _ = _run(study, executors.LocalExecutor(), [own, study["run0-conclude"]], wait_for_needs=1.5)
    other_shard.join()
    assert summary.complete() and summary.outcomes["run0-conclude"].status == "ran"


def test_three_shards_cover_the_plan_once_and_a_fourth_run_finds_nothing_left(tmp_path):
    log = os.path.join(tmp_path, "log")
    study = cluster_fakes.study(tmp_path, log=log, runs=3, trials=4)
    first_pass = [_run(study, executors.LocalExecutor(), study.shard(index, 3))[0] for index in range(3)]
    ran = [key for summary in first_pass for key, o in summary.outcomes.items() if o.status == "ran"]
    waiting = [key for summary in first_pass for key in summary.waiting]
    assert sorted(ran + waiting) == sorted(t.key for t in study.tasks)  # disjoint and covering
    assert waiting and all(key.endswith("conclude") for key in waiting)  # their trials were in later shards
    second_pass = [_run(study, executors.LocalExecutor(), study.shard(index, 3))[0] for index in range(3)]
    assert all(summary.complete() for summary in second_pass)
    fourth, _ = _run(study, executors.LocalExecutor())
    assert fourth.count("skipped") == len(study) and fourth.count("ran") == 0
    assert set(cluster_fakes.events(log, "end").values()) == {1}
    assert len(cluster_fakes.events(log, "end")) == len(study)


def test_shards_run_at_once_wait_for_each_others_trials_and_finish_in_one_pass(tmp_path):
    log = os.path.join(tmp_path, "log")
    study = cluster_fakes.study(tmp_path, log=log, runs=3, trials=4, seconds=0.05)
    summaries = {}

    def shard(index):
        with executors.LocalExecutor() as executor:
            summaries[index] = executors.execute(study, study.shard(index, 3), executor, log=lambda line: None,
                                                 poll_seconds=0.05, wait_for_needs=30)

    threads = [threading.Thread(target=shard, args=(index,)) for index in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(summary.complete() for summary in summaries.values())
    assert cluster_fakes.events(log, "end") == {task.key: 1 for task in study.tasks}


def test_waiting_for_needs_gives_up_on_a_failed_need_at_once(tmp_path):
    study = cluster_fakes.study(tmp_path, runs=1, trials=2)
    cluster_fakes.write_record(study["run0-trial0"].record)
    cluster_fakes.write_record(study["run0-trial1"].record, status="failed")
    started = time.monotonic()
    summary, _ = _run(study, executors.LocalExecutor(), [study["run0-conclude"]], wait_for_needs=60)
    assert summary.waiting == {"run0-conclude": ["run0-trial1"]} and time.monotonic() - started < 5


DRIVER = """
import sys
import cluster_fakes
from tfbench.tasks import executors
study = cluster_fakes.study(sys.argv[1], log=sys.argv[2], runs=3, trials=4, seconds=0.1)
with executors.LocalExecutor() as executor:
    summary = executors.execute(study, study.tasks, executor, log=print, poll_seconds=0.2)
print(summary.line())
sys.exit(0 if summary.complete() else 1)
"""


FENCED_DRIVER = """
import sys
import cluster_fakes
from tfbench.tasks import executors, locks, plan
folder, log = sys.argv[1:3]
study = plan.Plan([cluster_fakes.task(folder, "T", log=log, function="train_in_steps", step_count=20,
                                      step_seconds=0.1)])
with executors.LocalExecutor(locks.Timing(heartbeat_seconds=0.3, stale_after=1.5)) as executor:
    summary = executors.execute(study, study.tasks, executor, log=print)
sys.exit(0 if summary.complete() else 1)
"""


@pytest.mark.slow
def test_an_owner_paused_past_the_timeout_and_taken_over_stops_and_writes_nothing(tmp_path):
    log = os.path.join(tmp_path, "log")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([TESTS, os.getcwd()])}

    def driver():
        return subprocess.Popen([sys.executable, "-c", FENCED_DRIVER, str(tmp_path), log], env=env,
                                stdout=subprocess.PIPE, text=True)

    def wait_for(event, count):
        deadline = time.time() + 60
        while len(cluster_fakes.lines(log, event)) < count and time.time() < deadline:
            time.sleep(0.02)

    first = driver()
    wait_for("write", 2)
    first.send_signal(signal.SIGSTOP)
    time.sleep(2.0)  # past the stale timeout: the next driver takes the lock over
    second = driver()
    wait_for("write", 4)
    first.send_signal(signal.SIGCONT)
    outputs = [process.communicate(timeout=60)[0] for process in (first, second)]
    assert [process.returncode for process in (first, second)] == [0, 0], outputs
    writers = [pid for _, pid, _ in cluster_fakes.lines(log, "write")]
    assert [pid for _, pid, _ in cluster_fakes.lines(log, "start")] == [first.pid, second.pid]
    assert first.pid not in writers[writers.index(second.pid):]  # no write by the old owner after the new one's
    assert cluster_fakes.lines(log, "end")[0][:2] == ("T", second.pid) and len(cluster_fakes.lines(log, "end")) == 1
    assert "lost: trial T" in outputs[0] and "skipped trial T" in outputs[0] and "ran trial T" in outputs[1]
    assert plan.read_record(os.path.join(tmp_path, "T.json"))["pid"] == second.pid


@pytest.mark.slow
def test_two_drivers_on_one_folder_run_every_task_once(tmp_path):
    log = os.path.join(tmp_path, "log")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([TESTS, os.getcwd()])}
    drivers = [subprocess.Popen([sys.executable, "-c", DRIVER, str(tmp_path), log], env=env,
                                stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [driver.communicate(timeout=60)[0] for driver in drivers]
    assert [driver.returncode for driver in drivers] == [0, 0], outputs
    study = cluster_fakes.study(tmp_path, runs=3, trials=4)
    assert cluster_fakes.events(log, "start") == {task.key: 1 for task in study.tasks}
    ran = [int(output.strip().splitlines()[-1].split(": ")[1].split()[0]) for output in outputs]
    assert sum(ran) == len(study) and min(ran) > 0, outputs  # both did some of the work


@pytest.mark.slow
def test_a_killed_driver_run_again_skips_finished_tasks_and_takes_over_the_interrupted_ones_lock(tmp_path):
    log = os.path.join(tmp_path, "log")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([TESTS, os.getcwd()])}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER.replace("seconds=0.1", "seconds=1.0"), str(tmp_path), log],
                              env=env, stdout=subprocess.DEVNULL)
    deadline = time.time() + 60
    def started_the_third():  # two tasks ended and the next one began: kill it mid-task
        ended = cluster_fakes.events(log, "end")
        return sum(ended.values()) >= 2 and set(cluster_fakes.events(log, "start")) - set(ended)

    while not started_the_third() and time.time() < deadline:
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    (interrupted,) = set(cluster_fakes.events(log, "start")) - set(cluster_fakes.events(log, "end"))
    assert os.path.exists(os.path.join(tmp_path, interrupted + ".json.lock"))  # left by the dead driver

    study = cluster_fakes.study(tmp_path, log=log, runs=3, trials=4)
    summary, _ = _run(study, executors.LocalExecutor())
    assert summary.complete() and summary.outcomes[interrupted].status == "ran"
    assert summary.count("skipped") == 2 and summary.count("ran") == len(study) - 2
    assert cluster_fakes.events(log, "end") == {task.key: 1 for task in study.tasks}


def test_a_stopped_task_in_a_worker_is_interrupted_not_failed_and_its_lock_is_released(tmp_path):
    """What a Ray worker runs: a task that stops at a stop request (SIGTERM, or a lost lock)
    reports "interrupted", leaves no record, frees its lock, and the worker may take the next task."""
    from tfbench import interruption
    from tfbench.tasks import locks

    def stopping():
        interruption.request_stop("lock lost")
        interruption.check("at step 7 of trial t")

    record = str(tmp_path / "t.json")
    outcome = executors.run_task_stoppably(plan.Task(key="t", kind="trial", call=stopping, record=record))
    assert outcome.status == "interrupted"
    assert outcome.reason == "interrupted at step 7 of trial t; the same command resumes from there"
    assert not os.path.exists(record) and not os.path.exists(locks.lock_path(record))
    assert interruption.requested() is None  # cleared for the next task

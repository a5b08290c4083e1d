"""Fake tasks for the plan, lock and executor tests: plain functions that record each start and end
in a log, may sleep or fail, and write a record the way a trial does. Imported by name
("cluster_fakes:...") in this process and in Ray workers (tests/ is on their PYTHONPATH)."""

import collections
import os
import time

from tfbench import fencing, files
from tfbench.tasks import plan


def _log(log, event, record):
    if log:
        with open(log, "a") as handle:  # one short O_APPEND write per event: safe across processes
            handle.write(f"{event} {os.path.basename(record)[:-5]} {os.getpid()} {time.time():.3f}\n")


def write_record(record, log=None, seconds=0.0, pid_file=None, status="ok", images_per_second=None,
                 value=None):
    """Start, optionally announce the pid and sleep, then write a record with `status`."""
    _log(log, "start", record)
    if pid_file:
        files.write_bytes_atomic(pid_file, str(os.getpid()).encode())
    time.sleep(seconds)
    timings = {"images_per_second": images_per_second} if images_per_second else {}
    files.write_json_atomic(record, {"status": status, "timings": timings, "value": value})
    _log(log, "end", record)


def train_in_steps(record, log=None, step_count=10, step_seconds=0.1):
    """Like a trial: steps that each end at a step boundary (fencing.check()) and save progress
    with a fenced atomic write ("write" in the log, after the write), then the record."""
    _log(log, "start", record)
    for step in range(step_count):
        time.sleep(step_seconds)
        fencing.check()
        files.write_json_atomic(record + ".progress", {"step": step, "pid": os.getpid()})
        _log(log, "write", record)
    files.write_json_atomic(record, {"status": "ok", "pid": os.getpid()})
    _log(log, "end", record)


def run_until(record, log=None, until="", timeout=30.0):
    """A long task: runs until the file `until` exists (or `timeout` seconds), then writes its record."""
    _log(log, "start", record)
    deadline = time.time() + timeout
    while not os.path.exists(until) and time.time() < deadline:
        time.sleep(0.05)
    files.write_json_atomic(record, {"status": "ok"})
    _log(log, "end", record)


def raise_error(record, log=None):
    _log(log, "start", record)
    raise ValueError("the data is bad")


def task(folder, name, needs=(), log=None, seconds=0.0, kind="trial", run="run0", steps=0, images=0,
         function="write_record", **arguments):
    record = os.path.join(folder, name + ".json")
    return plan.Task(key=name, kind=kind, record=record, needs=tuple(needs), run=run, steps=steps,
                     images=images, call=plan.Call(f"cluster_fakes:{function}",
                                                   {"record": record, "log": log, **(
                                                       {"seconds": seconds} if function == "write_record" else {}),
                                                    **arguments}))


def study(folder, log=None, runs=3, trials=4, seconds=0.0):
    """A plan shaped like a fine-tune study: per run, `trials` trials then a conclude task."""
    tasks = []
    for r in range(runs):
        keys = [f"run{r}-trial{t}" for t in range(trials)]
        tasks += [task(folder, key, log=log, seconds=seconds, run=f"run{r}", steps=10, images=320)
                  for key in keys]
        tasks.append(task(folder, f"run{r}-conclude", needs=keys, log=log, seconds=seconds, kind="conclude",
                          run=f"run{r}", steps=10, images=320))
    return plan.Plan(tasks)


def lines(log, event):
    """(task, pid, time) of each `event` ("start", "write" or "end") in the log, in order."""
    if not os.path.exists(log):
        return []
    with open(log) as handle:
        fields = [line.split() for line in handle]
    return [(name, int(pid), float(when)) for kind, name, pid, when in fields if kind == event]


def events(log, event):
    """How many times each task logged `event`."""
    return collections.Counter(name for name, _, _ in lines(log, event))

"""Fake tasks for the plan, lock and executor tests: plain functions that record each start and end
in a log, may sleep or fail, and write a record the way a trial does. Imported by name
("cluster_fakes:...") in this process and in Ray workers (tests/ is on their PYTHONPATH)."""

import collections
import os
import time

from tfbench import files
from tfbench.tasks import plan


def _log(log, event, record):
    if log:
        with open(log, "a") as handle:  # one short O_APPEND write per event: safe across processes
            handle.write(f"{event} {os.path.basename(record)[:-5]} {os.getpid()}\n")


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


def events(log, event):
    """How many times each task logged `event` ("start" or "end")."""
    if not os.path.exists(log):
        return collections.Counter()
    with open(log) as handle:
        return collections.Counter(line.split()[1] for line in handle if line.split()[0] == event)

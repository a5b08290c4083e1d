"""Executors: where the tasks of a plan run. They decide where, never what.

    local   every task in this process, one after another in dependency order (imports nothing new)
    ray     plain Ray tasks with resource requests (num_cpus, num_gpus): on this machine, or on a
            running cluster (`ray_address`), many at once

Every task runs through `run_task` wherever it runs: skip it if its record is finished, take its lock
(tfbench.tasks.locks) so that no other driver runs it at the same time, check again, call it. A task that
raises, or ends without a finished record, is reported failed and is not retried in this
invocation (its own record says why when it wrote one); a Ray worker that dies (machine lost,
SIGKILL, out of memory) is retried by Ray up to `max_retries` times, and the retry resumes from the
task's checkpoints. A task whose needs are not all finished (one failed, or another shard runs it)
is left for a rerun and named, or waited for (`wait_for_needs`); a task that another driver is
running is waited for.
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
import os
import socket
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from tfbench import interruption
from tfbench.tasks import locks
from tfbench.tasks.plan import Plan, Task, finished, read_record

EXECUTORS = ("local", "ray")
OUTCOMES = ("ran", "skipped", "failed")  # final; "busy" is looked at again


class ExecutorError(RuntimeError):
    """An executor that cannot start (Ray missing, cluster unreachable); the message says why."""


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What happened to one task: ran, skipped (finished earlier), failed, or busy (another driver
    holds its lock: not final); where, and how long it took."""

    key: str
    status: str
    seconds: float = 0.0
    reason: Optional[str] = None
    host: str = ""
    pid: int = 0


def run_task(task: Task, stale_after: float = locks.STALE_AFTER_SECONDS,
             heartbeat_seconds: float = locks.HEARTBEAT_SECONDS) -> Outcome:
    """Run one task under its lock unless it is finished; what every executor's worker calls."""
    where = {"host": socket.gethostname(), "pid": os.getpid()}
    if finished(task):
        return Outcome(task.key, "skipped", **where)
    lock = locks.acquire(locks.lock_path(task.record), stale_after=stale_after,
                         heartbeat_seconds=heartbeat_seconds)
    if lock is None:
        owner = locks.read_owner(locks.lock_path(task.record)) or {}
        return Outcome(task.key, "busy", reason=f"running elsewhere ({owner.get('host')}:{owner.get('pid')})",
                       **where)
    with lock:
        if finished(task):  # finished by another driver between our check and the lock
            return Outcome(task.key, "skipped", **where)
        started = time.perf_counter()
        try:
            task.call()
        except Exception as error:  # reported; the task's own record (if any) keeps the details
            return Outcome(task.key, "failed", time.perf_counter() - started,
                           f"{type(error).__name__}: {error}", **where)
        seconds = time.perf_counter() - started
    if finished(task):
        return Outcome(task.key, "ran", seconds, **where)
    record = read_record(task.record) or {}
    return Outcome(task.key, "failed", seconds,
                   record.get("reason") or f"ended without a finished record at {task.record}", **where)


def run_task_stoppably(task: Task, stale_after: float = locks.STALE_AFTER_SECONDS,
                       heartbeat_seconds: float = locks.HEARTBEAT_SECONDS) -> Outcome:
    """`run_task` in a worker process: SIGTERM / SIGINT (or a stop requested by code) end the task
    at its next safe point, its checkpoint saved, as the outcome "interrupted" (a rerun resumes it)."""
    try:
        with interruption.handling_signals():
            return run_task(task, stale_after, heartbeat_seconds)
    except interruption.Interrupted as stopped:
        return Outcome(task.key, "interrupted", reason=stopped.line(), host=socket.gethostname(), pid=os.getpid())
    finally:
        interruption.clear()  # the worker goes on to other tasks


class _Executor:
    """`submit(task, position)` (its place in the plan's order), `next_outcome()` in completion
    order, `close()`; usable in a `with` block. `slots`: how many tasks run at once."""

    slots = 1

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class LocalExecutor(_Executor):
    """Runs submitted tasks in this process one at a time, earliest in the plan first (so a run's
    conclusion follows its trials before the next run starts, as a sequential sweep would)."""

    name = "local"

    def __init__(self, stale_after: float = locks.STALE_AFTER_SECONDS,
                 heartbeat_seconds: float = locks.HEARTBEAT_SECONDS):
        self._queue: List[Tuple[int, Task]] = []
        self._lock_timing = (stale_after, heartbeat_seconds)

    def submit(self, task: Task, position: int) -> None:
        heapq.heappush(self._queue, (position, task))

    def next_outcome(self) -> Outcome:
        return run_task(heapq.heappop(self._queue)[1], *self._lock_timing)

    def close(self) -> None:
        self._queue.clear()


class RayExecutor(_Executor):
    """Runs each task as a Ray task asking for `cpus_per_task` CPUs and `gpus_per_task` GPUs.

    Ray sets CUDA_VISIBLE_DEVICES in the worker, so a task sees only the GPUs it was given (and a
    MirroredStrategy inside it spans exactly those); Ray starts a fresh worker process for each GPU
    task, so TensorFlow never keeps a previous task's devices. TensorFlow's thread pools are left
    as a local run has them: their size changes a CPU result's last bits (and, over a training
    run, its test score), and the executor must never change what a task computes. `address=None` starts Ray on this
    machine (or joins the cluster in RAY_ADDRESS, as under `ray job submit`); "auto" joins the
    cluster this machine belongs to; "ray://host:10001" or "host:6379" one elsewhere.
    """

    name = "ray"

    def __init__(self, address: Optional[str] = None, cpus_per_task: float = 1, gpus_per_task: float = 0,
                 max_retries: int = 3, stale_after: float = locks.STALE_AFTER_SECONDS,
                 heartbeat_seconds: float = locks.HEARTBEAT_SECONDS, num_cpus: Optional[int] = None):
        try:
            import ray
        except ImportError:
            raise ExecutorError("--executor=ray needs Ray: pip install 'tfbench[ray]' "
                                "(or pip install 'ray[default]')") from None
        self._ray = ray
        self._started_here = not ray.is_initialized()
        if self._started_here:
            try:
                ray.init(address=address, num_cpus=num_cpus if address is None else None)
            except (ConnectionError, RuntimeError, ValueError) as error:
                raise ExecutorError(f"cannot start or reach Ray at --ray_address={address!r}: {error}") from None
        self._remote = ray.remote(run_task_stoppably).options(
            num_cpus=cpus_per_task, num_gpus=gpus_per_task, max_retries=max_retries,
            retry_exceptions=False, name="tfbench-task")
        self._lock_timing = (stale_after, heartbeat_seconds)
        self._pending: Dict[object, Task] = {}
        resources = ray.cluster_resources()
        fits = [resources.get(name, 0) / need for name, need in (("CPU", cpus_per_task), ("GPU", gpus_per_task))
                if need > 0]
        self.slots = max(1, int(min(fits))) if fits else 1

    def submit(self, task: Task, position: int) -> None:
        self._pending[self._remote.remote(task, *self._lock_timing)] = task

    def next_outcome(self) -> Outcome:
        ray = self._ray
        (ref,), _ = ray.wait(list(self._pending), num_returns=1)
        task = self._pending.pop(ref)
        try:
            return ray.get(ref)
        except ray.exceptions.RayError as error:  # the worker died more often than max_retries
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            return Outcome(task.key, "failed", reason=f"{type(error).__name__}: {reason}")

    def close(self) -> None:
        for ref in self._pending:
            self._ray.cancel(ref, force=True)
        self._pending.clear()
        if self._started_here:
            self._ray.shutdown()


@dataclasses.dataclass
class Summary:
    """Every selected task's outcome, and the tasks left waiting for needs that are not finished."""

    outcomes: Dict[str, Outcome] = dataclasses.field(default_factory=dict)
    waiting: Dict[str, List[str]] = dataclasses.field(default_factory=dict)

    def count(self, status: str) -> int:
        return sum(outcome.status == status for outcome in self.outcomes.values())

    def complete(self) -> bool:
        """Every selected task finished (ran now or earlier)."""
        return not self.waiting and all(o.status in ("ran", "skipped") for o in self.outcomes.values())

    def line(self) -> str:
        counts = ", ".join(f"{self.count(status)} {status}" for status in OUTCOMES)
        return f"{len(self.outcomes) + len(self.waiting)} tasks: {counts}, {len(self.waiting)} waiting"


def eta(seconds_by_kind: Mapping[str, List[float]], remaining_by_kind: Mapping[str, int], slots: int) -> str:
    """Time left: each remaining task at the mean time of its kind so far (of all kinds when its
    own has none yet), spread over the executor's parallel slots."""
    everything = [s for values in seconds_by_kind.values() for s in values]
    if not any(remaining_by_kind.values()):
        return "ETA 00:00:00"
    if not everything:
        return "ETA unknown"
    total = 0.0
    for kind, count in remaining_by_kind.items():
        known = seconds_by_kind.get(kind) or everything
        total += count * sum(known) / len(known)
    return f"ETA {time.strftime('%H:%M:%S', time.gmtime(total / max(1, slots)))}"


def _failed(task: Task) -> bool:
    record = read_record(task.record)
    return record is not None and record.get("status") == "failed"


def execute(plan: Plan, tasks: Sequence[Task], executor, log: Callable[[str], None] = print,
            poll_seconds: float = 10.0, wait_for_needs: float = 0.0,
            on_outcome: Optional[Callable[[Task, Outcome], None]] = None) -> Summary:
    """Run `tasks` (a part of `plan`, say one shard) on `executor` as their needs are met; the
    caller closes the executor (`with LocalExecutor() as executor:`).

    Tasks are submitted as soon as they are ready, so an executor with many workers runs them at
    once. A need inside `tasks` is waited for. A need outside (another shard's) must be finished;
    else the task is left for a rerun, or, with `wait_for_needs` seconds, waited for while no need
    has failed. A task that another driver is running (busy) is looked at again until that
    driver finishes it (or dies, and it is taken over). Waiting polls the records every
    `poll_seconds` once nothing else is left to do here. Each final outcome is logged with an ETA
    and passed to `on_outcome`.
    """
    selected = {task.key: task for task in tasks}
    position = {task.key: i for i, task in enumerate(plan.tasks)}
    dependents = plan.dependents()
    done: Dict[str, bool] = {}  # resolved tasks: finished or not
    deadline = time.monotonic() + wait_for_needs

    def need_done(key: str) -> Optional[bool]:
        """True/False once known, None while it is still to run here."""
        if key not in done:
            if key in selected:
                return None
            done[key] = finished(plan[key])
        return done[key]

    summary = Summary()
    seconds_by_kind: Dict[str, List[float]] = {}
    remaining_by_kind = collections.Counter(task.kind for task in tasks)
    unsubmitted = dict(selected)
    in_flight = 0
    busy: List[Task] = []
    parked: List[Task] = []  # waiting for needs that other shards or drivers run

    def submit(task: Task) -> None:
        nonlocal in_flight
        executor.submit(task, position[task.key])
        in_flight += 1

    def resolve(key: str, is_done: bool) -> None:
        done[key] = is_done
        for dependent in dependents[key]:
            if dependent in unsubmitted:
                consider(unsubmitted[dependent])

    def consider(task: Task) -> None:
        states = [need_done(need) for need in task.needs]
        if None in states:
            return
        del unsubmitted[task.key]
        missing = [need for need, state in zip(task.needs, states) if not state]
        if not missing:
            submit(task)
        elif time.monotonic() < deadline and not any(need in selected or _failed(plan[need]) for need in missing):
            parked.append(task)
        else:
            summary.waiting[task.key] = missing
            remaining_by_kind[task.kind] -= 1
            log(f"waiting: {task.kind} {task.key} needs {len(missing)} unfinished task(s) "
                f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); a rerun completes it")
            resolve(task.key, False)

    def look_again() -> None:
        time.sleep(poll_seconds)
        for task in busy:
            submit(task)
        busy.clear()
        for task in list(parked):
            parked.remove(task)
            for need in task.needs:
                if need not in selected and not done.get(need, True):
                    del done[need]  # read its record again
            unsubmitted[task.key] = task
            consider(task)

    for task in list(unsubmitted.values()):
        if task.key in unsubmitted:
            consider(task)
    while in_flight or busy or parked:
        if not in_flight:
            look_again()
            continue
        outcome = executor.next_outcome()
        in_flight -= 1
        task = selected[outcome.key]
        if outcome.status == "busy":
            log(f"busy: {task.kind} {task.key} is {outcome.reason}; looking again later")
            busy.append(task)
            continue
        summary.outcomes[task.key] = outcome
        remaining_by_kind[task.kind] -= 1
        if outcome.status == "ran":
            seconds_by_kind.setdefault(task.kind, []).append(outcome.seconds)
        where = f" on {outcome.host}:{outcome.pid}" if outcome.status == "ran" else ""
        detail = f": {outcome.reason}" if outcome.reason else ""
        log(f"[{len(summary.outcomes)}/{len(selected)}] {outcome.status} {task.kind} {task.key}"
            f"{f' in {outcome.seconds:.1f}s' if outcome.seconds else ''}{where}{detail}; "
            f"{eta(seconds_by_kind, remaining_by_kind, executor.slots)}")
        if on_outcome is not None:
            on_outcome(task, outcome)
        resolve(task.key, outcome.status in ("ran", "skipped"))
    return summary

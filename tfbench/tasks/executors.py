"""Executors: where the tasks of a plan run. They decide where, never what.

    local   every task in this process, one after another in dependency order (imports nothing new)
    ray     plain Ray tasks with resource requests (num_cpus, num_gpus): on this machine, or on a
            running cluster (`ray_address`), many at once

Every task runs through `run_task` wherever it runs: skip it if its record is finished, take its lock
(tfbench.tasks.locks) so that no other driver runs it at the same time, check again, call it under
the lock's fence (tfbench.fencing). A task that raises, or ends without a finished record, is
reported failed and is not retried in this invocation (its own record says why when it wrote one);
a Ray worker that dies (machine lost, SIGKILL, out of memory) is retried by Ray up to `max_retries`
times, and the retry resumes from the task's checkpoints. A task whose lock another owner holds is
`busy`, and one whose lock was taken over while it ran is `lost` (it stopped and wrote nothing):
the driver looks at its lock every heartbeat and runs it again as soon as the lock is free or stale
and a slot is free, whatever else is in flight. A task whose needs are not all finished (one
failed, or another shard runs it) is left for a rerun and named, or waited for (`wait_for_needs`).
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
import os
import socket
import time
from typing import Callable, Deque, Dict, List, Mapping, Optional, Sequence, Tuple

from tfbench import fencing
from tfbench.tasks import locks
from tfbench.tasks.plan import Plan, Task, finished, read_record

EXECUTORS = ("local", "ray")
OUTCOMES = ("ran", "skipped", "failed")  # final; "busy" and "lost" are looked at again
POLL_SECONDS = 10.0  # how often a driver looks at records and locks at most: a few small reads each time


class ExecutorError(RuntimeError):
    """An executor that cannot start (Ray missing, cluster unreachable); the message says why."""


@dataclasses.dataclass(frozen=True)
class TaskOutcome:
    """What happened to one task: ran, skipped (finished earlier), failed, busy (another driver
    holds its lock) or lost (its lock was taken over while it ran: it stopped); where, and how
    long it took. Busy and lost are not final."""

    key: str
    status: str
    seconds: float = 0.0
    reason: Optional[str] = None
    host: str = ""
    pid: int = 0


def run_task(task: Task, timing: locks.Timing = locks.Timing()) -> TaskOutcome:
    """Run one task under its lock unless it is finished; what every executor's worker calls."""
    where = {"host": socket.gethostname(), "pid": os.getpid()}
    if finished(task):
        return TaskOutcome(task.key, "skipped", **where)
    lock = locks.acquire(locks.lock_path(task.record), timing)
    if lock is None:
        owner = locks.read_owner(locks.lock_path(task.record)) or {}
        return TaskOutcome(task.key, "busy", reason=f"running elsewhere ({owner.get('host')}:{owner.get('pid')})",
                       **where)
    with lock, fencing.holding(lock):
        if finished(task):  # finished by another driver between our check and the lock
            return TaskOutcome(task.key, "skipped", **where)
        started = time.perf_counter()
        try:
            task.call()
        except fencing.LeaseLost as lost:
            return TaskOutcome(task.key, "lost", time.perf_counter() - started, str(lost), **where)
        except Exception as error:  # reported; the task's own record (if any) keeps the details
            return TaskOutcome(task.key, "failed", time.perf_counter() - started,
                           f"{type(error).__name__}: {error}", **where)
        seconds = time.perf_counter() - started
    if finished(task):
        return TaskOutcome(task.key, "ran", seconds, **where)
    record = read_record(task.record) or {}
    return TaskOutcome(task.key, "failed", seconds,
                   record.get("reason") or f"ended without a finished record at {task.record}", **where)


class _Executor:
    """`submit(task)`, `next_outcome(timeout)` in completion order (None if no task ended within
    `timeout` seconds), `close()`; usable in a `with` block. `slots`: how many tasks run at once
    (the driver keeps that many in flight and the rest in its own queue, so that a task taken over
    or a conclusion whose trials just finished runs next, not after everything submitted before);
    `timing`: the lock timing its tasks use."""

    slots = 1

    def __init__(self, timing: locks.Timing):
        self.timing = timing

    def refresh_slots(self) -> None:
        """Count the slots again (a cluster may have grown or shrunk)."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class LocalExecutor(_Executor):
    """Runs each submitted task in this process when its outcome is asked for (one slot)."""

    name = "local"

    def __init__(self, timing: locks.Timing = locks.Timing()):
        super().__init__(timing)
        self._queue: Deque[Task] = collections.deque()

    def submit(self, task: Task) -> None:
        self._queue.append(task)

    def next_outcome(self, timeout: Optional[float] = None) -> Optional[TaskOutcome]:
        return run_task(self._queue.popleft(), self.timing)

    def close(self) -> None:
        self._queue.clear()


class RayExecutor(_Executor):
    """Runs each task as a Ray task asking for `cpus_per_task` CPUs and `gpus_per_task` GPUs.

    Ray sets CUDA_VISIBLE_DEVICES in the worker, so a task sees only the GPUs it was given (and a
    MirroredStrategy inside it spans exactly those). A GPU task gets a fresh worker process, ended
    when the task ends (`max_calls=1`, given to `ray.remote` itself: `.options()` cannot set it,
    and Ray's own fresh-worker default for GPU tasks applies only to `num_gpus` given there): so
    TensorFlow never keeps a previous task's devices, and a worker's memory does not grow trial
    after trial. CPU tasks reuse workers (a fresh process costs seconds of start-up per task).
    TensorFlow's thread pools are left as a local run has them: their size changes a CPU result's
    last bits (and, over a training run, its test score), and the executor must never change what
    a task computes. `address=None` starts Ray on this machine (or joins the cluster in
    RAY_ADDRESS, as under `ray job submit`); "auto" joins the cluster this machine belongs to;
    "ray://host:10001" or "host:6379" one elsewhere.
    """

    name = "ray"

    def __init__(self, address: Optional[str] = None, cpus_per_task: float = 1, gpus_per_task: float = 0,
                 max_retries: int = 3, timing: locks.Timing = locks.Timing(), num_cpus: Optional[int] = None):
        super().__init__(timing)
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
        self._remote = ray.remote(num_cpus=cpus_per_task, num_gpus=gpus_per_task, max_retries=max_retries,
                                  retry_exceptions=False, max_calls=1 if gpus_per_task > 0 else 0,
                                  name="tfbench-task")(run_task)
        self._needs = (("CPU", cpus_per_task), ("GPU", gpus_per_task))
        self._pending: Dict[object, Task] = {}
        self.refresh_slots()

    def refresh_slots(self) -> None:
        resources = self._ray.cluster_resources()
        fits = [resources.get(name, 0) / need for name, need in self._needs if need > 0]
        self.slots = max(1, int(min(fits))) if fits else 1

    def submit(self, task: Task) -> None:
        self._pending[self._remote.remote(task, self.timing)] = task

    def next_outcome(self, timeout: Optional[float] = None) -> Optional[TaskOutcome]:
        ray = self._ray
        ended, _ = ray.wait(list(self._pending), num_returns=1, timeout=timeout)
        if not ended:
            return None
        task = self._pending.pop(ended[0])
        try:
            return ray.get(ended[0])
        except ray.exceptions.RayError as error:  # the worker died more often than max_retries
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            return TaskOutcome(task.key, "failed", reason=f"{type(error).__name__}: {reason}")

    def close(self) -> None:
        for ref in self._pending:
            self._ray.cancel(ref, force=True)
        self._pending.clear()
        if self._started_here:
            self._ray.shutdown()


@dataclasses.dataclass
class Summary:
    """Every selected task's outcome, and the tasks left waiting for needs that are not finished."""

    outcomes: Dict[str, TaskOutcome] = dataclasses.field(default_factory=dict)
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
            poll_seconds: Optional[float] = None, wait_for_needs: float = 0.0,
            on_outcome: Optional[Callable[[Task, TaskOutcome], None]] = None) -> Summary:
    """Run `tasks` (a part of `plan`, say one shard) on `executor` as their needs are met; the
    caller closes the executor (`with LocalExecutor() as executor:`).

    Ready tasks queue here in plan order and run as the executor's slots free up. A need inside
    `tasks` is waited for. A need outside (another shard's) must be finished; else the task is left
    for a rerun, or, with `wait_for_needs` seconds, waited for while no need has failed, until this
    driver has had nothing to run for that long (the clock restarts whenever a task starts here).
    A task that another owner holds (busy, or lost to a taker) runs again as soon as its lock is
    free or stale and a slot is free, whatever else is in flight. Every `poll_seconds` (default:
    the lock heartbeat, at most POLL_SECONDS) the driver looks at those locks and at the records of
    the needs it waits for. Each final outcome is logged with an ETA and passed to `on_outcome`.
    """
    poll = min(executor.timing.heartbeat_seconds, POLL_SECONDS) if poll_seconds is None else poll_seconds
    selected = {task.key: task for task in tasks}
    position = {task.key: i for i, task in enumerate(plan.tasks)}
    dependents = plan.dependents()
    done: Dict[str, bool] = {}  # resolved tasks: finished or not

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
    ready: List[Tuple[int, str]] = []  # a heap: plan order
    in_flight = 0
    held: Dict[str, str] = {}  # tasks another owner holds, and who, as last logged
    parked: List[Task] = []  # waiting for needs that other shards or drivers run
    idle_since: Optional[float] = None  # since when nothing has run here

    def patient() -> bool:
        return wait_for_needs > 0 and (idle_since is None or time.monotonic() - idle_since < wait_for_needs)

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
            heapq.heappush(ready, (position[task.key], task.key))
        elif patient() and not any(need in selected or _failed(plan[need]) for need in missing):
            parked.append(task)
        else:
            summary.waiting[task.key] = missing
            remaining_by_kind[task.kind] -= 1
            log(f"waiting: {task.kind} {task.key} needs {len(missing)} unfinished task(s) "
                f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); a rerun completes it")
            resolve(task.key, False)

    def look_again() -> None:
        executor.refresh_slots()
        for key in list(held):
            if locks.available(locks.lock_path(selected[key].record), executor.timing.stale_after):
                del held[key]
                heapq.heappush(ready, (position[key], key))
        for task in list(parked):
            parked.remove(task)
            for need in task.needs:
                if need not in selected and not done.get(need, True):
                    del done[need]  # read its record again
            unsubmitted[task.key] = task
            consider(task)

    def record(task: Task, outcome: TaskOutcome) -> None:
        if outcome.status in ("busy", "lost"):
            if held.get(task.key) != outcome.reason:  # said once per owner, not every poll
                log(f"{outcome.status}: {task.kind} {task.key}: {outcome.reason}; it runs again once "
                    "its lock is free or stale")
            held[task.key] = outcome.reason or ""
            return
        held.pop(task.key, None)
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

    for task in list(unsubmitted.values()):
        if task.key in unsubmitted:
            consider(task)
    last_look = time.monotonic()
    while ready or in_flight or held or parked:
        while ready and in_flight < executor.slots:
            executor.submit(selected[heapq.heappop(ready)[1]])
            in_flight += 1
            idle_since = None
        until_look = max(0.0, last_look + poll - time.monotonic())
        if in_flight:
            outcome = executor.next_outcome(timeout=until_look)
        else:
            idle_since = time.monotonic() if idle_since is None else idle_since
            time.sleep(until_look)
            outcome = None
        if outcome is not None:
            in_flight -= 1
            record(selected[outcome.key], outcome)
        if time.monotonic() - last_look >= poll:
            last_look = time.monotonic()
            look_again()
    return summary

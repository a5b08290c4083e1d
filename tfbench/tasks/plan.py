"""A study as a plan of tasks: what must run, in which order, in which shard, at what cost.

The unit of work is the task: one fine-tune or scratch trial, the conclusion of a run (selection on
validation, retrain on train+val, the test score), or a probe run. A task is described by data
only: a stable key, its kind, the keys it needs finished first, the record file whose finished
presence means it is done, and a `Call` naming a module-level function with plain arguments. So a
task can be pickled to another process or machine, run there, retried, and judged done by anyone
who can read the output folder: records are the interface between tasks, never memory.

Shards (`--shard=INDEX/COUNT`) split the ordered plan round-robin: deterministic, disjoint and
covering for any COUNT, and independent of what has already run, so concurrently running shards
agree on who owns what. See docs/DESIGN.md, "Package tree" (the study's path).
"""

from __future__ import annotations

import dataclasses
import heapq
import importlib
import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from tfbench.results import FINISHED_STATUSES, read_record

SHARD_INDEX_VARIABLES = ("JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID")


class PlanError(ValueError):
    """A malformed plan or shard request; the message names the bad value and what is valid."""


@dataclasses.dataclass(frozen=True)
class Call:
    """`function(**arguments)`, with `function` as "package.module:name" and plain-data arguments."""

    function: str
    arguments: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __call__(self) -> Any:
        module, _, name = self.function.partition(":")
        return getattr(importlib.import_module(module), name)(**self.arguments)


@dataclasses.dataclass(frozen=True)
class Task:
    """One unit of work. `run` groups the tasks of one experiment; `steps`/`images` are its
    training cost (0 for work that trains nothing), for the dry-run summary. `done`, if given,
    decides whether the task is finished (say, a trial record made under other settings is not),
    instead of its record's status alone."""

    key: str
    kind: str
    call: Call
    record: str
    needs: Tuple[str, ...] = ()
    run: str = ""
    steps: int = 0
    images: int = 0
    done: Optional[Call] = None


def finished(task: Task) -> bool:
    """Done means its record exists with a finished status (a failed one is tried again), and
    the task's own `done` check, if any, agrees."""
    record = read_record(task.record)
    if record is None or record.get("status") not in FINISHED_STATUSES:
        return False
    return task.done is None or bool(task.done())


class Plan:
    """Tasks in a stable order where every task comes after the tasks it needs."""

    def __init__(self, tasks: Iterable[Task]):
        tasks = list(tasks)
        self.by_key: Dict[str, Task] = {}
        for task in tasks:
            if task.key in self.by_key:
                raise PlanError(f"two tasks share the key {task.key!r}; task keys must be unique")
            self.by_key[task.key] = task
        for task in tasks:
            for need in task.needs:
                if need not in self.by_key:
                    raise PlanError(f"task {task.key!r} needs {need!r}, which is not in the plan")
        self.tasks: List[Task] = _ordered(tasks)

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, key: str) -> Task:
        return self.by_key[key]

    def dependents(self) -> Dict[str, List[str]]:
        """For each key, the keys of the tasks that need it."""
        out: Dict[str, List[str]] = {task.key: [] for task in self.tasks}
        for task in self.tasks:
            for need in task.needs:
                out[need].append(task.key)
        return out

    def shard(self, index: int, count: int) -> List[Task]:
        """Every `count`-th task from position `index`: shards are disjoint and cover the plan."""
        return self.tasks[index::count]


def _ordered(tasks: List[Task]) -> List[Task]:
    """Topological order, ties broken by the order given (so the same plan always orders alike)."""
    position = {task.key: i for i, task in enumerate(tasks)}
    waiting_on = {task.key: len(set(task.needs)) for task in tasks}
    dependents: Dict[str, List[str]] = {task.key: [] for task in tasks}
    for task in tasks:
        for need in set(task.needs):
            dependents[need].append(task.key)
    ready = [position[key] for key, count in waiting_on.items() if count == 0]
    heapq.heapify(ready)
    ordered = []
    while ready:
        task = tasks[heapq.heappop(ready)]
        ordered.append(task)
        for key in dependents[task.key]:
            waiting_on[key] -= 1
            if waiting_on[key] == 0:
                heapq.heappush(ready, position[key])
    if len(ordered) != len(tasks):
        cycle = sorted(key for key, count in waiting_on.items() if count > 0)
        raise PlanError(f"tasks that need each other in a cycle: {', '.join(cycle[:5])}")
    return ordered


@dataclasses.dataclass(frozen=True)
class Shard:
    index: int
    count: int


def parse_shard(text: str, environ: Mapping[str, str] = os.environ) -> Shard:
    """`INDEX/COUNT` (0 <= INDEX < COUNT), or `auto/COUNT` with INDEX from a batch system's array
    index: JOB_COMPLETION_INDEX (Kubernetes Indexed Job) or SLURM_ARRAY_TASK_ID."""
    index_text, slash, count_text = text.partition("/")
    if not slash or not count_text.isdigit() or int(count_text) < 1:
        raise PlanError(f"--shard={text!r} is not INDEX/COUNT or auto/COUNT with COUNT >= 1 (e.g. 0/4, auto/4)")
    count = int(count_text)
    if index_text == "auto":
        variable = next((name for name in SHARD_INDEX_VARIABLES if environ.get(name, "") != ""), None)
        if variable is None:
            raise PlanError(f"--shard=auto/{count} needs the shard index in "
                            f"{' or '.join(SHARD_INDEX_VARIABLES)}, and neither is set")
        index_text = environ[variable]
        where = f"{variable}={index_text!r}"
    else:
        where = f"--shard={text!r}"
    if not index_text.isdigit() or int(index_text) >= count:
        raise PlanError(f"shard index from {where} must be an integer in [0, {count - 1}]")
    return Shard(int(index_text), count)


@dataclasses.dataclass(frozen=True)
class Cost:
    """What a set of tasks holds and what is left of it to train (its time: tfbench.estimate_cost)."""

    runs: int
    tasks: int
    tasks_by_kind: Mapping[str, int]
    remaining: int
    steps: int
    images: int

    def summary(self) -> str:
        kinds = ", ".join(f"{count:,} {kind}" for kind, count in sorted(self.tasks_by_kind.items()))
        return (f"plan: {self.runs:,} runs, {self.tasks:,} tasks ({kinds}); {self.remaining:,} not finished\n"
                f"to train (tasks not finished): {self.steps:,} steps, {self.images:,} images")


def cost(tasks: Sequence[Task]) -> Cost:
    """How many tasks, and the training steps and images of those not yet finished."""
    remaining = [task for task in tasks if not finished(task)]
    kinds: Dict[str, int] = {}
    for task in tasks:
        kinds[task.kind] = kinds.get(task.kind, 0) + 1
    return Cost(runs=len({task.run for task in tasks}), tasks=len(tasks), tasks_by_kind=kinds,
                remaining=len(remaining), steps=sum(task.steps for task in remaining),
                images=sum(task.images for task in remaining))

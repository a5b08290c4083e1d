"""The plan: order, shards, waiting dependents and the dry-run cost, on fake tasks."""

import json
import os

import pytest

import cluster_fakes
from tfbench.tasks import executors, plan


def test_order_puts_needs_first_and_keeps_the_given_order_otherwise(tmp_path):
    tasks = [cluster_fakes.task(tmp_path, "conclude", needs=["b", "a"]),
             cluster_fakes.task(tmp_path, "b"), cluster_fakes.task(tmp_path, "a"),
             cluster_fakes.task(tmp_path, "other")]
    assert [t.key for t in plan.Plan(tasks).tasks] == ["b", "a", "conclude", "other"]


@pytest.mark.parametrize("tasks, message", [
    ([("a", ()), ("a", ())], "two tasks share the key 'a'"),
    ([("a", ("ghost",))], "needs 'ghost', which is not in the plan"),
    ([("a", ("b",)), ("b", ("a",))], "cycle: a, b"),
])
def test_malformed_plans_fail_naming_the_task(tmp_path, tasks, message):
    with pytest.raises(plan.PlanError, match=message):
        plan.Plan(cluster_fakes.task(tmp_path, key, needs=needs) for key, needs in tasks)


@pytest.mark.parametrize("count", [1, 2, 3, 5, 16])
def test_shards_are_disjoint_and_cover_the_plan(tmp_path, count):
    study = cluster_fakes.study(tmp_path, runs=3, trials=4)
    shards = [study.shard(index, count) for index in range(count)]
    keys = [task.key for shard in shards for task in shard]
    assert sorted(keys) == sorted(task.key for task in study.tasks)
    assert len(keys) == len(set(keys))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    rebuilt = cluster_fakes.study(tmp_path, runs=3, trials=4)  # the same plan again: the same last shard
    assert [t.key for t in rebuilt.shard(count - 1, count)] == [t.key for t in shards[-1]]


@pytest.mark.parametrize("text, environ, expected", [
    ("0/1", {}, (0, 1)),
    ("3/4", {"JOB_COMPLETION_INDEX": "1"}, (3, 4)),
    ("auto/4", {"JOB_COMPLETION_INDEX": "2"}, (2, 4)),
    ("auto/8", {"SLURM_ARRAY_TASK_ID": "7"}, (7, 8)),
    ("auto/8", {"JOB_COMPLETION_INDEX": "1", "SLURM_ARRAY_TASK_ID": "7"}, (1, 8)),
])
def test_parse_shard(text, environ, expected):
    shard = plan.parse_shard(text, environ)
    assert (shard.index, shard.count) == expected


@pytest.mark.parametrize("text, environ, message", [
    ("4/4", {}, r"shard index from --shard='4/4' must be an integer in \[0, 3\]"),
    ("1", {}, "is not INDEX/COUNT or auto/COUNT"),
    ("0/0", {}, "is not INDEX/COUNT"),
    ("x/2", {}, "must be an integer in"),
    ("auto/4", {}, "needs the shard index in JOB_COMPLETION_INDEX or SLURM_ARRAY_TASK_ID, and neither is set"),
    ("auto/4", {"SLURM_ARRAY_TASK_ID": "9"}, r"SLURM_ARRAY_TASK_ID='9' must be an integer in \[0, 3\]"),
])
def test_bad_shards_fail_in_one_line(text, environ, message):
    with pytest.raises(plan.PlanError, match=message) as error:
        plan.parse_shard(text, environ)
    assert "\n" not in str(error.value)


def test_a_failed_record_is_not_finished_and_a_damaged_one_is_absent(tmp_path):
    task = cluster_fakes.task(tmp_path, "a")
    assert not plan.finished(task)
    for text, done in [('{"status": "failed"}', False), ('{"status": "ok"', False),
                       ('{"status": "diverged"}', True), ('{"status": "ok"}', True)]:
        with open(task.record, "w") as handle:
            handle.write(text)
        assert plan.finished(task) is done


def test_cost_counts_unfinished_work(tmp_path):
    study = cluster_fakes.study(tmp_path, runs=2, trials=3)  # 8 tasks of 10 steps, 320 images
    unknown = plan.cost(study.tasks)
    assert (unknown.runs, unknown.tasks, unknown.remaining) == (2, 8, 8)
    assert dict(unknown.tasks_by_kind) == {"trial": 6, "conclude": 2}
    assert (unknown.steps, unknown.images) == (80, 2560)

    cluster_fakes.write_record(os.path.join(tmp_path, "run0-trial0.json"))
    with open(os.path.join(tmp_path, "run0-trial1.json"), "w") as handle:
        json.dump({"status": "ok"}, handle)
    measured = plan.cost(study.tasks)
    assert (measured.remaining, measured.steps, measured.images) == (6, 60, 1920)
    assert measured.summary().splitlines() == [
        "plan: 2 runs, 8 tasks (2 conclude, 6 trial); 6 not finished",
        "to train (tasks not finished): 60 steps, 1,920 images"]


def test_a_dependent_whose_need_failed_waits_and_names_it(tmp_path):
    log = os.path.join(tmp_path, "log")
    tasks = [cluster_fakes.task(tmp_path, "good", log=log),
             cluster_fakes.task(tmp_path, "bad", log=log, function="raise_error"),
             cluster_fakes.task(tmp_path, "conclude", needs=["good", "bad"], log=log),
             cluster_fakes.task(tmp_path, "after", needs=["conclude"], log=log)]
    study = plan.Plan(tasks)
    lines = []
    with executors.LocalExecutor() as executor:
        summary = executors.execute(study, study.tasks, executor, log=lines.append)
    assert summary.outcomes["good"].status == "ran"
    assert summary.outcomes["bad"].status == "failed"
    assert summary.outcomes["bad"].reason == "ValueError: the data is bad"
    assert summary.waiting == {"conclude": ["bad"], "after": ["conclude"]}
    assert any(line.startswith("waiting: trial conclude needs 1 unfinished task(s) (bad)") for line in lines)
    assert not summary.complete()
    assert cluster_fakes.events(log, "start") == {"good": 1, "bad": 1}  # failed: not retried


def test_a_task_that_ends_without_a_finished_record_failed_with_its_reason(tmp_path):
    task = cluster_fakes.task(tmp_path, "diverging", status="failed")
    outcome = executors.run_task(task)
    assert (outcome.status, outcome.reason) == ("failed", f"ended without a finished record at {task.record}")
    with open(task.record) as handle:
        assert json.load(handle)["status"] == "failed"

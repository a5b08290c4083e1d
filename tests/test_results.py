"""Run records: atomic writes, skip-if-done, conflicts, and reading back into a table."""

import pytest

from tfbench import files, results
from tfbench.experiment import Experiment, identity_diff, path_component
from tfbench.settings import ProbeSettings


def _experiment(tmp_path, **overrides):
    fields = dict(regime="probe", model="tiny", dataset="digits", output_dir=str(tmp_path),
                  settings=ProbeSettings(l2_search="fast"))
    fields.update(overrides)
    return Experiment(**fields)


def _finished_record(experiment, status="ok", score=0.9):
    record = results.new_record(experiment, metric="top1", started_at=results.now())
    record["test_score"] = score
    record["hyperparameters"] = {"l2": 0.01}
    return results.finish(record, status)


def test_record_has_the_design_schema(tmp_path):
    experiment = _experiment(tmp_path)
    record = _finished_record(experiment)
    for key in ("experiment", "hyperparameters", "trials", "test_score", "timings", "versions",
                "host", "status", "reason"):
        assert key in record
    assert set(record["versions"]) >= {"tfbench", "tensorflow", "keras"}
    assert Experiment.from_dict(record["experiment"]) == experiment


def test_finished_run_is_found_and_failed_run_is_not(tmp_path):
    experiment = _experiment(tmp_path)
    assert results.finished_run(experiment) is None
    files.write_json_atomic(results.record_path(experiment), _finished_record(experiment, "failed"))
    assert results.finished_run(experiment) is None
    files.write_json_atomic(results.record_path(experiment), _finished_record(experiment))
    assert results.finished_run(experiment)["test_score"] == 0.9
    moved = _experiment(tmp_path, data_dir="/elsewhere")  # a location is not part of the identity
    assert results.finished_run(moved) is not None


def test_finished_run_with_other_settings_is_a_conflict_not_a_silent_reuse(tmp_path):
    experiment = _experiment(tmp_path)
    files.write_json_atomic(results.record_path(experiment), _finished_record(experiment))
    with pytest.raises(results.RunConflictError, match=r"settings.l2_search.*--overwrite"):
        results.finished_run(_experiment(tmp_path, settings=ProbeSettings(l2_search="paper")))


def test_identity_diff_names_changed_fields():
    a = {"seed": 0, "settings": {"lr": 0.1}}
    b = {"seed": 1, "settings": {"lr": 0.1, "wd": 0}}
    assert set(identity_diff(a, b)) == {"seed", "settings.wd"}


DAMAGE = {
    "truncated": lambda data: data[: len(data) // 2],
    "empty": lambda data: b"",
    "flipped": lambda data: bytes(b ^ 0xFF for b in data[:40]) + data[40:],
    "not a record": lambda data: b'["a list, not a record"]',
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_record_is_absent_with_one_warning(tmp_path, capsys, damage):
    experiment = _experiment(tmp_path)
    path = results.record_path(experiment)
    files.write_json_atomic(path, _finished_record(experiment))
    with open(path, "rb") as handle:
        data = handle.read()
    with open(path, "wb") as handle:
        handle.write(DAMAGE[damage](data))
    assert results.finished_run(experiment) is None  # redone, not a crash and not "finished"
    assert results.collect(str(tmp_path)) == []
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2 and all(path in line for line in warnings)  # one per read


def test_collect_and_table(tmp_path):
    for model, score in (("tiny", 0.5), ("resnet50", 0.75)):
        experiment = _experiment(tmp_path, model=model)
        files.write_json_atomic(results.record_path(experiment), _finished_record(experiment, score=score))
    trial = _experiment(tmp_path, model="tiny")
    files.write_json_atomic(results.trial_path(trial, "lr0.1"), _finished_record(trial, score=0.1))
    rows = results.table(results.collect(str(tmp_path)))
    assert [(r["model"], r["test_score"]) for r in rows] == [("resnet50", 0.75), ("tiny", 0.5)]


def test_path_component_is_safe_and_unique():
    assert path_component("resnet50") == "resnet50"
    a, b = path_component("/data/a/model.keras"), path_component("/data/b/model.keras")
    assert a != b and "/" not in a
    hub = path_component("hub:https://tfhub.dev/google/x/1")
    assert set(hub) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")

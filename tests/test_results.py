"""Run records: atomic writes, skip-if-done, conflicts, and reading back into a table."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tfbench import results
from tfbench.experiment import Experiment, identity_diff, path_component


def _experiment(tmp_path, **overrides):
    fields = dict(regime="probe", model="tiny", dataset="digits", output_dir=str(tmp_path),
                  settings={"l2_search": "fast"})
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
    results.write_json_atomic(results.record_path(experiment), _finished_record(experiment, "failed"))
    assert results.finished_run(experiment) is None
    results.write_json_atomic(results.record_path(experiment), _finished_record(experiment))
    assert results.finished_run(experiment)["test_score"] == 0.9
    moved = _experiment(tmp_path, data_dir="/elsewhere")  # a location is not part of the identity
    assert results.finished_run(moved) is not None


def test_finished_run_with_other_settings_is_a_conflict_not_a_silent_reuse(tmp_path):
    experiment = _experiment(tmp_path)
    results.write_json_atomic(results.record_path(experiment), _finished_record(experiment))
    with pytest.raises(results.RunConflictError, match=r"settings.l2_search.*--overwrite"):
        results.finished_run(_experiment(tmp_path, settings={"l2_search": "paper"}))


def test_identity_diff_names_changed_fields():
    a = {"seed": 0, "settings": {"lr": 0.1}}
    b = {"seed": 1, "settings": {"lr": 0.1, "wd": 0}}
    assert set(identity_diff(a, b)) == {"seed", "settings.wd"}


def test_failed_rename_keeps_the_old_record_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "record.json"
    results.write_json_atomic(str(path), {"status": "ok", "experiment": {}, "n": 1})

    def crash(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        results.write_json_atomic(str(path), {"status": "ok", "experiment": {}, "n": 2})
    assert json.loads(path.read_text())["n"] == 1
    assert os.listdir(tmp_path) == ["record.json"]


def test_record_survives_kill_mid_write(tmp_path):
    """SIGKILL a process that rewrites a large record in a loop: the file is always whole."""
    path = tmp_path / "record.json"
    writer = textwrap.dedent(f"""
        from tfbench import results
        payload = {{"status": "ok", "experiment": {{}}, "blob": ["x" * 1000] * 2000}}
        i = 0
        while True:
            payload["i"] = i
            results.write_json_atomic({str(path)!r}, payload)
            i += 1
    """)
    process = subprocess.Popen([sys.executable, "-c", writer], cwd=os.path.dirname(os.path.dirname(__file__)))
    try:
        deadline = time.time() + 30
        while not path.exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    record = json.loads(path.read_text())
    assert record["i"] >= 0 and len(record["blob"]) == 2000


def test_corrupt_record_is_a_clear_error(tmp_path):
    experiment = _experiment(tmp_path)
    os.makedirs(experiment.run_dir())
    with open(results.record_path(experiment), "w") as handle:
        handle.write('{"status": "ok", "experi')
    with pytest.raises(results.CorruptRecordError, match="not valid JSON"):
        results.finished_run(experiment)


def test_collect_and_table(tmp_path):
    for model, score in (("tiny", 0.5), ("resnet50", 0.75)):
        experiment = _experiment(tmp_path, model=model)
        results.write_json_atomic(results.record_path(experiment), _finished_record(experiment, score=score))
    trial = _experiment(tmp_path, model="tiny")
    results.write_json_atomic(results.trial_path(trial, "lr0.1"), _finished_record(trial, score=0.1))
    rows = results.table(results.collect(str(tmp_path)))
    assert [(r["model"], r["test_score"]) for r in rows] == [("resnet50", 0.75), ("tiny", 0.5)]


def test_path_component_is_safe_and_unique():
    assert path_component("resnet50") == "resnet50"
    a, b = path_component("/data/a/model.keras"), path_component("/data/b/model.keras")
    assert a != b and "/" not in a
    hub = path_component("hub:https://tfhub.dev/google/x/1")
    assert set(hub) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")

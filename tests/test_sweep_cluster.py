"""The sweep on the cluster machinery, end to end on the smoke study (tiny model, digits): Ray
gives the local answer, a worker killed mid-trial costs nothing, shards cover the study once, two
drivers share one folder. Each starts real `python -m tfbench.sweep` processes (a driver on the
shared local Ray of tests/conftest.py where Ray is used)."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tfbench import results

# Ray, binaries in subprocesses and real training: every test here takes tens of seconds.
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The paper's three regimes of the smoke study, without its convergence budgets: the executors'
# behaviour needs no more.
SMOKE = ["--flagfile=flags/smoke.flags", "--regimes=probe,finetune,scratch", "--report=false",
         "--convergence_budgets="]


def _sweep(tmp_path, name, *args, wait=True):
    command = [sys.executable, "-m", "tfbench.sweep", *SMOKE, f"--output_dir={tmp_path}/{name}",
               f"--cache_dir={tmp_path}/cache-{name}", *args]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return _output(process) if wait else process


def _output(process):
    """The standard output of a sweep that must succeed."""
    out, err = process.communicate(timeout=900)
    assert process.returncode == 0, err[-3000:]
    return out


def _answers(folder):
    """Per run: the chosen hyperparameters and the test score (what the study concludes)."""
    return {(r["experiment"]["regime"], r["experiment"]["dataset"], r["experiment"]["model"]):
            (r["status"], r["hyperparameters"], r["test_score"]) for r in results.collect(folder)}


def _trial_records(folder):
    return sorted(glob.glob(os.path.join(folder, "*", "*", "*", results.TRIALS_DIR, "*.json")))


def _ran(output):
    """The task keys each `ran` progress line names."""
    return [line.split()[3] for line in output.splitlines() if line.startswith("[") and "] ran " in line]


def test_ray_gives_the_same_answer_as_local(tmp_path, ray_cluster):
    address = ray_cluster.get_runtime_context().gcs_address
    local = _sweep(tmp_path, "local")
    distributed = _sweep(tmp_path, "ray", "--executor=ray", f"--ray_address={address}", "--cpus_per_trial=1")
    assert "5 ran, 0 skipped" in local.splitlines()[-1] and "5 ran, 0 skipped" in distributed.splitlines()[-1]
    answers = _answers(f"{tmp_path}/local")
    assert len(answers) == 3 and all(status == "ok" for status, _, _ in answers.values())
    assert _answers(f"{tmp_path}/ray") == answers
    assert [os.path.basename(p) for p in _trial_records(f"{tmp_path}/ray")] == \
        [os.path.basename(p) for p in _trial_records(f"{tmp_path}/local")]


def _longer_trials(tmp_path):
    """The smoke study's fine-tune regime alone, with trials long enough to be killed mid-way."""
    flagfile = os.path.join(tmp_path, "long.flags")
    with open(os.path.join(ROOT, "flags", "smoke_train.flags")) as handle:
        text = handle.read().replace("--train_steps=150", "--train_steps=600")
    with open(flagfile, "w") as handle:
        handle.write(text)
    return ["--regimes=finetune", f"--finetune_flags={flagfile}"]


def test_a_worker_killed_mid_trial_is_retried_and_resumes_to_the_uninterrupted_result(tmp_path, ray_cluster):
    address = ray_cluster.get_runtime_context().gcs_address
    args = _longer_trials(tmp_path)
    driver = _sweep(tmp_path, "ray", *args, "--executor=ray", f"--ray_address={address}", wait=False)
    trials = f"{tmp_path}/ray/finetune/*/tiny/{results.TRIALS_DIR}"
    deadline = time.time() + 600
    # mid-trial: a checkpoint is complete once its state file names it
    while time.time() < deadline and not glob.glob(f"{trials}/*/checkpoints/checkpoint"):
        assert driver.poll() is None, driver.communicate()[1][-3000:]
        time.sleep(0.2)
    (lock,) = glob.glob(f"{trials}/*.json.lock")  # the lock names the worker running the trial
    with open(lock) as handle:
        pid = json.load(handle)["pid"]
    os.kill(pid, signal.SIGKILL)
    out = _output(driver)
    assert "2 ran, 0 skipped, 0 failed" in out.splitlines()[-1]  # the trial (by its retry), the conclusion
    (record_path,) = _trial_records(f"{tmp_path}/ray")
    with open(record_path) as handle:
        killed = json.load(handle)
    assert killed["status"] == "ok" and killed["training"]["resumed_from_step"] > 0

    _sweep(tmp_path, "local", *args)  # the same trial, never interrupted
    (uninterrupted_path,) = _trial_records(f"{tmp_path}/local")
    with open(uninterrupted_path) as handle:
        uninterrupted = json.load(handle)
    assert killed["validation_score"] == pytest.approx(uninterrupted["validation_score"], abs=1e-6)
    ((_, chosen, score),) = _answers(f"{tmp_path}/ray").values()
    ((_, chosen_uninterrupted, score_uninterrupted),) = _answers(f"{tmp_path}/local").values()
    assert chosen == chosen_uninterrupted and score == pytest.approx(score_uninterrupted, abs=1e-6)


def test_three_shards_at_once_cover_the_study_once_and_a_fourth_run_finds_nothing_left(tmp_path):
    shards = [_sweep(tmp_path, "study", f"--shard={index}/3", "--wait_for_needs=600", wait=False)
              for index in range(3)]
    outputs = [_output(shard) for shard in shards]
    ran = [key for out in outputs for key in _ran(out)]
    assert len(ran) == 5 and len(set(ran)) == 5  # every task once, by one shard
    assert "0 ran, 5 skipped, 0 failed, 0 waiting" in _sweep(tmp_path, "study").splitlines()[-1]


def test_two_drivers_on_one_folder_run_every_task_once(tmp_path):
    drivers = [_sweep(tmp_path, "study", wait=False) for _ in range(2)]
    outputs = [_output(driver) for driver in drivers]
    ran = [key for out in outputs for key in _ran(out)]
    assert sorted(ran) == sorted(set(ran)) and len(ran) == 5, outputs
    assert len(_answers(f"{tmp_path}/study")) == 3


def test_a_user_model_of_a_models_file_runs_on_ray_workers(tmp_path, ray_cluster):
    """Workers register the --models_file models themselves: they do not share the driver's registry."""
    import keras

    images = keras.Input((16, 16, 3))
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 3)(images))
    keras.Model(images, features).save(tmp_path / "my_net.keras")
    (tmp_path / "models.toml").write_text('[[model]]\nname = "my_net"\nsource = "my_net.keras"\n'
                                          'imagenet_top1 = 0.701\ntop1_source = "ours"\ninput_range = [0, 1]\n')
    address = ray_cluster.get_runtime_context().gcs_address
    command = [sys.executable, "-m", "tfbench.sweep", "--models=my_net", "--datasets=digits", "--regimes=probe",
               "--probe_flags=flags/smoke_probe.flags", f"--models_file={tmp_path}/models.toml", "--report=false",
               f"--output_dir={tmp_path}/runs", f"--cache_dir={tmp_path}/cache", "--executor=ray",
               f"--ray_address={address}"]
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    ((status, _, score),) = _answers(f"{tmp_path}/runs").values()
    assert status == "ok" and score > 0.1

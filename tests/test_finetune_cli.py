"""The fine-tune / scratch regimes end to end on the tiny backbone and digits, offline.

- a real search in which one trial's huge learning rate diverges: it is recorded as diverged, the
  search goes on, and the test split is read once, after the choice, for the final score;
- kill -9 during training, then the same command again: the run resumes from its checkpoint and
  ends with the result of an uninterrupted run.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tfbench import predictions, protocol, results, tuning
from tfbench.regimes import trained
from tfbench.experiment import Experiment
from tfbench.settings import Runtime, TrainingSettings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_search_with_a_diverging_trial_reads_test_only_for_the_final_score(tmp_path, monkeypatch):
    from tfbench import datasets

    monkeypatch.setitem(tuning.SMALL_GRIDS, "finetune", ((1e20, 0.1), (0.0,)))
    loaded = []
    real_load = datasets.load

    def recording_load(name, split, data_dir=None, **options):
        loaded.append(split)
        return real_load(name, split, data_dir, **options)

    real_load_table = datasets.load_table

    def recording_load_table(name, split, data_dir=None, **options):
        loaded.append(split)
        return real_load_table(name, split, data_dir, **options)

    monkeypatch.setattr(datasets, "load", recording_load)
    monkeypatch.setattr(datasets, "load_table", recording_load_table)
    experiment = Experiment(
        regime="finetune", model="tiny", dataset="digits", output_dir=str(tmp_path), batch_size=32,
        settings=TrainingSettings(search="small", train_steps=60, bn_momentum=0.9))
    record = trained.run(experiment, Runtime(checkpoint_every=30, verbose=False))

    trials = {trial["trial_id"]: trial for trial in record["trials"]}
    assert trials["lr1e+20_wd0"]["status"] == "diverged"
    assert "non-finite" in trials["lr1e+20_wd0"]["reason"]
    assert trials["lr0.1_wd0"]["status"] == "ok"
    assert record["status"] == "ok" and record["hyperparameters"]["learning_rate"] == 0.1
    assert 0.0 <= record["test_score"] <= 1.0
    diverged = results.read_json(results.trial_path(experiment, "lr1e+20_wd0"))
    assert diverged["status"] == "diverged"
    chosen = results.read_json(results.trial_path(experiment, "lr0.1_wd0"))
    assert [step for step, _ in chosen["validation_curve"]] == [30, 60]  # every checkpoint, and the end
    assert chosen["validation_curve"][-1][1] == chosen["validation_score"]
    assert record[results.CHOSEN_CURVE] == chosen["validation_curve"]  # the run record carries it

    # Selection reads only train and val; test is loaded once, after the retrain on trainval.
    assert loaded.count("test") == 1 and loaded[-1] == "test" and loaded[-2] == "trainval"
    assert set(loaded[:-2]) == {"train", "val"}
    test_examples = sum(1 for _ in real_load("digits", "test"))
    assert record["training"]["scored_examples"] == test_examples  # none dropped by batching
    stored = predictions.read(experiment.run_dir(), record)  # what significance tests resample
    assert len(stored) == test_examples and stored.score() == record["test_score"]

    assert record["conventions"]["weight_decay"] == protocol.WEIGHT_DECAY_CONVENTION
    assert record["conventions"]["initialisation"].startswith("fixed seeded")  # tiny has no ImageNet weights
    assert record["training"]["precision"] == "float32"
    log_dir = record["tensorboard_dir"]
    for trial_id, status in (("lr1e+20_wd0", b"STATUS_FAILURE"), ("lr0.1_wd0", b"STATUS_SUCCESS")):
        tags = _hparams_summaries(os.path.join(log_dir, trial_id, "tensorboard"))
        start, end = tags["_hparams_/session_start_info"], tags["_hparams_/session_end_info"]
        for hparam in (b"regime", b"dataset", b"model", b"train_steps", b"search", b"learning_rate"):
            assert hparam in start
        assert end  # the session's end, with its status
    assert os.listdir(os.path.join(log_dir, "final", "tensorboard"))
    assert not os.path.exists(os.path.join(log_dir, "lr0.1_wd0", "checkpoints"))  # freed


def _hparams_summaries(folder):
    """{tag: serialized plugin content} of the HParams summaries in a TensorBoard folder."""
    import tensorflow as tf

    found = {}
    for name in os.listdir(folder):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(folder, name)):
            for value in event.summary.value:
                if value.tag.startswith("_hparams_/"):
                    found[value.tag] = value.metadata.plugin_data.content
    return found


SETTINGS = {"search": "none", "learning_rate": 0.1, "weight_decay": 1e-4, "train_steps": 200,
            "bn_momentum": 0.9}


def _command(output_dir):
    return ([sys.executable, "-m", "tfbench.scratch", "--model=tiny", "--dataset=digits",
             "--batch_size=16", f"--output_dir={output_dir}"]
            + [f"--{name}={value}" for name, value in SETTINGS.items()] + ["--checkpoint_every=20"])


def _env():
    return dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
                TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The experiment of `_command`, run in this process without interruption, and its record."""
    reference = Experiment(regime="scratch", model="tiny", dataset="digits", batch_size=16,
                           output_dir=str(tmp_path_factory.mktemp("uninterrupted")),
                           settings=TrainingSettings(**SETTINGS))
    return reference, trained.run(reference, Runtime(checkpoint_every=20, verbose=False))


@pytest.mark.slow
def test_kill_during_training_then_rerun_resumes_and_matches(tmp_path, uninterrupted):
    reference, expected = uninterrupted

    resumed = tmp_path / "resumed"
    trials_dir = resumed / "scratch" / "digits" / "tiny" / "trials"
    process = subprocess.Popen(_command(resumed), env=_env(), cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    try:
        while time.time() < deadline and process.poll() is None:
            if trials_dir.exists() and any(
                    (trials_dir / name / "checkpoints" / "checkpoint").exists() for name in os.listdir(trials_dir)):
                break
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        process.kill()
    assert not (resumed / "scratch" / "digits" / "tiny" / "record.json").exists()

    rerun = subprocess.run(_command(resumed), env=_env(), timeout=240, cwd=tmp_path,
                           capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "scratch: model=tiny dataset=digits status=ok" in rerun.stdout
    # Library chatter stays out of the user's terminal: no INFO line per checkpoint, no retracing warnings.
    chatter = [line for line in rerun.stderr.splitlines()
               if "retracing" in line or re.match(r"(I\d{4} \d\d:|INFO:)", line) and ".py:" in line]
    assert not chatter, chatter[:3]

    # Runtime knobs are not part of a run's identity: other ones skip the finished run.
    again = subprocess.run(_command(resumed) + ["--checkpoint_every=7", "--eval_every=0",
                                                "--strategy=one_device"],
                           env=_env(), timeout=120, cwd=tmp_path, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "(finished earlier; --overwrite reruns)" in again.stdout

    with open(resumed / "scratch" / "digits" / "tiny" / "record.json") as handle:
        got = json.load(handle)
    assert got["experiment"] == reference.to_dict() | {"output_dir": str(resumed)}
    _assert_same_result(got, expected)
    resumed_from = [got["training"]["resumed_from_step"]]
    trial_file = trials_dir / "lr0.1_wd0.0001.json"  # the one trial of --search=none
    resumed_from.append(json.loads(trial_file.read_text())["training"]["resumed_from_step"])
    assert max(resumed_from) > 0, "the rerun started from scratch instead of the checkpoint"


def _assert_same_result(got, expected):
    assert got["validation_score"] == pytest.approx(expected["validation_score"], abs=1e-6)
    assert got["test_score"] == pytest.approx(expected["test_score"], abs=1e-6)
    assert got["training"]["final_loss"] == pytest.approx(expected["training"]["final_loss"], rel=1e-4)


INTERRUPTED_LINE = re.compile(r"interrupted at step (\d+) of trial lr0\.1_wd0\.0001; the same command resumes from there")


@pytest.mark.slow
def test_sigterm_mid_trial_saves_that_step_and_the_rerun_resumes_from_it(tmp_path, uninterrupted):
    """Periodic checkpoints off: SIGTERM ends the run after the step in progress with that step's
    checkpoint, one line and exit 143, no record; the same command resumes from that step (not
    0) and ends as the uninterrupted run. A signal that lands before the first step (while the
    model is built) stops at step 0, so the signal is sent again later until a step is reached;
    one that lands after the last step (training is fast once built) is sent again earlier."""
    _, expected = uninterrupted
    command = _command(tmp_path) + ["--checkpoint_every=100000"]
    run_dir = tmp_path / "scratch" / "digits" / "tiny"
    started_training = run_dir / "trials" / "lr0.1_wd0.0001" / "tensorboard"
    step, delay = 0, 1.0
    while step == 0 or step >= SETTINGS["train_steps"]:
        shutil.rmtree(started_training.parent, ignore_errors=True)  # a fresh trial: its folder is made again
        process = subprocess.Popen(command, env=_env(), cwd=tmp_path, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.time() + 180
            while not started_training.exists() and time.time() < deadline and process.poll() is None:
                time.sleep(0.05)
            time.sleep(delay)
            assert process.poll() is None, "the run ended before it could be interrupted"
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=120)
        finally:
            process.kill()
        assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
        assert "Traceback" not in stderr
        lines = [line for line in stderr.splitlines() if line.startswith("interrupted")]
        assert len(lines) == 1 and INTERRUPTED_LINE.fullmatch(lines[0]), stderr[-3000:]
        assert not (run_dir / "record.json").exists() and not (run_dir / "trials" / "lr0.1_wd0.0001.json").exists()
        step = int(INTERRUPTED_LINE.fullmatch(lines[0]).group(1))
        delay = delay * 2 if step == 0 else delay / 4

    rerun = subprocess.run(command, env=_env(), timeout=240, cwd=tmp_path, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    trial = json.loads((run_dir / "trials" / "lr0.1_wd0.0001.json").read_text())
    assert trial["training"]["resumed_from_step"] == step
    _assert_same_result(json.loads((run_dir / "record.json").read_text()), expected)


def _binary(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "tfbench.finetune", *args], env=_env(), cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def test_help_shows_the_shared_flags():
    for binary in ("finetune", "scratch", "probe"):
        shown = subprocess.run([sys.executable, "-m", f"tfbench.{binary}", "--help"], env=_env(),
                               cwd=REPO, capture_output=True, text=True, timeout=60).stdout
        for flag in ("--model", "--dataset", "--output_dir", "--batch_size"):
            assert flag in shown, (binary, flag)


@pytest.mark.parametrize("flag, used_by", [("--learning_rate=0.1", "none"),
                                           ("--learning_rates=0.1,0.01", "grid")])
def test_a_flag_the_search_ignores_is_refused(tmp_path, flag, used_by):
    completed = _binary("--model=tiny", "--dataset=digits", f"--output_dir={tmp_path}", flag)
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and f"used only by search '{used_by}'" in lines[0], completed.stderr
    assert not os.listdir(tmp_path)


@pytest.mark.slow
def test_without_a_preset_the_binary_plans_the_papers_protocol(tmp_path):
    """The command users type first runs the paper's protocol and says what it will cost."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tfbench.finetune", "--model=tiny", "--dataset=digits",
         f"--output_dir={tmp_path}"], env=_env(), cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True)
    try:
        plan = next((line for line in process.stdout if line.startswith("plan:")), "")
    finally:
        process.kill()
        process.wait()
    assert plan.startswith("plan: 56 trials + 1 retrain on trainval, 20,000 steps of 256 each = "
                           "1,140,000 steps, 291,840,000 images; ≈ "), plan
    assert "on this machine" in plan and "measured: 5 warm-up steps" in plan, plan  # before the first trial
    experiment = Experiment(regime="finetune", model="tiny", dataset="digits", output_dir=str(tmp_path),
                            batch_size=protocol.BATCH_SIZE, settings=TrainingSettings.paper("finetune"))
    assert results.new_record(experiment, metric="top1", started_at="now")["protocol"]["name"] == "paper"


@pytest.mark.parametrize("binary", ["finetune", "probe"])
@pytest.mark.parametrize("args, expected", [
    (["--model=resnet5O", "--dataset=digits"], "did you mean: resnet50"),
    (["--model=tiny", "--dataset=digitz"], "did you mean: digits"),
    (["--model=tiny", "--dataset=digits", "--batch_size=0"], "--batch_size"),
])
def test_a_typo_answers_before_tensorflow_is_imported(tmp_path, binary, args, expected):
    """TensorFlow takes seconds to import: a wrong name must not wait for it (here it cannot load)."""
    fake = tmp_path / "no_tensorflow" / "tensorflow"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('tensorflow was imported')\n")
    env = dict(_env(), PYTHONPATH=os.pathsep.join([str(fake.parent), REPO]))
    completed = subprocess.run([sys.executable, "-m", f"tfbench.{binary}", *args,
                                f"--output_dir={tmp_path / 'runs'}"], env=env, cwd=REPO,
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert completed.stderr.strip().splitlines() == [next(
        line for line in completed.stderr.splitlines() if line.startswith("error:"))]
    assert expected in completed.stderr and "tensorflow was imported" not in completed.stderr

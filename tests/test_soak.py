"""Soak: a search of 10 trials killed again and again ends with the records of an uninterrupted run.

`python -m tfbench.scratch` (tiny backbone, 8x8 digits at 16 px) is killed six times, SIGTERM and
SIGKILL in turn, at random moments of its trials (validation is scored every 3 of a trial's 9
steps, so many land during evaluation) and once during the retrain on trainval; each time the
same command is started again. No kill may leave a half-written record, and the finished run's
records must equal, field by field apart from timings and where training resumed, those of a
run that was never interrupted. Memory: the uninterrupted run's resident set may not grow from
its third trial to its last by more than MEMORY_SLACK_MB. Measured when written: about 10 MB a
trial (750 -> 828 MB over trials 2 to 10), which the slack lets through; it catches a kept model
per trial (~100 MB each at real sizes). Tighten it once a run builds its model once.
"""

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRIALS = 10
# Where a record depends on how the run went, not on what it computed.
VOLATILE = {"timings", "started_at", "finished_at", "wall_seconds", "images_per_second", "resumed_from_step",
            "output_dir", "tensorboard_dir", "seconds", "host", "pid"}
MEMORY_SLACK_MB = 150


def _command(output_dir):
    return [sys.executable, "-m", "tfbench.scratch", "--model=tiny", "--dataset=digits", "--image_size=16",
            "--batch_size=8", "--search=grid", "--learning_rates=0.01,0.02,0.05,0.1,0.2",
            "--weight_decays=0,0.0001", "--train_steps=9", "--bn_momentum=0.9", "--checkpoint_every=4",
            "--eval_every=3", f"--output_dir={output_dir}"]


class Run:
    """The command in a subprocess, its output lines collected as they come."""

    def __init__(self, output_dir):
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
        self.process = subprocess.Popen(_command(output_dir), env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        self.stdout, self.stderr, self.rss_mb = [], [], []
        self._readers = [threading.Thread(target=self._read, args=(stream, lines), daemon=True)
                         for stream, lines in ((self.process.stdout, self.stdout), (self.process.stderr, self.stderr))]
        for reader in self._readers:
            reader.start()

    def _read(self, stream, lines):
        for line in stream:
            lines.append(line)
            if "trial " in line and ": ok" in line:  # a trial ended: note the resident set size
                self.rss_mb.append(_rss_mb(self.process.pid))

    def wait_for(self, text, timeout=240):
        deadline = time.time() + timeout
        while time.time() < deadline and self.process.poll() is None:
            if any(text in line for line in self.stdout):
                return True
            time.sleep(0.05)
        return False

    def finish(self, timeout=300):
        self.process.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=10)
        return self.process.returncode


def _rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except FileNotFoundError:
        return None
    return None


def _records(output_dir):
    """Every JSON record under the run folder, by path relative to it; each must parse."""
    found = {}
    for folder, _, names in os.walk(output_dir):
        for name in names:
            if name.endswith(".json") and "checkpoints" not in folder:
                path = os.path.join(folder, name)
                with open(path) as handle:
                    found[os.path.relpath(path, output_dir)] = json.load(handle)  # never half-written
    return found


def _essence(value):
    if isinstance(value, dict):
        return {key: _essence(item) for key, item in value.items() if key not in VOLATILE}
    if isinstance(value, list):
        return [_essence(item) for item in value]
    return value


@pytest.mark.slow
def test_a_search_killed_many_times_ends_with_the_records_of_an_uninterrupted_one(tmp_path):
    reference = Run(tmp_path / "uninterrupted")
    assert reference.finish() == 0, "".join(reference.stderr)[-3000:]
    expected = _records(tmp_path / "uninterrupted")
    run_record = os.path.join("scratch", "digits", "tiny", "record.json")
    assert len([path for path in expected if "trials" in path]) == TRIALS and run_record in expected

    rss = [value for value in reference.rss_mb if value is not None]
    assert len(rss) >= TRIALS - 1
    assert max(rss[2:]) - rss[2] < MEMORY_SLACK_MB, f"resident set (MB) after each trial: {rss}"

    rng = random.Random(0)
    output_dir = tmp_path / "interrupted"
    kills = [signal.SIGTERM, signal.SIGKILL] * 3
    for index, number in enumerate(kills):
        run = Run(output_dir)
        phase = "retraining on trainval" if index == len(kills) - 1 else ": training on train"
        assert run.wait_for(phase), "".join(run.stdout + run.stderr)[-3000:]
        time.sleep(rng.uniform(0.2, 4.0))
        if run.process.poll() is not None:
            break  # it finished first
        run.process.send_signal(number)
        code = run.finish()
        stderr = "".join(run.stderr)
        if number == signal.SIGTERM and code != 0:
            assert code == 128 + signal.SIGTERM, stderr[-3000:]
            assert "Traceback" not in stderr
            assert [line for line in run.stderr if line.startswith("interrupted ")], stderr[-3000:]
        if code != 0:  # no record of a run that did not finish; a kill that lands while a finished
            # run exits finds its record whole, the uninterrupted run's
            record = _records(output_dir).get(run_record)
            assert record is None or _essence(record) == _essence(expected[run_record])
    final = Run(output_dir)
    assert final.finish() == 0, "".join(final.stderr)[-3000:]

    got = _records(output_dir)
    assert sorted(got) == sorted(expected)
    for path in expected:
        assert _essence(got[path]) == _essence(expected[path]), path

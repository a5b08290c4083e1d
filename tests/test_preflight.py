"""Fail before the work: an unusable output folder, image size, disk or dataset stops a run in one
line, exit 2, before anything is trained or written; --dry_run plans and writes nothing."""

import collections
import os
import subprocess
import sys
import tempfile

import pytest

from tfbench import preflight
from tfbench.datasets import DatasetNotPreparedError
from tfbench.experiment import Experiment
from tfbench.settings import ProbeSettings, TrainingSettings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DiskUsage = collections.namedtuple("DiskUsage", "total used free")


def _binary(binary, *args):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    models = ["--models=tiny", "--datasets=digits", "--regimes=probe"] if binary == "sweep" else [
        "--model=tiny", "--dataset=digits"]
    return subprocess.run([sys.executable, "-m", f"tfbench.{binary}", *models, *args],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=120)


def _unwritable_folder(tmp_path):
    """A folder no write succeeds in: read-only by its mode, or (root ignores modes) /sys/fs."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    for candidate in (str(folder), "/sys/fs"):
        try:
            handle, path = tempfile.mkstemp(dir=candidate)
        except OSError:
            return candidate
        os.close(handle)
        os.unlink(path)
    pytest.skip("no folder refuses writes here")


def _one_error_line(completed, expected):
    assert completed.returncode == 2, completed.stderr[-2000:]
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], completed.stderr[-2000:]


@pytest.mark.parametrize("binary", ["finetune", "probe", "sweep"])
def test_an_output_folder_under_a_file_fails_at_once_and_writes_nothing(tmp_path, binary):
    blocker = tmp_path / "results.txt"
    blocker.write_text("not a folder")
    completed = _binary(binary, f"--output_dir={blocker}/runs")
    _one_error_line(completed, f"{blocker} is a file, not a folder")
    assert os.listdir(tmp_path) == ["results.txt"] and blocker.read_text() == "not a folder"


def test_a_read_only_output_folder_fails_at_once_and_writes_nothing(tmp_path):
    folder = _unwritable_folder(tmp_path)
    before = os.listdir(folder)
    _one_error_line(_binary("finetune", f"--output_dir={folder}/runs"), "is not writable")
    assert os.listdir(folder) == before


@pytest.mark.slow
def test_dry_run_plans_estimates_and_writes_nothing(tmp_path):
    completed = _binary("finetune", f"--output_dir={tmp_path}/runs", "--dry_run")
    assert completed.returncode == 0, completed.stderr[-2000:]
    plan = [line for line in completed.stdout.splitlines() if line.startswith("plan:")]
    assert len(plan) == 1 and "1,140,000 steps" in plan[0] and "≈" in plan[0] and "ms/step" in plan[0], completed.stdout
    assert os.listdir(tmp_path) == []


def _experiment(tmp_path, regime="finetune", model="resnet50", dataset="dtd", **fields):
    settings = ProbeSettings() if regime == "probe" else TrainingSettings.paper(regime)
    return Experiment(regime=regime, model=model, dataset=dataset, output_dir=str(tmp_path), settings=settings,
                      **fields)


def test_free_disk_must_hold_two_checkpoints_of_weights_and_momentum(tmp_path):
    # ResNet-50's 25.6 M parameters and a new head of (2,048 + 1) x 47 DTD classes, float32, weights
    # and one momentum slot, two checkpoints at once (the next written before the last is deleted)
    need = (25.6e6 + 2049 * 47) * 4 * 2 * 2 + 64 * 2**20
    experiment = _experiment(tmp_path)
    assert preflight.needed_bytes(experiment) == int(need)
    seen = []

    def disk(free):
        return lambda path: seen.append(path) or DiskUsage(10 * need, 0, free)

    preflight.check_free_disk(experiment, disk(int(need)))
    assert seen == [str(tmp_path)]  # the run folder's nearest existing part
    with pytest.raises(preflight.PreflightError, match=r"checkpoints of resnet50: 4\d\d.\d MiB needed in .*, 4\d\d.\d MiB free"):
        preflight.check_free_disk(experiment, disk(int(need) - 1))


def test_a_probe_needs_room_for_its_features_in_the_cache(tmp_path):
    experiment = _experiment(tmp_path, regime="probe", cache_dir=str(tmp_path / "features"))
    examples = 3760 + 1880  # DTD: train + val + test
    assert preflight.needed_bytes(experiment) == examples * (2048 + 47) * 4 + 64 * 2**20


@pytest.mark.parametrize("size, fails", [(70, True), (71, False)])
def test_image_size_below_what_the_network_builds_at_is_refused_as_keras_refuses_it(tmp_path, size, fails):
    import keras

    experiment = _experiment(tmp_path, model="xception", image_size=size)
    if fails:
        with pytest.raises(preflight.PreflightError, match="--image_size=70 is too small for xception"):
            preflight.check_image_size(experiment)
        with pytest.raises(ValueError):
            keras.applications.Xception(include_top=False, weights=None, input_shape=(size, size, 3))
    else:
        preflight.check_image_size(experiment)
        keras.applications.Xception(include_top=False, weights=None, input_shape=(size, size, 3))


def test_a_dataset_that_is_not_prepared_fails_before_the_work(tmp_path):
    experiment = _experiment(tmp_path, model="tiny", dataset="cifar10", data_dir=str(tmp_path / "tfds"))
    with pytest.raises(DatasetNotPreparedError, match="python -m tfbench.prepare"):
        preflight.check(experiment, lambda path: DiskUsage(0, 0, 2**40))
    assert os.listdir(tmp_path) == []

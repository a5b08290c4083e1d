"""ImageNet top-1 measured on a fake TFDS imagenet2012 with the real EfficientNet-Lite0 weights.

The fake is built by TFDS's own imagenet2012 builder from a validation archive in the manual
folder, as a user's would be, holding scikit-learn's two sample photos under labels the real
weights predict for them through tfbench's evaluation transform (china.jpg: bell_cote, 0.35 and
three times the runner-up; flower.jpg: daisy, first of its top-5) and china.jpg once more under
a wrong label (daisy). The builder's only stand-in is the validation label list: the official one
labels the first images of the 50,000 otherwise. Top-1 is therefore 2 of 3.
"""

import json
import os
import subprocess
import sys
import tarfile
from unittest import mock

import pytest
import sklearn.datasets

from tfbench import backbones, imagenet_eval
from tfbench.datasets import DatasetNotPreparedError, imagenet
from tfbench.registry import UnknownNameError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTOS = os.path.join(os.path.dirname(sklearn.datasets.__file__), "images")
BELL_COTE, DAISY = "n02825657", "n11939491"  # WordNet ids: ImageNet classes 442 and 985
VALIDATION = {  # archive member -> (photo, label)
    "ILSVRC2012_val_00000001.JPEG": ("china.jpg", BELL_COTE),
    "ILSVRC2012_val_00000002.JPEG": ("flower.jpg", DAISY),
    "ILSVRC2012_val_00000003.JPEG": ("china.jpg", DAISY),  # deliberately wrong
}
LITE0 = "efficientnet_lite0"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """$TFBENCH_CACHE for this module: the converted Lite0 weights and the store."""
    root = str(tmp_path_factory.mktemp("cache"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TFBENCH_CACHE", root)
        yield root


@pytest.fixture(scope="module")
def fake_imagenet(tmp_path_factory):
    """A TFDS data dir holding imagenet2012's validation split of the three VALIDATION photos."""
    from tensorflow_datasets.datasets.imagenet2012 import imagenet_common

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    manual = imagenet.manual_dir(data_dir)
    os.makedirs(manual)
    with tarfile.open(os.path.join(manual, imagenet.VALIDATION_ARCHIVE), "w") as archive:
        for member, (photo, _) in VALIDATION.items():
            archive.add(os.path.join(PHOTOS, photo), arcname=member)
    labels = {member: label for member, (_, label) in VALIDATION.items()}
    with mock.patch.object(imagenet_common, "get_validation_labels", return_value=labels):
        imagenet.prepare("imagenet2012", data_dir)
    return data_dir


@pytest.mark.slow
def test_top1_of_the_real_weights_on_real_photos_is_stored_and_read_back(fake_imagenet, cache_dir):
    assert imagenet_eval.measured_top1(LITE0) is None
    measurement = imagenet_eval.measure(LITE0, "imagenet2012", fake_imagenet)
    assert (measurement["correct"], measurement["examples"]) == (2, 3)
    assert measurement["top1"] == pytest.approx(2 / 3)
    assert measurement["complete"] and measurement["image_size"] == 224
    assert "224x224" in measurement["preprocessing"] and "no crop" in measurement["preprocessing"]
    assert measurement["weights_fingerprint"] == backbones.weights_fingerprint(LITE0, pretrained=True)
    assert measurement["tfds"] == {"dataset": "imagenet2012", "version": "5.1.0", "split": "validation"}

    path = imagenet_eval.store(measurement)
    assert path.startswith(os.path.join(cache_dir, imagenet_eval.STORE_DIR, "imagenet2012"))
    with open(path) as handle:
        assert json.load(handle) == measurement
    assert imagenet_eval.measured_top1(LITE0) == measurement
    assert imagenet_eval.measured_top1(LITE0, split="imagenet_v2") is None
    # A run of the model now enters the analysis with the measured value.
    from tfbench import runs
    from tfbench.experiment import Experiment
    from tfbench.settings import ProbeSettings

    run = Experiment(regime="probe", model=LITE0, dataset="digits", output_dir="x", settings=ProbeSettings())
    entered = runs.imagenet_top1(run)
    assert entered["measured"] and entered["value"] == pytest.approx(2 / 3)
    assert "measured by tfbench.imagenet_eval on imagenet2012 (3 images" in entered["source"]
    # A report over records that state the published figure uses the measurement made since.
    from tfbench.report import build as report

    published = {"experiment": run.to_dict(), "finished_at": "2026-01-01T00:00:00+00:00",
                 "imagenet_top1": {"value": 0.751, "source": "model card", "measured": False}}
    used = report.imagenet_top1_of_models([published], report.registered_imagenet_top1,
                                          report.measured_imagenet_top1)[LITE0]
    assert used.measured and used.value == pytest.approx(2 / 3)
    # Other weights under the same name: the stored value is not theirs.
    with mock.patch.object(backbones, "weights_fingerprint", return_value="lite0:other-weights"):
        assert imagenet_eval.measured_top1(LITE0) is None
    with open(path, "w") as handle:
        handle.write("{")  # damaged: absent
    assert imagenet_eval.measured_top1(LITE0) is None


@pytest.mark.slow
def test_a_part_of_the_set_is_measured_but_never_stored(fake_imagenet, cache_dir):
    measurement = imagenet_eval.measure(LITE0, "imagenet2012", fake_imagenet, max_examples=2,
                                        batch_size=1)
    assert (measurement["examples"], measurement["split_examples"]) == (2, 3)
    assert not measurement["complete"]
    with pytest.raises(ValueError, match="read 2 of 3 examples"):
        imagenet_eval.store(measurement)


def test_unprepared_sets_name_the_manual_file_and_the_command_and_write_nothing(tmp_path):
    with pytest.raises(DatasetNotPreparedError) as error:
        imagenet.load("imagenet2012", str(tmp_path))
    message = str(error.value)
    assert "\n" not in message and imagenet.VALIDATION_ARCHIVE in message
    assert f"python -m tfbench.imagenet_eval --split=imagenet2012 --prepare --data_dir={tmp_path}" in message
    with pytest.raises(DatasetNotPreparedError, match="--split=imagenet_v2 --prepare"):
        imagenet.load("imagenet_v2", str(tmp_path))
    with pytest.raises(imagenet.ManualDownloadMissingError, match=imagenet.VALIDATION_ARCHIVE):
        imagenet.prepare("imagenet2012", str(tmp_path))
    # Offline (the tests' sockets are closed), imagenet_v2 names the archive to fetch elsewhere.
    with pytest.raises(imagenet.ManualDownloadMissingError,
                       match=r"save https://\S+/imagenetv2-matched-frequency.tar.gz as .*manual"):
        imagenet.prepare("imagenet_v2", str(tmp_path))
    with pytest.raises(UnknownNameError, match="imagenet2012"):
        imagenet.load("imagenet2013", str(tmp_path))
    assert not any(tmp_path.iterdir())


def test_models_without_an_imagenet_head_are_refused_in_one_line(tmp_path):
    keras_file = tmp_path / "features.keras"
    keras_file.write_bytes(b"")
    for model in ("inception_v1", "tiny", "hub:https://tfhub.dev/x/feature_vector/1", str(keras_file)):
        with pytest.raises(backbones.NoImageNetClassifierError) as error:
            backbones.build_imagenet_classifier(model)
        assert "cannot be measured" in str(error.value) and "imagenet_top1" in str(error.value)
        assert "\n" not in str(error.value)


def test_keras_application_classifier_weights_offline_fail_in_one_line():
    with pytest.raises(backbones.WeightsUnavailableError, match="mobilenet_v2.*KERAS_HOME"):
        backbones.build_imagenet_classifier("mobilenet_v2")


def _run(*flags, cache_dir):
    env = dict(os.environ, TFBENCH_CACHE=cache_dir, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "tfbench.imagenet_eval", *flags], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("flags, expected", [
    (["--model=efficientnet_lite0", "--data_dir={empty}"], "is not prepared"),
    (["--model=efficientnet_lite9", "--data_dir={fake}"], "efficientnet_lite0"),
])
def test_binary_bad_input_is_one_line_exit_2_and_nothing_stored(flags, expected, fake_imagenet, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    store = tmp_path / "cache"
    flags = [flag.format(empty=empty, fake=fake_imagenet) for flag in flags]
    result = _run(*flags, cache_dir=str(store))
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert not store.exists() and not any(empty.iterdir())

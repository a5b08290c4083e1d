"""The probe regime end to end: library run on digits, then the binary as a user runs it."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfbench import backbones, features, predictions, protocol
from tfbench.regimes import frozen, probe
from tfbench.experiment import Experiment
from tfbench.settings import ProbeSettings, Runtime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_probe_on_digits_beats_chance_and_second_run_is_a_cache_hit(tmp_path, monkeypatch):
    experiment = Experiment(regime="probe", model="tiny", dataset="digits", output_dir=str(tmp_path / "runs"),
                            cache_dir=str(tmp_path / "cache"), settings=ProbeSettings(l2_search="fast"))
    record = probe.run(experiment, Runtime())
    assert record["status"] == "ok"
    assert record["test_score"] > 0.6  # 10 classes: chance is 0.1
    assert record["details"]["examples"] == {"train": 1151, "val": 287, "test": 359}
    tried = [t["hyperparameters"]["l2"] for t in record["trials"]]
    assert all("validation_score" in t for t in record["trials"])  # one name in every regime
    assert record["hyperparameters"]["l2"] in tried and len(tried) >= 10
    assert record["timings"]["images_per_second"] > 0
    stored = predictions.read(experiment.run_dir(), record)  # what significance tests resample
    assert len(stored) == 359 and stored.score() == record["test_score"]
    logged = _scalars(record["tensorboard_dir"])  # the L2 path, for TensorBoard
    grid = list(np.log10(protocol.PROBE_L2_GRID))
    expected = {grid.index(min(grid, key=lambda g: abs(g - np.log10(t["hyperparameters"]["l2"])))):
                t["validation_score"] for t in record["trials"]}
    assert logged["l2_search/validation_top1"] == pytest.approx(expected)
    assert logged["l2_search/log10_l2"] == pytest.approx({step: grid[step] for step in expected})

    def no_build(*args, **kwargs):
        raise AssertionError("the backbone was built although every split is cached")

    monkeypatch.setattr(backbones, "build", no_build)
    again = probe.run(experiment, Runtime())
    assert again["details"]["feature_cache_hits"] == ["train", "val", "test"]
    assert again["test_score"] == pytest.approx(record["test_score"])


def _scalars(log_dir):
    """{tag: {step: value}} of the scalar summaries in a TensorBoard folder, read by TensorBoard."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(log_dir, size_guidance={"tensors": 0})
    events.Reload()
    return {tag: {e.step: float(tf.make_ndarray(e.tensor_proto)) for e in events.Tensors(tag)}
            for tag in events.Tags()["tensors"]}


def _run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "tfbench.probe", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def _error_lines(stderr):
    """stderr without TensorFlow's C++ start-up log lines."""
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.mark.slow
def test_binary_runs_skips_and_overwrites(tmp_path):
    args = ["--model=tiny", "--dataset=digits", f"--output_dir={tmp_path}/runs", f"--cache_dir={tmp_path}/cache"]
    first = _run(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    summary = first.stdout.strip().splitlines()[-1]
    assert summary.startswith("probe: model=tiny dataset=digits status=ok test_top1=")
    record_file = tmp_path / "runs" / "probe" / "digits" / "tiny" / "record.json"
    record = json.loads(record_file.read_text())
    assert record["test_score"] > 0.6
    second = _run(*args)
    assert second.returncode == 0 and "finished earlier" in second.stdout
    conflict = _run(*args, "--l2_search=fast")
    assert conflict.returncode == 2
    assert len(_error_lines(conflict.stderr)) == 1 and "--overwrite" in conflict.stderr
    assert json.loads(record_file.read_text()) == record  # nothing was rewritten


@pytest.mark.parametrize("args, expected", [
    (["--model=resnet5O", "--dataset=digits"], "did you mean: resnet50"),
    (["--model=tiny", "--dataset=digitz"], "did you mean: digits"),
    (["--model=tiny", "--dataset=digits", "--precision=fp8"], "auto|float32|mixed_float16|mixed_bfloat16"),
    (["--model=tiny", "--dataset=digits", "--l2_search=exhaustive"], "paper|fast"),
    (["--model=tiny"], "--dataset is required"),
])
def test_bad_input_is_one_line_and_nonzero(tmp_path, args, expected):
    completed = _run(*args, f"--output_dir={tmp_path}")
    assert completed.returncode == 2
    lines = _error_lines(completed.stderr)
    assert len(lines) == 1 and expected in lines[0], completed.stderr[-1500:]
    assert not os.listdir(tmp_path)  # nothing half-written


def test_lists_print_the_registries():
    models = _run("--model=list")
    assert models.returncode == 0
    for name in ("resnet50", "mobilenet_v2", "inception_v1", "efficientnet_lite0", "tiny"):
        assert f"\n{name} " in models.stdout
    datasets = _run("--dataset=list")
    for name in ("food101", "voc2007", "digits", "fashion_mnist"):
        assert f"\n{name} " in datasets.stdout


def test_random_init_features_are_keyed_apart_and_by_seed():
    def key(**fields):
        experiment = Experiment(regime="probe", model="tiny", dataset="digits", output_dir="x",
                                settings=ProbeSettings(**fields.pop("settings", {})), **fields)
        return frozen.cache_components(experiment, "train", "float32")["weights"]

    imagenet, random0 = key(), key(settings={"init": "random"})
    assert random0 != imagenet and random0.endswith(":seed0")
    assert key(settings={"init": "random"}, seed=1) != random0
    assert key(seed=1) == imagenet  # pretrained weights do not depend on the seed


@pytest.mark.slow
def test_a_damaged_feature_cache_heals_with_one_warning(tmp_path, capsys):
    """A cache entry truncated after a finished run (a full disk, a bad copy): the next run warns
    once, extracts that split again and ends with the same result."""
    experiment = Experiment(regime="probe", model="tiny", dataset="digits", output_dir=str(tmp_path / "runs"),
                            cache_dir=str(tmp_path / "cache"), settings=ProbeSettings(l2_search="fast"))
    first = probe.run(experiment, Runtime())
    train_entry = features.FeatureCache(experiment.cache_dir).entry_dir(
        features.cache_key(frozen.cache_components(experiment, "train", first["details"]["precision"])))
    array = os.path.join(train_entry, "features.npy")
    os.truncate(array, os.path.getsize(array) - 100)
    capsys.readouterr()
    again = probe.run(experiment, Runtime())
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and train_entry in warned[0], warned
    assert again["status"] == "ok" and again["details"]["feature_cache_hits"] == ["val", "test"]
    assert again["test_score"] == pytest.approx(first["test_score"])
    assert again["hyperparameters"] == first["hyperparameters"]


@pytest.mark.parametrize("layout, expected", [
    (None, "does not exist"),
    pytest.param({"cats/a.png": b"", "dogs/README.txt": b"notes"},
                 "2 problem(s): class folder 'dogs' has no images", marks=pytest.mark.slow),
])
def test_a_bad_folder_dataset_is_one_line_exit_2_and_nothing_recorded(tmp_path, layout, expected):
    data = tmp_path / "data"
    for name, content in (layout or {}).items():
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_bytes(content)
    completed = _run("--model=tiny", f"--dataset=folder:{data}", f"--output_dir={tmp_path / 'runs'}",
                     f"--cache_dir={tmp_path / 'cache'}")
    assert completed.returncode == 2, completed.stderr[-2000:]
    lines = _error_lines(completed.stderr)
    assert len(lines) == 1 and expected in lines[0], completed.stderr[-2000:]
    assert "Traceback" not in completed.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_skip_bad_images_leaves_an_unreadable_image_out_and_counts_it(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("test", 4)):
        for label, colour in (("red", 0), ("blue", 2)):
            folder = tmp_path / "data" / split / label
            folder.mkdir(parents=True)
            for index in range(count):
                pixels = rng.integers(0, 60, (12, 12, 3), dtype=np.uint8)
                pixels[..., colour] += 180
                Image.fromarray(pixels).save(folder / f"{index}.png")
    (tmp_path / "data" / "train" / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    args = ["--model=tiny", f"--dataset=folder:{tmp_path / 'data'}", "--l2_search=fast",
            f"--output_dir={tmp_path / 'runs'}", f"--cache_dir={tmp_path / 'cache'}"]
    refused = _run(*args)
    assert refused.returncode == 2 and "broken.png" in _error_lines(refused.stderr)[0]
    completed = _run(*args, "--skip_bad_images")
    assert completed.returncode == 0, completed.stderr[-2000:]
    record_path, = (tmp_path / "runs" / "probe").glob("*/tiny/record.json")
    record = json.loads(record_path.read_text())
    assert record["status"] == "ok" and record["skipped_images"] == 1
    assert record["experiment"]["skip_bad_images"] is True


@pytest.mark.slow
def test_a_keras_model_described_by_flags(tmp_path):
    import keras

    images = keras.Input((16, 16, 3))
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 3)(images))
    keras.Model(images, features).save(tmp_path / "mine.keras")
    args = [f"--model={tmp_path / 'mine.keras'}", "--dataset=digits", "--l2_search=fast",
            f"--output_dir={tmp_path / 'runs'}", f"--cache_dir={tmp_path / 'cache'}"]
    registered = _run("--model=tiny", *args[1:], "--imagenet_top1=0.75", "--top1_source=x")
    assert registered.returncode == 2 and "'tiny' is a registered model" in _error_lines(registered.stderr)[0]
    missing_source = _run(*args, "--imagenet_top1=0.75")
    assert missing_source.returncode == 2 and "needs a top1_source" in _error_lines(missing_source.stderr)[0]
    completed = _run(*args, "--imagenet_top1=0.75", "--top1_source=our measurement",
                     "--display_name=Mine", "--input_range=-1,1")
    assert completed.returncode == 0, completed.stderr[-2000:]
    record_path, = (tmp_path / "runs" / "probe" / "digits").glob("*/record.json")
    record = json.loads(record_path.read_text())
    assert record["imagenet_top1"]["value"] == 0.75 and record["experiment"]["display_name"] == "Mine"


@pytest.mark.slow
def test_a_stop_during_extraction_keeps_the_finished_splits_and_writes_no_record(tmp_path, monkeypatch):
    """A stop requested while the val features are extracted (train's are done): Interrupted names
    the split, train's features are in the cache, nothing of val and no record is written; the
    rerun extracts only what is missing."""
    from tfbench import interruption, runs

    experiment = Experiment(regime="probe", model="tiny", dataset="digits", output_dir=str(tmp_path / "runs"),
                            cache_dir=str(tmp_path / "cache"), settings=ProbeSettings(l2_search="fast"))
    real_extract = features.extract

    def extract_then_stop(model, dataset, **options):
        if options["description"] == "features val":
            interruption.request_stop("test")
        return real_extract(model, dataset, **options)

    monkeypatch.setattr(features, "extract", extract_then_stop)
    try:
        with pytest.raises(interruption.Interrupted) as stopped:
            runs.run_experiment(experiment, probe.run, Runtime())
    finally:
        interruption.clear()
    assert stopped.value.line() == ("interrupted while extracting features val (finished splits are cached); "
                                    "the same command resumes from there")
    assert not os.path.exists(os.path.join(experiment.run_dir(), "record.json"))
    monkeypatch.setattr(features, "extract", real_extract)
    record = runs.run_experiment(experiment, probe.run, Runtime()).record
    assert record["status"] == "ok" and record["details"]["feature_cache_hits"] == ["train"]

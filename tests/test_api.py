"""The Python API (tfbench.probe, .finetune, .scratch, .load_results): the binaries' files, skips and
one-line errors, from a notebook."""

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

import tfbench
import tfbench.api  # noqa: F401  (what the names of `tfbench` load: a dependency for BUILD)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What differs between two runs of the same experiment: when and where, how long, and which cache
# entries were already there.
VOLATILE = ("started_at", "finished_at", "timings", "host", "output_dir", "feature_cache_hits", "seconds",
            "images_per_second", "wall_seconds", "log_dir")


def _env():
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")


def test_import_is_cheap_and_the_binaries_do_not_shadow_the_functions():
    code = ("import sys, tfbench; heavy = [m for m in ('tensorflow', 'keras') if m in sys.modules]; "
            "import tfbench.probe, tfbench.finetune, tfbench.scratch; "
            "print(heavy, [callable(f) and not isinstance(f, type(sys)) for f in "
            "(tfbench.probe, tfbench.finetune, tfbench.scratch)], sys.modules['tfbench.probe'].main.__module__)")
    shown = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120)
    assert shown.stdout.split("\n")[0] == "[] [True, True, True] tfbench.probe", shown.stderr[-2000:]


@pytest.mark.parametrize("call, error, expected", [
    (lambda out: tfbench.probe("tiny", "digits", output_dir=out, l2_serch="fast"),
     tfbench.InvalidSettingError, "unknown probe setting 'l2_serch'; did you mean: l2_search"),
    (lambda out: tfbench.finetune("tiny", "digits", output_dir=out, l2_search="fast"),
     tfbench.InvalidSettingError, "unknown finetune setting 'l2_search'"),
    (lambda out: tfbench.finetune("tiny", "digits", output_dir=out, search="none", learning_rate=0.1),
     tfbench.InvalidSettingError, "search 'none' trains one configuration: give both learning_rate and weight_decay"),
    (lambda out: tfbench.scratch("tiny", "digits", output_dir=out, learning_rate=0.1),
     tfbench.InvalidSettingError, "learning_rate=0.1 is used only by search 'none'"),
    (lambda out: tfbench.probe("resnet5O", "digits", output_dir=out),
     tfbench.UnknownNameError, "did you mean: resnet50"),
    (lambda out: tfbench.probe("tiny", "digitz", output_dir=out),
     tfbench.UnknownNameError, "did you mean: digits"),
    (lambda out: tfbench.probe("tiny", "digits", output_dir=out, precision="fp8"),
     tfbench.InvalidSettingError, "unknown precision 'fp8'"),
    (lambda out: tfbench.probe(3, "digits", output_dir=out),
     tfbench.InvalidSettingError, "got a int"),
])
def test_bad_input_raises_the_binarys_one_line_error_and_writes_nothing(tmp_path, call, error, expected):
    out = str(tmp_path / "runs")
    with pytest.raises(error) as raised:
        call(out)
    assert expected in str(raised.value) and "\n" not in str(raised.value)
    assert not os.path.exists(out)


def _record(regime, dataset, model, score, status="ok"):
    return {"experiment": {"regime": regime, "dataset": dataset, "model": model, "seed": 0},
            "status": status, "metric": "top1", "test_score": score, "hyperparameters": {"l2": 0.5},
            "timings": {"wall_seconds": 1.5}}


@pytest.fixture
def two_roots(tmp_path):
    """Records under two output roots, one nested a level deeper (a sweep's runs/mini)."""
    for root, record in ((tmp_path, _record("probe", "digits", "tiny", 0.75)),
                         (tmp_path / "mini", _record("finetune", "dtd", "resnet50", None, "failed"))):
        folder = root / record["experiment"]["regime"] / record["experiment"]["dataset"] / record["experiment"]["model"]
        folder.mkdir(parents=True)
        (folder / "record.json").write_text(json.dumps(record))
    return tmp_path


def test_load_results_without_pandas_is_a_list_of_rows(two_roots, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas raises ImportError
    rows = tfbench.load_results(str(two_roots))
    got = sorted((row["regime"], row["dataset"], row["model"], row["status"], row["test_score"],
                  json.loads(row["hyperparameters"])["l2"], row["wall_seconds"]) for row in rows)
    assert got == [("finetune", "dtd", "resnet50", "failed", None, 0.5, 1.5),
                   ("probe", "digits", "tiny", "ok", 0.75, 0.5, 1.5)]
    with pytest.raises(FileNotFoundError, match="no output folder"):
        tfbench.load_results(str(two_roots / "typo"))


def test_load_results_hands_the_rows_to_pandas_when_installed(two_roots, monkeypatch):
    fake = types.ModuleType("pandas")
    fake.DataFrame = lambda rows: ("frame", rows)
    monkeypatch.setitem(sys.modules, "pandas", fake)
    kind, rows = tfbench.load_results(str(two_roots))
    assert kind == "frame" and sorted(row["model"] for row in rows) == ["resnet50", "tiny"]


def test_load_results_with_real_pandas(two_roots):
    pytest.importorskip("pandas")
    frame = tfbench.load_results(str(two_roots))
    assert sorted(frame["model"]) == ["resnet50", "tiny"]
    assert frame.set_index("model").loc["tiny", "test_score"] == 0.75


def _feature_model(seed):
    """A small Keras feature extractor with a static 16-pixel input; its names are Keras's defaults."""
    import keras

    keras.utils.set_random_seed(seed)
    images = keras.Input((16, 16, 3))
    features = keras.layers.Conv2D(8, 3, activation="relu")(images)
    return keras.Model(images, keras.layers.GlobalAveragePooling2D()(features))


@pytest.fixture
def small_folder(tmp_path):
    """folder:PATH with two classes of 15 images each, told apart by brightness."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, level in (("dark", 40), ("light", 200)):
        (tmp_path / "images" / label).mkdir(parents=True)
        for index in range(15):
            pixels = np.clip(rng.normal(level, 30, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / label / f"{index}.png")
    return f"folder:{tmp_path / 'images'}"


def test_a_models_digest_is_its_architecture_and_weights_not_the_names_keras_made_up():
    from tfbench.backbones import user_models

    first, rebuilt, other_weights = _feature_model(seed=1), _feature_model(seed=1), _feature_model(seed=2)
    assert rebuilt.layers[1].name != first.layers[1].name  # conv2d, then conv2d_1
    assert user_models.model_digest(rebuilt) == user_models.model_digest(first)
    assert user_models.model_digest(other_weights) != user_models.model_digest(first)
    import keras

    keras.utils.set_random_seed(1)
    images = keras.Input((16, 16, 3))
    wider = keras.layers.Conv2D(8, 3, activation="tanh")(images)  # same weights, another activation
    other_architecture = keras.Model(images, keras.layers.GlobalAveragePooling2D()(wider))
    assert user_models.model_digest(other_architecture) != user_models.model_digest(first)


def test_a_model_object_with_a_mistyped_dataset_leaves_nothing_behind(tmp_path):
    out = tmp_path / "runs"
    with pytest.raises(tfbench.UnknownNameError, match="did you mean: digits"):
        tfbench.probe(_feature_model(seed=1), "digitz", output_dir=str(out))
    assert not out.exists()


@pytest.mark.slow
def test_a_keras_model_object_is_saved_once_and_its_runs_are_found_again_by_content(tmp_path, small_folder):
    from tfbench.backbones import user_models
    from tfbench.experiment import path_component

    out = str(tmp_path / "runs")
    model = _feature_model(seed=1)
    result = tfbench.probe(model, small_folder, output_dir=out, l2_search="fast", input_range=[0, 1],
                           display_name="My net", cache_dir=str(tmp_path / "cache"))
    name = f"functional-{user_models.model_digest(model)[:12]}"
    assert (result.status, result.model, result.skipped) == ("ok", name, False)
    assert result.record_path == os.path.join(out, "probe", path_component(small_folder), name, "record.json")
    with open(result.record_path) as handle:
        assert json.load(handle) == json.loads(json.dumps(result.record))
    assert result.record["experiment"]["display_name"] == "My net"
    assert (result.test_score, result.metric) == (result.record["test_score"], result.record["metric"])
    assert os.listdir(os.path.join(out, "models")) == [name + ".keras"]

    rebuilt = _feature_model(seed=1)  # same weights; Keras names its layers conv2d_1, ... this time
    assert rebuilt.layers[1].name != model.layers[1].name
    again = tfbench.probe(rebuilt, small_folder, output_dir=out, l2_search="fast", input_range=[0, 1],
                          cache_dir=str(tmp_path / "cache"))
    assert again.skipped and again.model == name and again.test_score == result.test_score
    other = _feature_model(seed=2)
    assert user_models.model_digest(other) != user_models.model_digest(model)


def _shape(value):
    """A record's fields, nesting and list lengths, its leaves reduced to their kind: two runs of
    one experiment agree on it exactly, whatever the last bits of their floating-point sums."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items() if not any(word in key for word in VOLATILE)}
    if isinstance(value, list):
        return [_shape(item) for item in value]
    return "number" if isinstance(value, (int, float)) and not isinstance(value, bool) else type(value).__name__


def _decisions(record):
    """What a run decided: its experiment and protocol, the trials it tried, what it chose."""
    return ({key: value for key, value in record.get("experiment", {}).items() if key not in ("output_dir", "cache_dir")},
            record.get("protocol"), record.get("status"), record.get("metric"), record.get("hyperparameters"),
            [trial.get("hyperparameters") for trial in record.get("trials", [])])


def _files(run_dir):
    found = {}
    for folder, _, names in os.walk(run_dir):
        for name in names:
            path = os.path.join(folder, name)
            if name.startswith("events.out.tfevents."):  # TensorBoard names it by time, host and pid
                name = "events.out.tfevents"
            found[os.path.relpath(os.path.join(folder, name), run_dir)] = path
    return found


@pytest.mark.slow
@pytest.mark.parametrize("regime, flags, settings", [
    ("probe", ["--l2_search=fast"], {"l2_search": "fast"}),
    ("finetune", ["--search=none", "--learning_rate=0.05", "--weight_decay=0", "--train_steps=6",
                  "--batch_size=16", "--image_size=32", "--checkpoint_every=3"],
     {"search": "none", "learning_rate": 0.05, "weight_decay": 0, "train_steps": 6, "batch_size": 16,
      "image_size": 32, "checkpoint_every": 3}),
])
def test_the_api_writes_the_binarys_files_and_skips_like_it(tmp_path, regime, flags, settings):
    by_binary, by_api = tmp_path / "binary", tmp_path / "api"
    common = ["--model=tiny", "--dataset=digits"] + (["--cache_dir=" + str(tmp_path / "cache_binary")]
                                                     if regime == "probe" else [])
    completed = subprocess.run([sys.executable, "-m", f"tfbench.{regime}", *common, *flags,
                                f"--output_dir={by_binary}"], env=_env(), cwd=ROOT, capture_output=True,
                               text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    if regime == "probe":
        settings = dict(settings, cache_dir=str(tmp_path / "cache_api"))
    result = getattr(tfbench, regime)("tiny", "digits", output_dir=str(by_api), **settings)
    assert not result.skipped and result.status == "ok"

    binary_files = _files(by_binary / regime / "digits" / "tiny")
    api_files = _files(by_api / regime / "digits" / "tiny")
    assert set(api_files) == set(binary_files) and "record.json" in api_files
    for name, path in api_files.items():
        if name.endswith(".json"):
            with open(path) as mine, open(binary_files[name]) as theirs:
                mine, theirs = json.load(mine), json.load(theirs)
            assert _shape(mine) == _shape(theirs), name
            assert _decisions(mine) == _decisions(theirs), name
            if theirs.get("test_score") is None:
                assert mine.get("test_score") is None, name
            else:
                assert mine["test_score"] == pytest.approx(theirs["test_score"], abs=0.01), name

    again = getattr(tfbench, regime)("tiny", "digits", output_dir=str(by_api), **settings)
    assert again.skipped and again.record == result.record
    with pytest.raises(tfbench.RunConflictError, match="overwrite"):
        getattr(tfbench, regime)("tiny", "digits", output_dir=str(by_api), seed=0,
                                 **dict(settings, **({"init": "imagenet", "l2_search": "paper"} if regime == "probe"
                                                     else {"learning_rate": 0.01})))

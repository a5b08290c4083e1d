"""`python -m tfbench.prepare`: offline (a clear status per dataset, nothing written), from a
manual folder in the official layout, its bad input, and the split audit, which must catch
overlaps, bad labels and unbalanced hold-outs on materialised examples. The builders themselves
are tested in test_dataset_builders.py (whose fake FGVC Aircraft writer this file reuses).

References: the paper's dataset table typed in by hand, the fake data's lists, images this file
writes, hand-built splits.
"""

import os
import subprocess
import sys
import time
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from test_dataset_builders import write_fgvc_tree
from tfbench import backbones, datasets, prepare
from tfbench.datasets import audit, downloads
from tfbench.registry import UnknownNameError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")
# (trainval, test) of the paper's twelve datasets, from its dataset table.
PAPER_SIZES = {
    "food101": (75750, 25250), "cifar10": (50000, 10000), "cifar100": (50000, 10000),
    "birdsnap": (47386, 2443), "sun397": (19850, 19850), "stanford_cars": (8144, 8041),
    "fgvc_aircraft": (6667, 3333), "voc2007": (5011, 4952), "dtd": (3760, 1880),
    "oxford_pets": (3680, 3669), "caltech101": (3060, 6084), "oxford_flowers102": (2040, 6149),
}


def run_guarded(*args):
    """`python -m tfbench.prepare ARGS` in a fresh interpreter under the tests' network guard."""
    guarded = (f"import sys; sys.path.insert(0, {TESTS!r}); import conftest, runpy; "
               "runpy.run_module('tfbench.prepare', run_name='__main__', alter_sys=True)")
    return subprocess.run([sys.executable, "-c", guarded, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=180)


# --------------------------------------------------------------------------- offline


def test_paper_sizes_match_the_design_table():
    for name, sizes in PAPER_SIZES.items():
        assert datasets.spec(name).paper_sizes == sizes, name


@pytest.mark.slow
def test_offline_prepare_all_says_what_to_do_and_writes_nothing(tmp_path):
    start = time.monotonic()
    completed = run_guarded("--datasets=all", f"--data_dir={tmp_path / 'data'}")
    assert time.monotonic() - start < 120
    assert completed.returncode == 1, completed.stderr[-2000:]
    lines = completed.stdout.splitlines()
    for name in PAPER_SIZES:
        status = [line for line in lines if line.startswith("[") and f"] {name}: manual step needed" in line]
        assert len(status) == 1, (name, completed.stdout[-3000:])
        row = [line for line in lines if line.split() and line.split()[0] == name and "manual step needed" in line]
        assert row, name  # the final table
    assert "] digits: nothing to prepare" in completed.stdout
    assert completed.stdout.count("-> save as") >= 10  # the exact files to fetch, e.g.:
    assert f"-> save as {tmp_path / 'data' / 'downloads' / 'manual' / 'fgvc-aircraft-2013b.tar.gz'}" in completed.stdout
    assert "python -m tfbench.prepare --datasets=voc2007" in completed.stdout
    assert "birdsnap.tgz" in completed.stdout and "get_birdsnap.py" in completed.stdout
    assert lines[-1].startswith("prepare: ") and "datasets ready" in lines[-1]
    assert not (tmp_path / "data").exists()  # nothing half-written


def test_every_tfds_builder_names_its_downloads_and_the_manual_folder_satisfies_them(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    for name in PAPER_SIZES:
        spec = datasets.spec(name)
        if name == "birdsnap":  # a list of image URLs, handled by its own step
            continue
        needed = downloads.needed_downloads(tfds.builder(spec.tfds_name, data_dir=str(tmp_path)), str(manual))
        assert needed and all(item.url.startswith("http") and item.file_name for item in needed), name
        for item in needed:
            (manual / item.file_name).write_bytes(b"")
        assert downloads.missing_from(needed, str(manual)) == [], name


def test_dataset_names_are_checked_before_anything_runs():
    with pytest.raises(UnknownNameError, match="did you mean: fgvc_aircraft") as error:
        prepare.selected_datasets("cifar10,fgvc_aircrft")
    assert "'fgvc_aircrft'" in str(error.value) and "\n" not in str(error.value)
    assert prepare.selected_datasets(" all ") == datasets.names()
    assert prepare.selected_datasets("dtd, voc2007") == ["dtd", "voc2007"]


def test_model_names_are_checked_before_anything_runs():
    with pytest.raises(UnknownNameError, match="did you mean: resnet50") as error:
        prepare.selected_models("tiny,resnet5O")
    assert "'resnet5O'" in str(error.value) and "\n" not in str(error.value)
    assert prepare.selected_models("") == [] and prepare.selected_models(" all ") == backbones.names()
    assert prepare.selected_models("tiny, efficientnet_lite0") == ["tiny", "efficientnet_lite0"]


@pytest.mark.slow
def test_fetching_weights_fills_the_cache_runs_read_and_names_what_it_could_not_fetch(
        tmp_path, monkeypatch, capsys):
    """EfficientNet-Lite0's weights come from its installed package: fetching converts them into
    TFBENCH_CACHE, where a later build finds them. ResNet-50's need the network, which tests do not
    have: named as failed, and the others are still fetched."""
    from tfbench.backbones import efficientnet_lite

    monkeypatch.setenv("TFBENCH_CACHE", str(tmp_path / "cache"))
    converted = efficientnet_lite.cache_file("efficientnet_lite0")
    assert str(converted).startswith(str(tmp_path)) and not converted.exists()
    assert not prepare.fetch_weights(["resnet50", "tiny", "efficientnet_lite0"])
    out = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("[", "prepare:"))]
    assert out[0].startswith("[1/3] resnet50: weights FAILED: cannot fetch ImageNet weights of 'resnet50'")
    assert out[1].startswith("[2/3] tiny: weights ready") and out[2].startswith("[3/3] efficientnet_lite0: weights ready")
    assert out[3] == "prepare: weights of 2 of 3 models ready; failed: resnet50"
    assert converted.exists()
    assert prepare.fetch_weights([]) and capsys.readouterr().out == ""


@pytest.mark.slow
def test_prepare_refuses_models_with_audit(tmp_path):
    completed = run_guarded("--audit", "--models=tiny", f"--data_dir={tmp_path}")
    assert completed.returncode == 2 and "--models='tiny' fetches weights, which --audit does not" in completed.stderr
    assert not os.listdir(tmp_path)


@pytest.mark.slow
def test_prepare_from_an_extracted_manual_folder_then_audit(tmp_path):
    """The official tree fgvc-aircraft-2013b/ in --manual_dir: prepared offline; its audit
    passes every check but the sizes (the fakes are not the paper's 6,667 / 3,333)."""
    write_fgvc_tree(tmp_path / "manual")
    prepared = run_guarded("--datasets=fgvc_aircraft,digits", f"--data_dir={tmp_path / 'data'}",
                           f"--manual_dir={tmp_path / 'manual'}")
    assert prepared.returncode == 0, prepared.stdout[-2000:] + prepared.stderr[-2000:]
    assert "] fgvc_aircraft: prepared: prepared in" in prepared.stdout
    table = {line.split()[0]: line.split() for line in prepared.stdout.splitlines()
             if line.startswith(("fgvc_aircraft ", "digits "))}
    assert table["fgvc_aircraft"][1:] == ["100", "100", "200", "100", "prepared"]
    assert prepared.stdout.splitlines()[-1].startswith("prepare: 2 of 2 datasets ready")

    audited = run_guarded("--audit", "--datasets=fgvc_aircraft", f"--data_dir={tmp_path / 'data'}")
    assert audited.returncode == 1, audited.stderr[-2000:]
    assert "FAIL sizes: trainval 200, test 100; expected 6667, 3333" in audited.stdout
    for check in ("trainval", "ids", "images", "labels", "held-out"):
        assert f"fgvc_aircraft: ok   {check}:" in audited.stdout, check
    assert "audit: 0 of 1 prepared datasets pass; failed: fgvc_aircraft" in audited.stdout


# --------------------------------------------------------------------------- the audit


def test_audit_passes_on_correct_splits(tmp_path):
    """A folder with its own train / val / test (official splits), and digits (a held-out val and
    a drawn test set, no reference sizes)."""
    for split, count in (("train", 4), ("val", 2), ("test", 3)):
        for label in ("ant", "bee"):
            (tmp_path / split / label).mkdir(parents=True)
            for index in range(count):
                pixels = np.full((5, 4, 3), (len(split) * 40 + index * 9) % 256, dtype=np.uint8)
                pixels[0, 0] = (label == "ant") * 200
                Image.fromarray(pixels).save(tmp_path / split / label / f"{index}.png")
    folder = audit.audit(f"folder:{tmp_path}", expected_sizes=(12, 6))
    assert folder.passed, folder.failures()
    assert folder.sizes == {"train": 8, "val": 4, "trainval": 12, "test": 6}
    assert [check.name for check in audit.audit(f"folder:{tmp_path}", expected_sizes=(12, 7)).failures()] == ["sizes"]
    digits = audit.audit("digits")
    assert digits.passed, digits.failures()
    assert digits.sizes["trainval"] + digits.sizes["test"] == 1797


def _sabotaged_load(split_changes):
    """datasets.load with some splits rewritten by split_changes[split](real_dataset, load)."""
    real_load = datasets.load

    def load(name, split, data_dir=None):
        dataset = real_load(name, split, data_dir)
        return split_changes[split](dataset, lambda s: real_load(name, s, data_dir)) if split in split_changes else dataset

    return mock.patch.object(audit.datasets, "load", load)


def test_audit_catches_a_validation_split_that_overlaps_training():
    with _sabotaged_load({"val": lambda val, load: val.concatenate(load("train").take(2))}):
        report = audit.audit("digits")
    failed = {check.name: check.detail for check in report.failures()}
    assert {"ids", "images", "trainval"} <= set(failed) and "labels" not in failed
    assert "2 in both train and val" in failed["ids"] and "2 in both train and val" in failed["images"]


def test_audit_catches_the_same_image_under_another_id():
    def renamed(test, load):
        return test.concatenate(load("train").take(1).map(lambda e: {**e, "id": tf.constant("digits/copy")}))

    with _sabotaged_load({"test": renamed}):
        report = audit.audit("digits")
    failed = {check.name: check.detail for check in report.failures()}
    assert "images" in failed and "ids" not in failed
    assert "1 in both train and test" in failed["images"]


def test_audit_catches_labels_out_of_range_and_an_unbalanced_hold_out():
    with _sabotaged_load({"test": lambda test, load: test.map(lambda e: {**e, "label": e["label"] + 10})}):
        labels = audit.audit("digits")
    assert [check.name for check in labels.failures()] == ["labels", "held-out"]
    assert "outside [0, 10)" in labels.failures()[0].detail
    # Validation's 3s moved to train: trainval is unchanged, but val is no longer balanced.
    with _sabotaged_load({"val": lambda val, load: val.filter(lambda e: e["label"] != 3),
                          "train": lambda train, load: train.concatenate(
                              load("val").filter(lambda e: e["label"] == 3))}):
        balance = audit.audit("digits")
    assert [check.name for check in balance.failures()] == ["held-out"]
    assert "class 3: 0 of" in balance.failures()[0].detail


def _split(labels, prefix):
    labels = np.asarray(labels)
    return audit.Split([f"{prefix}{i}" for i in range(len(labels))], labels, [f"{prefix}{i}" for i in range(len(labels))])


def test_drawn_split_check_knows_30_per_class_and_multi_label_rules():
    spec = datasets.spec("caltech101")
    class_sizes = np.full(102, 40)

    def parts(trainval_per_class):
        trainval = np.repeat(np.arange(102), trainval_per_class)
        test = np.repeat(np.arange(102), class_sizes - trainval_per_class)
        val = np.repeat(np.arange(102), (trainval_per_class * 0.2).round().astype(int))
        train = np.repeat(np.arange(102), trainval_per_class - (trainval_per_class * 0.2).round().astype(int))
        return {"train": _split(train, "a"), "val": _split(val, "b"), "trainval": _split(trainval, "c"),
                "test": _split(test, "d")}

    assert audit.check_drawn_splits(spec, parts(np.full(102, 30))).passed
    wrong = np.full(102, 30)
    wrong[7] = 29
    check = audit.check_drawn_splits(spec, parts(wrong))
    assert not check.passed and "classes [7]" in check.detail
    voc = datasets.spec("voc2007")
    bad = np.zeros((2, 20), dtype=np.int32)
    bad[0, 3] = 1  # the second example has no class at all
    voc_parts = {split: _split(np.zeros((0, 20), np.int32), split) for split in datasets.SPLITS}
    voc_parts["train"] = voc_parts["trainval"] = _split(bad, "t")
    assert "1 train examples have no class" in audit.check_labels(voc, voc_parts).detail

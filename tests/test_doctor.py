"""tfbench.doctor: each check's verdicts from faked inputs (no GPU, a read-only folder, a NaN
loss, versions out of range), the tiny training run and the pipeline timing for real, the
cluster check on the shared Ray fixture, and the binary's bad input."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest

from tfbench import checkup
from tfbench.checkup import FAIL, OK, WARNING

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _verdicts(checks):
    return {check.name: check.verdict for check in checks}


# ---------------------------------------------------------------------------------------- software

def test_versions_against_the_ranges_of_the_installed_requirements():
    ranges = checkup.tested_requirements()
    assert {"python", "tensorflow", "keras", "tensorflow-datasets", "tensorflow-hub", "ray"} <= set(ranges)
    versions = {"python": "3.11.7", "tensorflow": "2.19.0", "keras": None, "ray": None,
                "tensorflow-hub": "0.16.1"}
    verdicts = _verdicts(checkup.version_checks(versions, {**ranges, "tensorflow": "~=2.21.0"}))
    assert verdicts == {"python": OK, "tensorflow": WARNING, "keras": FAIL, "ray": OK, "tensorflow-hub": OK}


def test_versions_without_tfbench_metadata_warn():
    assert [check.verdict for check in checkup.version_checks({"python": "3.11.7"}, {})] == [WARNING]


def test_no_gpu_is_a_warning_and_a_gpu_is_named():
    build = {"is_cuda_build": True, "cuda_version": "12.5.1", "cudnn_version": "9"}
    none = checkup.gpu_check([], build)
    assert none.verdict == WARNING and "no GPU" in none.detail and none.advice
    one = checkup.gpu_check([{"device": "/physical_device:GPU:0", "name": "NVIDIA A100", "memory_mib": 40960}],
                            build)
    assert one.verdict == OK and "NVIDIA A100 (40960 MiB)" in one.detail and "CUDA 12.5.1" in one.detail


# ---------------------------------------------------------------------------------------- numerics

def _runs(f16=None, bf16=None):
    """Finished runs: float32 at loss 2.0, and the mixed precisions given."""
    losses = {"float32": 2.0, "mixed_float16": f16, "mixed_bfloat16": bf16}
    return {precision: {"loss": loss, "status": "ok", "loss_scaled": precision == "mixed_float16"}
            for precision, loss in losses.items() if loss is not None}


def test_precision_verdicts():
    assert _verdicts(checkup.precision_verdict("/gpu:0", _runs(f16=2.001, bf16=2.01))) == {
        "float32 on /gpu:0": OK, "mixed_float16 on /gpu:0": OK, "mixed_bfloat16 on /gpu:0": OK}
    nan = checkup.precision_verdict("/gpu:0", _runs(f16=math.nan, bf16=2.0))
    assert _verdicts(nan)["mixed_float16 on /gpu:0"] == FAIL and "NaN" in nan[1].detail
    diverged = {**_runs(f16=2.0), "mixed_float16": {"loss": None, "status": "diverged"}}
    assert _verdicts(checkup.precision_verdict("/gpu:0", diverged))["mixed_float16 on /gpu:0"] == FAIL
    drifted = checkup.precision_verdict("/gpu:0", _runs(f16=2.2))  # 10% off float32
    assert _verdicts(drifted)["mixed_float16 on /gpu:0"] == FAIL
    assert drifted[1].values["relative_difference"] == pytest.approx(0.1)
    unscaled = _runs(f16=2.0)
    unscaled["mixed_float16"]["loss_scaled"] = False
    assert _verdicts(checkup.precision_verdict("/gpu:0", unscaled))["mixed_float16 on /gpu:0"] == FAIL
    unsupported = {**_runs(f16=2.0), "mixed_bfloat16": {"error": "no bfloat16 kernel"}}
    assert _verdicts(checkup.precision_verdict("/gpu:0", unsupported))["mixed_bfloat16 on /gpu:0"] == WARNING


def test_mirrored_verdicts():
    assert checkup.mirrored_verdict({"loss": 2.0}, {"loss": 2.0 + 1e-5}, 2).verdict == OK
    assert checkup.mirrored_verdict({"loss": 2.0}, {"loss": 2.1}, 2).verdict == FAIL
    assert checkup.mirrored_verdict({"loss": 2.0}, {"loss": math.nan}, 4).verdict == FAIL


def test_the_tiny_run_trains_and_the_loss_is_scaled_under_float16():
    import tensorflow as tf

    features, labels, kernel = checkup._numerics_data()
    hidden = np.maximum(features @ kernel, 0)
    logits = hidden @ kernel[:checkup.NUMERICS_CLASSES]
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    initial = -log_probs[np.arange(len(labels)), labels].mean()  # numpy's loss before any step
    runs = {precision: checkup.train_tiny(tf.distribute.OneDeviceStrategy("/cpu:0"), precision)
            for precision in ("float32", "mixed_float16")}
    assert [run["loss_scaled"] for run in runs.values()] == [False, True]
    assert _verdicts(checkup.precision_verdict("/cpu:0", runs)) == {"float32 on /cpu:0": OK,
                                                                     "mixed_float16 on /cpu:0": OK}
    # SGD lowered the loss it started from by far more than the precisions may differ, so a run
    # that stops learning (float16 gradients underflowing) cannot pass as rounding.
    assert (initial - runs["float32"]["loss"]) / initial > 5 * max(checkup.LOSS_TOLERANCE.values())


# --------------------------------------------------------------------------------------- throughput

@pytest.mark.slow
def test_throughput_times_a_backbone_step_and_the_estimate_reads_it(tmp_path, monkeypatch):
    from tfbench import estimate_cost

    monkeypatch.setenv("TFBENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(checkup, "PIPELINE_SECONDS", 0.2)
    checks = checkup.throughput_checks("tiny", cached=None)
    assert _verdicts(checks) == {"input pipeline": OK, "tiny": OK}
    stored = estimate_cost.stored_measurements()
    assert [(m["model"], m["kind"], m["by"]) for m in stored] == [
        ("input_pipeline", "input", "tfbench.doctor"), ("tiny", "train", "tfbench.doctor")]
    rates = estimate_cost.stored_rates()  # what plan lines and --dry_run use: the training rate only
    assert [(rate.model, rate.images_per_second) for rate in rates] == [
        ("tiny", checks[1].values["images_per_second"])]
    skipped = checkup.throughput_checks("resnet50", cached=False)
    assert _verdicts(skipped) == {"input pipeline": OK, "resnet50": WARNING}
    assert "--models=resnet50" in skipped[1].advice


# ------------------------------------------------------------------------------------------ storage

def test_storage_verdicts(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    folders = {"output": str(tmp_path / "runs" / "new"), "cache": str(blocker / "cache")}
    checks = checkup.storage_checks(folders, {"output": 10})
    assert _verdicts(checks) == {"output folder": OK, "cache folder": FAIL}  # root writes anywhere else
    assert not os.path.exists(tmp_path / "runs")  # the probe created nothing it left behind
    full = checkup.storage_checks({"output": str(tmp_path)}, {"output": 10}, free_bytes=lambda path: 9)
    assert full[0].verdict == FAIL and "needs" in full[0].detail
    read_only = checkup.storage_checks({"data": str(tmp_path)}, {}, probe=lambda path: "read-only file system")
    assert read_only[0].verdict == FAIL and read_only[0].detail == "read-only file system"


def test_a_run_needs_room_for_checkpoints_and_features_of_the_largest_dataset():
    from tfbench import preflight

    needs = checkup.run_needs("resnet50", "runs")
    # Food-101's 101,000 images (the paper's largest) x 2048 float32 features for the probe; two
    # checkpoints of ResNet-50's ~25.6M weights with their momentum for the fine-tune.
    assert needs["cache"] >= 101000 * 2048 * 4
    assert 2 * 2 * 4 * 25e6 < needs["output"] - preflight.DISK_MARGIN < 2 * 2 * 4 * 27e6


# --------------------------------------------------------------------------------- data and weights

def test_no_dataset_is_prepared_in_an_empty_data_dir(tmp_path):
    found = checkup.prepared_datasets(str(tmp_path))
    assert len(found) == 12 and all(found.values())
    check = checkup.dataset_check(found, str(tmp_path))
    assert check.verdict == WARNING and f"--data_dir={tmp_path}" in check.advice
    assert checkup.dataset_check(dict.fromkeys(found), str(tmp_path)).verdict == OK


def test_weights_verdicts(tmp_path, monkeypatch):
    sources = {"resnet50": "storage.googleapis.com", "inception_v1": "www.kaggle.com"}
    cached = {"resnet50": False, "inception_v1": True, "tiny": None}
    assert checkup.weights_check(cached, sources, {"storage.googleapis.com": True}).verdict == OK
    offline = checkup.weights_check(cached, sources, {"storage.googleapis.com": False})
    assert offline.verdict == WARNING and offline.values["unreachable"] == ["resnet50"]
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert checkup.weights_cached("resnet50") is False
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / checkup_weights_file("resnet50")).write_bytes(b"")
    assert checkup.weights_cached("resnet50") is True
    assert checkup.weights_cached("tiny") is None


def checkup_weights_file(model):
    from tfbench.backbones import catalog

    return catalog.REGISTRY.get(model).weights_file


# ------------------------------------------------------------------------------------------ cluster

@pytest.mark.slow
def test_cluster_nodes_and_a_task_sees_exactly_its_gpu(ray_cluster):
    checks = checkup.cluster_checks("auto")  # the fixture's Ray: 2 fake GPUs on this machine
    assert _verdicts(checks) == {"nodes": OK, "GPU assignment": OK}
    assert sum(checks[0].values["nodes"].values()) == 2
    assert len(checks[1].values["ids"]) == 1


# ------------------------------------------------------------------------------------------- binary

def test_binary_refuses_an_unknown_model_in_one_line():
    result = subprocess.run([sys.executable, "-m", "tfbench.doctor", "--model=resnet5O"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "'resnet5O'" in result.stderr and "resnet50" in result.stderr


def test_tfbench_doctor_is_the_checkup_and_stays_so_when_the_binary_is_imported():
    import tfbench
    from tfbench import checkup

    assert tfbench.doctor is checkup.doctor
    import tfbench.doctor  # noqa: F401  (the binary module of the same name)

    assert tfbench.doctor is checkup.doctor

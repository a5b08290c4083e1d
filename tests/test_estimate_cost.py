"""The cost model: network costs, where throughput comes from, the work of a run, the sweep's time."""

import os

import pytest

from tfbench import estimate_cost, files, protocol, study
from tfbench.backbones import compute
from tfbench.experiment import Experiment
from tfbench.settings import ProbeSettings, Runtime, TrainingSettings


def test_the_tiny_networks_table_entry_matches_keras_own_count():
    from tfbench import backbones

    model = backbones.build("tiny")
    assert compute.parameters("tiny") == model.count_params() == 6200


def test_multiply_adds_scale_with_the_image_area_relative_to_resnet50():
    assert compute.relative_cost("resnet50") == 1.0
    assert compute.relative_cost("resnet50", 448) == pytest.approx(4.0)
    assert compute.relative_cost("efficientnet_b0") == pytest.approx(0.39 / 3.8)
    assert compute.relative_cost("nasnet_large") == pytest.approx(23.8 / 3.8)  # at its native 331 px
    assert compute.relative_cost("/models/mine.keras") is None
    assert not compute.scalable("tiny") and compute.scalable("mobilenet_v2")


def _record(path, regime, model, images_per_second, replicas=1, image_size=None):
    files.write_json_atomic(str(path), {
        "status": "ok", "experiment": {"regime": regime, "model": model, "image_size": image_size},
        "training": {"images_per_second": images_per_second, "replicas": replicas},
        "timings": {"images_per_second": images_per_second}})


def test_throughput_comes_from_records_then_this_machine_then_scaled_then_the_table(tmp_path, monkeypatch):
    monkeypatch.setenv("TFBENCH_CACHE", str(tmp_path / "cache"))
    runs = tmp_path / "runs"
    table = estimate_cost.throughput("resnet50", 224, [])
    assert table.basis == estimate_cost.TABLE
    assert table.train == pytest.approx(32 / 0.0046 / 3) and table.forward == pytest.approx(32 / 0.0046)

    # a trial on 2 replicas at 100 images/s: 50 per device; the forward rate follows
    _record(runs / "finetune/dtd/resnet50/trials/lr0.1_wd0.json", "finetune", "resnet50", 100.0, replicas=2)
    rates = estimate_cost.rates_in_records([str(runs)])
    own = estimate_cost.throughput("resnet50", 224, rates)
    assert (own.train, own.forward, own.basis) == (50.0, 150.0, estimate_cost.MEASURED)
    assert estimate_cost.throughput("resnet50", 448, rates).basis == estimate_cost.SCALED  # another size

    scaled = estimate_cost.throughput("resnet101", 224, rates)  # 7.6 G multiply-adds against 3.8 G
    assert (scaled.train, scaled.basis) == (pytest.approx(25.0), estimate_cost.SCALED)

    estimate_cost.store_measurement("resnet101", 224, estimate_cost.TRAIN, 30.0, by="a test")
    estimate_cost.store_measurement("resnet101", 224, estimate_cost.TRAIN, 40.0, by="a test")  # replaces
    stored = estimate_cost.throughput("resnet101", 224, rates + estimate_cost.stored_rates())
    assert (stored.train, stored.basis) == (40.0, estimate_cost.MEASURED)
    # a probe's record measures extraction: the forward rate, training a third of it
    _record(runs / "probe/dtd/resnet101/record.json", "probe", "resnet101", 90.0)
    probe = estimate_cost.throughput("resnet101", 224, estimate_cost.rates_in_records([str(runs)]))
    assert (probe.train, probe.forward) == (30.0, 90.0)

    given = estimate_cost.throughput("resnet101", 224, rates, resnet50_images_per_second=500)
    assert (given.train, given.basis) == (250.0, estimate_cost.GIVEN)


def test_a_tiny_networks_rate_is_not_scaled_to_real_ones(tmp_path):
    _record(tmp_path / "finetune/digits/tiny/record.json", "finetune", "tiny", 4000.0)
    rates = estimate_cost.rates_in_records([str(tmp_path)])
    assert estimate_cost.throughput("resnet50", 224, rates).basis == estimate_cost.TABLE
    # nor is a real network's rate scaled down to tiny's few multiply-adds: its steps are overhead
    unmeasured = estimate_cost.throughput("tiny", 32, [])
    assert unmeasured.train == pytest.approx(estimate_cost.TABLE_RESNET50_IMAGES_PER_SECOND / compute.MIN_SCALABLE_COST)


def _finetune(tmp_path, **settings):
    return Experiment(regime="finetune", model="resnet50", dataset="digits", output_dir=str(tmp_path),
                      batch_size=100, settings=TrainingSettings(**settings))


def test_a_trials_work_counts_each_validation_scoring(tmp_path):
    experiment = _finetune(tmp_path, search="none", learning_rate=0.1, weight_decay=0.0, train_steps=25)
    val = 287  # digits: 1,797 = 1,437 trainval + 360 test; val 20% of trainval
    # the training loop scores val at steps 10 and 20 (not at the end), then once after training
    assert estimate_cost.trial_work(experiment, Runtime(eval_every=10), 25) == estimate_cost.Work(2500, 3 * val)
    assert estimate_cost.trial_work(experiment, Runtime(eval_every=0), 25) == estimate_cost.Work(2500, val)
    probe = Experiment(regime="probe", model="resnet50", dataset="digits", output_dir=str(tmp_path),
                       settings=ProbeSettings())
    assert estimate_cost.probe_work(probe) == estimate_cost.Work(0, 1797)


def test_the_sweeps_time_per_regime(tmp_path, monkeypatch):
    """One fine-tune trial and its retrain of 36,000 steps of 100 at 1,000 images/s each take an
    hour; the probe extracts all 1,797 digits at three times that rate."""
    monkeypatch.setenv("TFBENCH_CACHE", str(tmp_path / "cache"))
    runtime = Runtime(eval_every=0)
    tasks = (study.experiment_tasks(_finetune(tmp_path, search="none", learning_rate=0.1, weight_decay=0.0, train_steps=36000), runtime)
             + study.experiment_tasks(Experiment(regime="probe", model="resnet50", dataset="digits",
                                                 output_dir=str(tmp_path), settings=ProbeSettings()), runtime))
    text = estimate_cost.study_estimate(tasks, gpus=2, resnet50_images_per_second=1000)
    seconds = 2 * 3600 + (287 + 360 + 1797) / 3000
    assert text.splitlines()[:4] == [
        f"time (tasks not finished): {seconds / 3600:,.1f} GPU-hours; wall time on 2 GPU(s) >= 60 min "
        "(perfect packing; the probe's L2 search on CPU not counted)",
        "  finetune: 1 runs: 2.0 GPU-hours training + 0.0 scoring 647 images",
        "  probe: 1 runs, 1,797 images extracted: 0.0 GPU-hours",
        f"    digits: 1,797 images, {1797 / 3000 / 60:.2f} GPU-minutes"]
    assert "--images_per_second for ResNet-50, scaled by multiply-adds: resnet50" in text

    conclusion = next(task for task in tasks if task.kind == "conclude")  # finished: no longer counted
    files.write_json_atomic(conclusion.record, {"status": "ok"})
    assert "finetune: 1 runs: 1.0 GPU-hours training + 0.0 scoring 287 images" in estimate_cost.study_estimate(
        tasks, gpus=1, resnet50_images_per_second=1000)


def test_the_sweeps_probe_time_per_dataset(tmp_path, monkeypatch):
    """Each probe dataset's images and extraction minutes: ResNet-50 stated to train 1 image/s
    extracts 3 images/s, so the 1,797 digits take 599 s."""
    monkeypatch.setenv("TFBENCH_CACHE", str(tmp_path / "cache"))
    probe = Experiment(regime="probe", model="resnet50", dataset="digits", output_dir=str(tmp_path),
                       settings=ProbeSettings())
    text = estimate_cost.study_estimate(study.experiment_tasks(probe, Runtime()), gpus=1, resnet50_images_per_second=1)
    assert "\n    digits: 1,797 images, 9.98 GPU-minutes\n" in text, text


def test_the_plan_line_gives_steps_images_and_time(tmp_path):
    experiment = Experiment(regime="finetune", model="resnet50", dataset="digits", output_dir=str(tmp_path),
                            batch_size=protocol.BATCH_SIZE, settings=TrainingSettings.paper("finetune"))
    speed = estimate_cost.Throughput(256 / 0.043, 3 * 256 / 0.043, "measured: 5 warm-up steps",
                                   estimate_cost.MEASURED, "on this machine")
    line = estimate_cost.plan_line(experiment, Runtime(), speed, shape=[(56, 20000)])
    assert line.startswith("plan: 56 trials + 1 retrain on trainval, 20,000 steps of 256 each = 1,140,000 "
                           "steps, 291,840,000 images; ≈ 13.6 h on this machine (43 ms/step, measured: 5 "
                           "warm-up steps; "), line
    assert os.listdir(tmp_path) == []


def test_a_cache_that_cannot_be_written_costs_the_measurement_not_the_run(tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("TFBENCH_CACHE", str(tmp_path / "file" / "cache"))
    estimate_cost.store_measurement("tiny", 32, estimate_cost.TRAIN, 100.0, by="a test")
    assert "throughput measurement not stored" in capsys.readouterr().err
    assert estimate_cost.stored_rates() == []

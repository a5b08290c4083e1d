"""Typed settings: checked once with one-line errors; identity (what changes a result) kept apart
from the Runtime (how it executes); records round-trip."""

import dataclasses
import json

import pytest

from tfbench import devices, protocol
from tfbench.experiment import Experiment, protocol_of
from tfbench.settings import (InvalidSettingError, ProbeSettings, Runtime, TrainingSettings,
                              settings_from_dict, settings_to_dict)


def test_bad_settings_fail_with_one_line_messages(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(InvalidSettingError, match="TF_CONFIG"):
        devices.make_strategy("multi_worker")
    with pytest.raises(InvalidSettingError, match="valid choices: auto, one_device, mirrored, multi_worker"):
        devices.make_strategy("tpu")
    with pytest.raises(InvalidSettingError, match="warmup_steps"):
        TrainingSettings(train_steps=10, warmup_steps=10)
    with pytest.raises(InvalidSettingError, match="weight decays must be >= 0"):
        TrainingSettings(search="none", learning_rate=0.1, weight_decay=-1.0)
    with pytest.raises(InvalidSettingError, match="unknown l2 search 'fst'; valid choices: paper, fast"):
        ProbeSettings(l2_search="fst")
    with pytest.raises(InvalidSettingError, match="checkpoint_every"):
        Runtime(checkpoint_every=0)
    with pytest.raises(InvalidSettingError, match="unknown precision 'half'"):
        devices.resolve_precision("half")
    with pytest.raises(InvalidSettingError) as raised:
        TrainingSettings(search="grid", learning_rates=(0.1,))
    assert "\n" not in str(raised.value)


def test_the_defaults_are_the_papers_protocol():
    assert TrainingSettings.paper("finetune") == TrainingSettings()
    scratch = TrainingSettings.paper("scratch")
    assert scratch.search == "paper" and scratch.train_steps == protocol.SCRATCH_STEPS
    assert ProbeSettings().l2_search == "paper"


def test_settings_round_trip_through_a_record():
    settings = TrainingSettings(search="grid", learning_rates=(0.01, 0.1), weight_decays=(0.0,),
                                train_steps=60, bn_momentum=0.9)
    stored = json.loads(json.dumps(settings_to_dict(settings)))
    assert settings_from_dict("finetune", stored) == settings
    with pytest.raises(InvalidSettingError, match=r"unknown probe settings \['search'\]"):
        settings_from_dict("probe", {"search": "paper"})


def test_runtime_is_not_part_of_a_runs_identity():
    experiment = Experiment(regime="finetune", model="tiny", dataset="digits", output_dir="a",
                            settings=TrainingSettings(train_steps=10))
    moved = dataclasses.replace(experiment, output_dir="b", data_dir="/data", cache_dir="/cache")
    assert moved.identity() == experiment.identity()
    assert "strategy" not in json.dumps(experiment.to_dict())
    assert "checkpoint_every" not in json.dumps(experiment.to_dict())
    assert Experiment.from_dict(json.loads(json.dumps(experiment.to_dict()))) == experiment


def test_an_experiment_takes_the_settings_of_its_regime():
    with pytest.raises(InvalidSettingError, match="probe takes ProbeSettings, got TrainingSettings"):
        Experiment(regime="probe", model="tiny", dataset="digits", output_dir="a",
                   settings=TrainingSettings())


def test_validation_interval_follows_checkpoints_unless_given():
    assert Runtime(checkpoint_every=500).validation_interval == 500
    assert Runtime(checkpoint_every=500, eval_every=0).validation_interval == 0
    assert Runtime(checkpoint_every=500, eval_every=100).validation_interval == 100


def test_records_name_their_protocol():
    paper = Experiment(regime="scratch", model="tiny", dataset="digits", output_dir="a", batch_size=256,
                       settings=TrainingSettings.paper("scratch"))
    assert protocol_of(paper) == {"name": "paper", "differences": {}}
    preset = dataclasses.replace(paper, batch_size=32, preset="mini",
                                 settings=TrainingSettings(search="small", train_steps=60))
    described = protocol_of(preset)
    assert described["name"] == "mini"
    assert described["differences"] == {
        "batch_size": {"paper": 256, "run": 32},
        "settings.search": {"paper": "paper", "run": "small"},
        "settings.train_steps": {"paper": protocol.SCRATCH_STEPS, "run": 60}}
    assert protocol_of(dataclasses.replace(preset, preset=None))["name"] == "custom"
    probe = Experiment(regime="probe", model="tiny", dataset="digits", output_dir="a", image_size=128,
                       settings=ProbeSettings(init="random"))
    assert protocol_of(probe)["differences"] == {
        "image_size": {"paper": "native", "run": 128},
        "settings.init": {"paper": "imagenet", "run": "random"}}
    assert preset.identity() == dataclasses.replace(preset, preset="other").identity()  # a label


def test_batch_norm_momentum_rule():
    # max(1 - 10 / s, 0.9), s = steps per epoch
    assert protocol.bn_momentum(50_000, 256) == pytest.approx(1 - 10 / 195)
    assert protocol.bn_momentum(3_000, 32) == 0.9  # 93 steps per epoch: the floor
    assert protocol.bn_momentum(10, 256) == 0.9  # less than one batch: one step per epoch
    with pytest.raises(InvalidSettingError, match="bn_momentum must be in"):
        TrainingSettings(bn_momentum=1.5)
    with pytest.raises(InvalidSettingError, match="unknown bn_momentum 'papr'"):
        TrainingSettings(bn_momentum="papr")


def test_a_random_init_probe_has_a_folder_of_its_own():
    imagenet = Experiment(regime="probe", model="tiny", dataset="digits", output_dir="runs",
                          settings=ProbeSettings())
    random = dataclasses.replace(imagenet, settings=ProbeSettings(init="random"))
    assert imagenet.run_dir() == "runs/probe/digits/tiny"
    assert random.run_dir() == "runs/probe/digits/tiny+random_init"

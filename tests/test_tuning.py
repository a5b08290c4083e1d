"""Searches (the paper's grids, presets, given values), selection on validation, trial identity."""

import dataclasses

import pytest

from tfbench import grid_edges, settings, tuning
from tfbench.settings import InvalidSettingError, TrainingSettings
from tfbench.registry import UnknownNameError


def grid(search, regime, **values):
    return tuning.trials(TrainingSettings(search=search, **values), regime)


def test_paper_grids_are_the_papers():
    finetune = grid("paper", "finetune")
    assert len(finetune) == 56
    assert sorted({t.learning_rate for t in finetune}) == pytest.approx(
        [1e-4, 3.1623e-4, 1e-3, 3.1623e-3, 1e-2, 3.1623e-2, 1e-1], rel=1e-4)
    assert sorted({t.weight_decay for t in finetune}) == pytest.approx(
        [0.0, 1e-6, 3.1623e-6, 1e-5, 3.1623e-5, 1e-4, 3.1623e-4, 1e-3], rel=1e-4)
    scratch = grid("paper", "scratch")
    assert len(scratch) == 56
    assert sorted({t.learning_rate for t in scratch}) == pytest.approx(
        [1e-3, 3.1623e-3, 1e-2, 3.1623e-2, 0.1, 0.31623, 1.0], rel=1e-4)
    assert sorted({t.weight_decay for t in scratch}) == pytest.approx(
        [1e-5, 3.1623e-5, 1e-4, 3.1623e-4, 1e-3, 3.1623e-3, 1e-2, 0.031623], rel=1e-4)
    assert len({t.trial_id for t in finetune}) == 56  # ids are unique folder names


def test_single_configuration_and_bad_names():
    assert grid("none", "scratch", learning_rate=0.5, weight_decay=1e-4) == [tuning.Trial(0.5, 1e-4)]
    with pytest.raises(InvalidSettingError, match="learning_rate and weight_decay"):
        grid("none", "finetune", learning_rate=0.1)
    with pytest.raises(InvalidSettingError, match="unknown search 'papr'; valid choices: paper"):
        grid("papr", "finetune")
    with pytest.raises(UnknownNameError, match="did you mean: paper"):
        tuning.SEARCH_TRIALS.get("papr")
    with pytest.raises(InvalidSettingError, match="finetune, scratch"):
        grid("paper", "probe")


def test_every_search_setting_has_its_trials():
    assert tuning.SEARCH_TRIALS.names() == list(settings.SEARCHES)


def test_select_uses_validation_only_and_skips_diverged():
    records = [
        {"status": "ok", "validation_score": 0.5, "test_score": 0.99, "trial_id": "a"},
        {"status": "diverged", "validation_score": None, "trial_id": "b"},
        {"status": "ok", "validation_score": 0.7, "test_score": 0.1, "trial_id": "c"},
        {"status": "ok", "validation_score": 0.7, "test_score": 0.2, "trial_id": "d"},  # tie: earlier wins
    ]
    assert tuning.best_trial(records)["trial_id"] == "c"
    assert tuning.best_trial([records[1]]) is None


def test_given_grid_is_the_cross_product_and_needs_both_lists():
    trials = grid("grid", "finetune", learning_rates=[0.01, 0.1], weight_decays=[0.0, 1e-4])
    assert trials == [tuning.Trial(0.01, 0.0), tuning.Trial(0.01, 1e-4), tuning.Trial(0.1, 0.0),
                      tuning.Trial(0.1, 1e-4)]
    with pytest.raises(InvalidSettingError, match="weight_decays"):
        grid("grid", "scratch", learning_rates=[0.1])


@pytest.mark.parametrize("search, values, used_by", [
    ("paper", {"learning_rate": 0.1}, "none"),
    ("small", {"weight_decay": 0.0}, "none"),
    ("paper", {"learning_rates": [0.1]}, "grid"),
    ("none", {"learning_rate": 0.1, "weight_decay": 0.0, "weight_decays": [0.0]}, "grid"),
])
def test_a_value_the_search_would_ignore_is_refused(search, values, used_by):
    with pytest.raises(InvalidSettingError, match=f"used only by search '{used_by}'"):
        TrainingSettings(search=search, **values)


def test_trial_identity_ignores_only_what_chooses_the_trials():
    base = {"regime": "finetune", "model": "tiny", "dataset": "digits", "output_dir": "a", "seed": 0,
            "settings": settings.settings_to_dict(TrainingSettings(search="small", train_steps=10))}
    other_search = dict(base, output_dir="b", settings=settings.settings_to_dict(
        TrainingSettings(search="none", learning_rate=0.1, weight_decay=0.0, train_steps=10)))
    longer = dict(base, settings=settings.settings_to_dict(dataclasses.replace(
        TrainingSettings(search="small"), train_steps=20)))
    assert tuning.trial_identity(base) == tuning.trial_identity(other_search)
    assert tuning.trial_identity(base) != tuning.trial_identity(longer)
    assert "output_dir" not in tuning.trial_identity(base)


@pytest.mark.parametrize("chosen, decays, edges", [
    ({"learning_rate": 0.1, "weight_decay": 1e-4}, [1e-5, 1e-4, 1e-3], {"learning_rate": "largest"}),
    ({"learning_rate": 1e-3, "weight_decay": 1e-3}, [1e-5, 1e-4, 1e-3],
     {"learning_rate": "smallest", "weight_decay": "largest"}),
    ({"learning_rate": 1e-2, "weight_decay": 1e-5}, [1e-5, 1e-4, 1e-3], {"weight_decay": "smallest"}),
    ({"learning_rate": 1e-2, "weight_decay": 0.0}, [0.0, 1e-5, 1e-4], {}),  # "none" is a real end
    ({"learning_rate": 1e-2, "weight_decay": 1e-5}, [0.0, 1e-5, 1e-4], {}),  # 0 lies below it
])
def test_grid_edges(chosen, decays, edges):
    tried = [t.hyperparameters() for t in grid("grid", "finetune", learning_rates=[1e-3, 1e-2, 0.1],
                                                weight_decays=decays)]
    assert grid_edges.edges(chosen, tried) == edges


def test_a_hyperparameter_tried_at_one_value_is_no_edge():
    assert grid_edges.edges({"learning_rate": 0.1, "weight_decay": 0.0},
                             [{"learning_rate": 0.1, "weight_decay": 0.0}]) == {}
    record = {"hyperparameters": {"l2": 1e5}}
    messages = []
    grid_edges.mark(record, {"l2": "largest"}, log=messages.append)
    assert record["at_grid_edge"] and record["grid_edges"] == {"l2": "largest"}
    assert len(messages) == 1 and "l2=1e+05 is the largest of its grid" in messages[0]
    grid_edges.mark(record, {}, log=messages.append)
    assert not record["at_grid_edge"] and len(messages) == 1


@pytest.mark.parametrize("examples, bit_steps", [(2_400, 500), (19_999, 500), (20_000, 10_000),
                                                 (499_999, 10_000), (1_281_167, 20_000)])
def test_hyperrule_chooses_bits_schedule_by_training_set_size(examples, bit_steps):
    # BiT-HyperRule (Kolesnikov et al. 2020, section 3.3): < 20k examples 500 steps, < 500k 10k,
    # else 20k, at batch 512 and learning rate 0.003; no weight decay. At batch 256, tfbench keeps
    # BiT's examples (twice the steps) and scales the learning rate linearly.
    at_paper_length = tuning.trials(TrainingSettings(search="hyperrule", train_steps=20_000), "finetune",
                                    tuning.SearchContext(batch_size=256, train_examples=examples))
    assert at_paper_length == [tuning.Trial(0.0015, 0.0, train_steps=2 * bit_steps)]
    at_bits_batch = tuning.trials(TrainingSettings(search="hyperrule", train_steps=20_000), "finetune",
                                  tuning.SearchContext(batch_size=512, train_examples=examples))
    assert at_bits_batch == [tuning.Trial(0.003, 0.0, train_steps=bit_steps)]
    shortened = tuning.trials(TrainingSettings(search="hyperrule", train_steps=400), "finetune",
                              tuning.SearchContext(batch_size=512, train_examples=examples))
    assert shortened == [tuning.Trial(0.003, 0.0, train_steps=bit_steps // 50)]


def test_halving_budgets_and_rung_sizes():
    settings = TrainingSettings(search="halving", train_steps=20_000)
    assert (settings.halving_eta, settings.halving_min_steps) == (3, 741)
    assert tuning.halving_budgets(settings) == [741, 2222, 6667, 20_000]
    assert tuning.halving_rung_sizes(settings, "finetune") == [56, 18, 6, 2]
    two = TrainingSettings(search="halving", train_steps=400, halving_eta=4, halving_min_steps=25)
    assert tuning.halving_budgets(two) == [25, 100, 400] and tuning.halving_rung_sizes(two, "scratch") == [56, 14, 3]
    first = tuning.trials(two, "scratch")
    assert len(first) == 56 and {(t.train_steps, t.rung) for t in first} == {(25, 0)}
    given = TrainingSettings(search="halving", train_steps=9, learning_rates=(0.1, 0.01), weight_decays=(0.0, 1e-4))
    assert tuning.trials(given, "finetune") == [tuning.Trial(lr, wd, 1, 0) for lr in (0.1, 0.01) for wd in (0.0, 1e-4)]
    assert tuning.halving_rung_sizes(given, "finetune") == [4, 1, 1]


@pytest.mark.parametrize("values, message", [
    ({"search": "paper", "halving_eta": 3}, "halving_eta=3 is used only by search 'halving'"),
    ({"search": "halving", "halving_eta": 1}, "halving_eta must be an integer >= 2, got 1"),
    ({"search": "halving", "train_steps": 100, "halving_min_steps": 101},
     r"halving_min_steps must be in \[1, train_steps=100\], got 101"),
])
def test_halving_settings_are_checked(values, message):
    with pytest.raises(InvalidSettingError, match=message):
        TrainingSettings(**values)


def test_unused_halving_settings_stay_out_of_records():
    from tfbench.settings import settings_from_dict, settings_to_dict

    assert "halving_eta" not in settings_to_dict(TrainingSettings())
    halving = TrainingSettings(search="halving", train_steps=90)
    assert settings_from_dict("finetune", settings_to_dict(halving)) == halving

"""A network kept from trial to trial: the same records as a fresh build, one trace, nothing kept.

Trials run through `trained.run_trial` with a new TrialTrainer each, as the study's tasks do, on
the tiny network and the digits dataset, a few steps each.
"""

import gc
import resource
import weakref

import pytest

from tfbench import learner, tuning
from tfbench.experiment import Experiment
from tfbench.regimes import trained, trainer
from tfbench.settings import Runtime, TrainingSettings

RUNTIME = Runtime(verbose=False, steps_per_loop=2, eval_every=2)
A = tuning.Trial(0.05, 1e-4)
B = tuning.Trial(0.2, 0.0)


def _experiment(tmp_path, regime="finetune", **settings):
    settings = {"search": "small", "train_steps": 4, "warmup_steps": 2, "dropout": 0.3, "bn_momentum": 0.9,
                **settings}
    return Experiment(regime=regime, model="tiny", dataset="digits", output_dir=str(tmp_path),
                      settings=TrainingSettings(**settings), image_size=8, batch_size=8)


def _run(experiment, trial):
    record = trained.run_trial(experiment, trial, RUNTIME, log=lambda message: None)
    assert record["status"] == "ok", record
    return record


def _outcome(record):
    training = record["training"]
    return (record["validation_score"], record["validation_curve"], training["final_loss"], training["steps"])


def _resident_mb():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2 ** 20


@pytest.fixture(autouse=True)
def _fresh_process_state():
    trainer.release_kept_learner()
    yield
    trainer.release_kept_learner()


@pytest.mark.slow
@pytest.mark.parametrize("regime", ["finetune", "scratch"])
def test_a_kept_network_gives_the_records_of_a_fresh_build_in_either_order(tmp_path, regime):
    """A then B, and B then A: each trial's record is the same whether its network was built for it
    or kept from the other trial (weights, optimizer state, schedule, weight decay, dropout reset)."""
    first_a = _run(_experiment(tmp_path / "ab", regime), A)
    then_b = _run(_experiment(tmp_path / "ab", regime), B)
    trainer.release_kept_learner()
    first_b = _run(_experiment(tmp_path / "ba", regime), B)
    then_a = _run(_experiment(tmp_path / "ba", regime), A)
    assert _outcome(first_a) == _outcome(then_a)
    assert _outcome(first_b) == _outcome(then_b)
    assert _outcome(first_a) != _outcome(first_b)  # the trials differ, so the comparison can fail
    assert first_a["timings"]["build_seconds"] > 0 and then_b["timings"]["build_seconds"] == 0


@pytest.mark.slow
def test_trials_of_one_network_trace_once_and_a_new_network_frees_the_old(tmp_path):
    """After the first trial, more trials of the same network neither grow the process nor register
    new functions in TensorFlow's eager context (each trace used to leave its loop and cond bodies
    there for good); a trial of another network frees the old one: its variables and functions."""
    from tensorflow.python.eager import context

    def functions():
        gc.collect()
        return set(context.context().list_function_names())

    experiment = _experiment(tmp_path)
    before = functions()
    _run(experiment, A)
    after_first = functions()
    _run(experiment, B)
    resident = _resident_mb()
    for index in range(3):
        _run(experiment, tuning.Trial(0.01 * (index + 1), 1e-5))
    assert _resident_mb() - resident <= 15  # about 10 MB per trial when each built its own network
    assert functions() - after_first == set()

    kept = next(iter(trainer._KEPT_LEARNER.values()))
    old_variable = weakref.ref(kept.model.variables[0])
    del kept
    _run(_experiment(tmp_path, dropout=0.0), A)  # another head: another network
    gc.collect()
    assert old_variable() is None
    first_network = {name for name in after_first - before if not name.startswith(learner.SHARED_FUNCTIONS)}
    assert any(name.startswith("while_body") for name in first_network)  # the training loop's
    assert first_network & functions() == set()

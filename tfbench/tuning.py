"""Hyperparameter searches for fine-tuning and training from scratch, and selection on validation.

A search is the list of trials (learning rate x weight decay) a run trains on "train" and scores on
"val"; selection picks the best validation score; the regime (tfbench.finetune) then retrains the
choice on "trainval" and reads "test" once. This module never trains: it says what to train and
which result wins.

Trials are shared between searches: a trial's identity is the experiment without the settings that
only choose the list of trials (`SEARCH_CHOICE_SETTINGS`), so a trial trained for the "small" grid
is reused by the "paper" grid, which contains it.

Successive halving ("halving") searches in rungs: rung 0 trains every configuration of the paper's
grid at the smallest budget, rung k+1 the best 1/eta of rung k at eta times its budget, the last
rung at train_steps; only the last rung's scores choose. A rung's trials are known only once the
previous rung has finished, so `halving_rung_trials` computes them from its records. A trial that
trains for a budget of its own carries it (`Trial.train_steps`) in its id: a 100-step trial is not
a 1,000-step one. Each budget is a full cosine schedule of its own length from the pretrained
weights, not a slice of a longer schedule, so a configuration is always scored after its learning
rate has decayed to zero: a truncated cosine (the learning rate still high when scored) penalises
large learning rates, which only pay off once annealed.

Continuing halving ("halving_continue", ASHA-style promotion: Li et al. 2020, "A System for
Massively Parallel Hyperparameter Tuning") keeps the work instead: every trial follows the cosine
schedule of the full budget (`Trial.schedule_steps`), and rung k continues a promoted trial from its
rung k-1 checkpoint (`Trial.continues`) on to the rung's budget, so a survivor trains as many steps
as its last budget, not the sum of the budgets. The price is the truncated schedule that restarting
avoids: a trial is scored with its learning rate part-way down. Since training data and
augmentation are a function of (seed, step), a continued trial ends exactly where one uninterrupted
trial of its budget on that schedule ends; a trial's id therefore names its budget and schedule but
not where it continued from, and a last-rung trial (its schedule its budget) is the restarting
search's trial of that budget.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from tfbench import hyperrule, protocol
from tfbench.experiment import identity
from tfbench.registry import Registry
from tfbench.settings import SEARCHES, TRAINED_REGIMES, InvalidSettingError, TrainingSettings

# Laptop presets: every other paper learning rate around the usual optimum, two weight decays.
SMALL_GRIDS = {
    "finetune": ((1e-3, 1e-2, 1e-1), (1e-5, 0.0)),
    "scratch": ((1e-2, 1e-1, 1.0), (1e-4, 1e-3)),
}
# A halving trial's budget is in its id, so eta and the smallest budget only choose trials.
SEARCH_CHOICE_SETTINGS = ("search", "learning_rate", "weight_decay", "learning_rates", "weight_decays",
                          "halving_eta", "halving_min_steps")


@dataclasses.dataclass(frozen=True)
class Trial:
    """One configuration a search trains; `weight_decay` as protocol.WEIGHT_DECAY_CONVENTION, 0 = none."""

    learning_rate: float
    weight_decay: float
    train_steps: Optional[int] = None  # its own budget; None = the settings' train_steps
    rung: Optional[int] = None  # successive halving's rung
    schedule_steps: Optional[int] = None  # its cosine schedule's length when not its budget
    continues: Optional[str] = None  # the trial id whose checkpoint it continues (halving_continue)

    @property
    def trial_id(self) -> str:
        """A stable, file-safe name, e.g. "lr0.01_wd1e-05", "lr0.01_wd1e-05_rung1_steps300" or, on
        a longer schedule, "lr0.01_wd1e-05_rung1_steps300_of2700"."""
        name = f"lr{self.learning_rate:.4g}_wd{self.weight_decay:.4g}"
        if self.rung is not None:
            name += f"_rung{self.rung}"
        if self.train_steps is not None:
            name += f"_steps{self.train_steps}"
        return name if self.schedule_steps is None else name + f"_of{self.schedule_steps}"

    def to_dict(self) -> Dict[str, Any]:
        """Plain data: `Trial(**trial.to_dict())` is the same trial."""
        return dataclasses.asdict(self)

    def hyperparameters(self) -> Dict[str, float]:
        return {"learning_rate": self.learning_rate, "weight_decay": self.weight_decay}


def _cross(learning_rates: Sequence[float], weight_decays: Sequence[float]) -> List[Trial]:
    return [Trial(float(lr), float(wd)) for lr in learning_rates for wd in weight_decays]


def halving_budgets(settings: TrainingSettings) -> List[int]:
    """Each rung's training steps, smallest first: train_steps / eta^k down to halving_min_steps."""
    eta, full = settings.halving_eta, settings.train_steps
    rungs = 1
    while round(full / eta ** rungs) >= settings.halving_min_steps:
        rungs += 1
    return [max(1, round(full / eta ** k)) for k in reversed(range(rungs))]


def _halving_grid(settings: TrainingSettings, regime: str) -> List[Trial]:
    """What halving searches: the given values' grid if any, else the paper's."""
    if settings.learning_rates:
        return _cross(settings.learning_rates, settings.weight_decays)
    return _cross(*protocol.PAPER_GRIDS[regime])


def halving_rung_sizes(settings: TrainingSettings, regime: str) -> List[int]:
    """How many trials each rung trains at most (fewer when trials of the rung before diverged)."""
    sizes = [len(_halving_grid(settings, regime))]
    for _ in halving_budgets(settings)[1:]:
        sizes.append(max(1, sizes[-1] // settings.halving_eta))
    return sizes


def halving_rung_steps(settings: TrainingSettings) -> List[int]:
    """The steps each trial of a rung trains: its budget when restarting, the budget less the one
    before when continuing."""
    budgets = halving_budgets(settings)
    if settings.search != "halving_continue":
        return budgets
    return [budget - before for budget, before in zip(budgets, [0] + budgets[:-1])]


def _halving_trial(settings: TrainingSettings, trial: Trial, rung: int, continues: Optional[str]) -> Trial:
    """`trial` at rung `rung`'s budget; continuing, on the full budget's schedule (None when that is
    its budget: then it is the restarting search's trial of that budget)."""
    budget = halving_budgets(settings)[rung]
    if settings.search != "halving_continue":
        return dataclasses.replace(trial, train_steps=budget, rung=rung)
    schedule = settings.train_steps if budget < settings.train_steps else None
    return dataclasses.replace(trial, train_steps=budget, rung=rung, schedule_steps=schedule, continues=continues)


def _halving_first_rung(settings: TrainingSettings, regime: str) -> List[Trial]:
    return [_halving_trial(settings, trial, 0, None) for trial in _halving_grid(settings, regime)]


def halving_rung_trials(settings: TrainingSettings, rung: int, previous: Sequence[Trial],
                        previous_records: Sequence[Mapping[str, Any]]) -> List[Trial]:
    """Rung `rung`'s trials: the best 1/eta of the rung before (its trials and their records, in
    the same order) by validation score, among those that finished "ok", in grid order; ties go to
    the earlier trial. Continuing, each goes on from its trial of the rung before."""
    keep = max(1, len(previous) // settings.halving_eta)
    ok = [i for i, record in enumerate(previous_records) if record["status"] == "ok"]
    ranked = sorted(ok, key=lambda i: -previous_records[i]["validation_score"])
    return [_halving_trial(settings, previous[i], rung, previous[i].trial_id) for i in sorted(ranked[:keep])]


@dataclasses.dataclass(frozen=True)
class SearchContext:
    """What a search may need to know of the run besides its settings (hyperrule does)."""

    batch_size: int = protocol.BATCH_SIZE
    train_examples: Optional[int] = None


def _hyperrule(settings: TrainingSettings, size: SearchContext) -> List[Trial]:
    if size.train_examples is None:
        raise ValueError("search 'hyperrule' needs the training split's size")
    return [Trial(hyperrule.learning_rate(size.batch_size), hyperrule.WEIGHT_DECAY,
                  train_steps=hyperrule.train_steps(size.train_examples, settings.train_steps,
                                                     size.batch_size))]


SEARCH_TRIALS: Registry[Callable[[TrainingSettings, str, SearchContext], List[Trial]]] = Registry(
    "search", "valid: " + ", ".join(SEARCHES))
SEARCH_TRIALS.register("paper", lambda settings, regime, size: _cross(*protocol.PAPER_GRIDS[regime]))
SEARCH_TRIALS.register("small", lambda settings, regime, size: _cross(*SMALL_GRIDS[regime]))
SEARCH_TRIALS.register(
    "grid", lambda settings, regime, size: _cross(settings.learning_rates, settings.weight_decays))
SEARCH_TRIALS.register(
    "none", lambda settings, regime, size: [Trial(settings.learning_rate, settings.weight_decay)])
SEARCH_TRIALS.register("halving", lambda settings, regime, size: _halving_first_rung(settings, regime))
SEARCH_TRIALS.register("halving_continue", lambda settings, regime, size: _halving_first_rung(settings, regime))
SEARCH_TRIALS.register("hyperrule", lambda settings, regime, size: _hyperrule(settings, size))


def trials(settings: TrainingSettings, regime: str, size: SearchContext = SearchContext()) -> List[Trial]:
    """The trials of `settings.search` for regime "finetune" or "scratch", in grid order; for
    halving, its first rung's."""
    if regime not in TRAINED_REGIMES:
        raise InvalidSettingError(f"unknown regime {regime!r} for a training search; valid choices: "
                                  + ", ".join(TRAINED_REGIMES))
    return SEARCH_TRIALS.get(settings.search)(settings, regime, size)


def best_trial(trial_records: Sequence[Mapping[str, Any]]) -> Optional[Mapping[str, Any]]:
    """The trial with the best validation score among those that finished "ok".

    Reads only each record's "status" and "validation_score"; ties go to the earlier trial in grid
    order. None when no trial finished.
    """
    best = None
    for record in trial_records:
        if record["status"] != "ok":
            continue
        if best is None or record["validation_score"] > best["validation_score"]:
            best = record
    return best


def trial_identity(experiment_config: Mapping[str, Any]) -> Dict[str, Any]:
    """What a trial's result depends on: the experiment's identity without the search's choice."""
    config = identity(experiment_config)
    config["settings"] = {name: value for name, value in config["settings"].items()
                          if name not in SEARCH_CHOICE_SETTINGS}
    return config

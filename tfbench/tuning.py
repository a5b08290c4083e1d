"""Hyperparameter searches for fine-tuning and training from scratch, and selection on validation.

A search is the list of trials (learning rate x weight decay) a run trains on "train" and scores on
"val"; selection picks the best validation score; the regime (tfbench.finetune) then retrains the
choice on "trainval" and reads "test" once. This module never trains: it says what to train and
which result wins.

Trials are shared between searches: a trial's identity is the experiment without the settings that
only choose the list of trials (`SEARCH_CHOICE_SETTINGS`), so a trial trained for the "small" grid
is reused by the "paper" grid, which contains it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from tfbench import protocol
from tfbench.experiment import identity
from tfbench.registry import Registry
from tfbench.settings import SEARCHES, TRAINED_REGIMES, InvalidSettingError, TrainingSettings

# Laptop presets: every other paper learning rate around the usual optimum, two weight decays.
SMALL_GRIDS = {
    "finetune": ((1e-3, 1e-2, 1e-1), (1e-5, 0.0)),
    "scratch": ((1e-2, 1e-1, 1.0), (1e-4, 1e-3)),
}
SEARCH_CHOICE_SETTINGS = ("search", "learning_rate", "weight_decay", "learning_rates", "weight_decays")


@dataclasses.dataclass(frozen=True)
class Trial:
    """One configuration a search trains; `weight_decay` as protocol.WEIGHT_DECAY_CONVENTION, 0 = none."""

    learning_rate: float
    weight_decay: float

    @property
    def trial_id(self) -> str:
        """A stable, file-safe name, e.g. "lr0.01_wd1e-05"."""
        return f"lr{self.learning_rate:.4g}_wd{self.weight_decay:.4g}"

    def hyperparameters(self) -> Dict[str, float]:
        return {"learning_rate": self.learning_rate, "weight_decay": self.weight_decay}


def _cross(learning_rates: Sequence[float], weight_decays: Sequence[float]) -> List[Trial]:
    return [Trial(float(lr), float(wd)) for lr in learning_rates for wd in weight_decays]


SEARCH_TRIALS: Registry[Callable[[TrainingSettings, str], List[Trial]]] = Registry(
    "search", "valid: " + ", ".join(SEARCHES))
SEARCH_TRIALS.register("paper", lambda settings, regime: _cross(*protocol.PAPER_GRIDS[regime]))
SEARCH_TRIALS.register("small", lambda settings, regime: _cross(*SMALL_GRIDS[regime]))
SEARCH_TRIALS.register(
    "grid", lambda settings, regime: _cross(settings.learning_rates, settings.weight_decays))
SEARCH_TRIALS.register(
    "none", lambda settings, regime: [Trial(settings.learning_rate, settings.weight_decay)])


def trials(settings: TrainingSettings, regime: str) -> List[Trial]:
    """The trials of `settings.search` for regime "finetune" or "scratch", in grid order."""
    if regime not in TRAINED_REGIMES:
        raise InvalidSettingError(f"unknown regime {regime!r} for a training search; valid choices: "
                                  + ", ".join(TRAINED_REGIMES))
    return SEARCH_TRIALS.get(settings.search)(settings, regime)


def select(trial_records: Sequence[Mapping[str, Any]]) -> Optional[Mapping[str, Any]]:
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


def grid_edges(chosen: Dict[str, float], tried: List[Dict[str, float]]) -> Dict[str, str]:
    """Which chosen hyperparameters lie at an end of the values tried: {"name": "largest" |
    "smallest"}. A hyperparameter tried at one value was not searched; 0 (none) is a real end
    of a weight-decay grid, never a sign that the optimum lies beyond it."""
    edges = {}
    for name, value in chosen.items():
        values = sorted({trial[name] for trial in tried})
        if len(values) < 2 or value <= 0:
            continue
        if value == values[-1]:
            edges[name] = "largest"
        elif value == values[0]:
            edges[name] = "smallest"
    return edges


def mark_grid_edges(record: Dict[str, Any], edges: Mapping[str, str],
                    log: Callable[[str], None] = print) -> None:
    """Set `at_grid_edge` / `grid_edges` on a finished record, warning once when at an edge."""
    record["at_grid_edge"], record["grid_edges"] = bool(edges), dict(edges)
    if edges:
        listed = ", ".join(f"{name}={record['hyperparameters'][name]:.3g} is the {end} of its grid"
                           for name, end in edges.items())
        log(f"warning: the choice lies at the edge of its grid ({listed}); the optimum may lie "
            "beyond it")

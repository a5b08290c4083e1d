"""What a run is asked to do, as typed values checked once, and how it executes.

Two kinds of knobs, kept apart (docs/DESIGN.md, "Identity and runtime"):
- a regime's settings (`ProbeSettings`, `TrainingSettings`) change its result, so they are part
  of a run's identity: a finished run with other settings is never silently reused;
- the `Runtime` (strategy, checkpoint interval, validation logging, progress display) says how and
  where a run executes: changing it neither conflicts with a finished run nor retrains a finished
  trial.

Every value is validated when the dataclass is made, with one-line errors naming the bad value and
what is allowed, so a bad flag fails before TensorFlow is imported. This module imports nothing
heavy.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from tfbench import protocol

PAPER_REGIMES = ("probe", "finetune", "scratch")
# "estimate": transferability estimators of the frozen training features (tfbench.estimators),
# scored against the other regimes' test scores by the report; it trains nothing.
REGIMES = PAPER_REGIMES + ("estimate",)
TRAINED_REGIMES = ("finetune", "scratch")
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")
# "auto" resolves per device (devices.resolve_precision); the others are Keras dtype policies.
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
L2_SEARCHES = ("paper", "fast")  # tfbench.linear implements them
# Where the probed features come from: the backbone's ImageNet weights (the paper), or a random
# initialisation of the same network (how much of the transfer is the architecture alone).
PROBE_INITS = ("imagenet", "random")
# Batch-norm momentum: "paper" = protocol.bn_momentum's rule, "backbone" = each network's own, or
# a number in [0, 1).
BN_MOMENTUM_RULES = ("paper", "backbone")
# tfbench.tuning implements them: the paper's grid, a 3 x 2 laptop grid, the cross product of given
# values, one given configuration, successive halving over the paper's grid (each rung restarting
# its trials, or continuing them from the rung before), BiT-HyperRule's one configuration
# (tfbench.hyperrule).
SEARCHES = ("paper", "small", "grid", "none", "halving", "halving_continue", "hyperrule")
# Successive halving: "halving" trains each rung's trials afresh on a schedule of the rung's length;
# "halving_continue" (ASHA-style promotion) trains every trial on the full budget's schedule and
# continues a promoted trial from its checkpoint of the rung before (tfbench.tuning).
HALVING_SEARCHES = ("halving", "halving_continue")
HALVING_ETA = 3  # keep the best third at each rung (Jamieson & Talwalkar 2016; Li et al. 2017)
HALVING_DEFAULT_RUNGS = 4  # with eta 3: budgets train_steps / 27, / 9, / 3 and train_steps
# Settings absent from records made before they existed: left out of a record while unused, so
# that those runs keep their identity.
OPTIONAL_SETTINGS = ("halving_eta", "halving_min_steps")


class InvalidSettingError(ValueError):
    """A setting outside its valid range; the message names the value and what is allowed."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise InvalidSettingError(message)


def _choice(kind: str, value: str, choices: Tuple[str, ...]) -> None:
    _check(value in choices, f"unknown {kind} {value!r}; valid choices: {', '.join(choices)}")


@dataclasses.dataclass(frozen=True)
class ProbeSettings:
    """The linear probe: which L2 search chooses the penalty (`paper` = all 45 values)."""

    l2_search: str = "paper"
    init: str = "imagenet"

    def __post_init__(self):
        _choice("l2 search", self.l2_search, L2_SEARCHES)
        _choice("probe init", self.init, PROBE_INITS)


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    """Fine-tuning or training from scratch: the search, the schedule and the regularisation.

    `search` picks the trials: "paper" (the paper's grid for the regime), "small" (a 3 x 2 laptop
    grid), "grid" (every pair of `learning_rates` x `weight_decays`), "none" (one trial with
    `learning_rate` and `weight_decay`), "halving" (successive halving over the paper's grid: every
    configuration at `halving_min_steps`, the best 1/`halving_eta` on to `halving_eta` times the
    budget, up to `train_steps`; defaults eta 3 and train_steps / 27; over `learning_rates` x
    `weight_decays` instead when given), "halving_continue" (the same rungs, each trial on the
    full budget's schedule, a promoted trial continued from its checkpoint), "hyperrule" (one
    configuration by BiT-HyperRule, tfbench.hyperrule). Values that only another search uses are
    refused rather than silently ignored. `weight_decay` follows the paper's convention
    (protocol.WEIGHT_DECAY_CONVENTION); 0 = none. `bn_momentum`: "paper" (the rule
    protocol.bn_momentum, from the training split's size and the batch size), "backbone" (each
    network's own), or a number.
    """

    search: str = "paper"
    train_steps: int = protocol.FINETUNE_STEPS
    learning_rate: Optional[float] = None
    weight_decay: Optional[float] = None
    learning_rates: Tuple[float, ...] = ()
    weight_decays: Tuple[float, ...] = ()
    warmup_steps: int = 0
    label_smoothing: float = 0.0
    dropout: float = 0.0
    bn_momentum: Union[str, float] = "paper"
    halving_eta: Optional[int] = None
    halving_min_steps: Optional[int] = None

    def __post_init__(self):
        object.__setattr__(self, "learning_rates", tuple(float(v) for v in self.learning_rates))
        object.__setattr__(self, "weight_decays", tuple(float(v) for v in self.weight_decays))
        _choice("search", self.search, SEARCHES)
        single = self.search == "none"
        given = self.search == "grid"
        halving_over_given = self.search in HALVING_SEARCHES and bool(self.learning_rates or self.weight_decays)
        for name in ("learning_rate", "weight_decay"):
            value = getattr(self, name)
            _check(single or value is None,
                   f"{name}={value} is used only by search 'none' (search is {self.search!r}); "
                   f"drop it, or use search 'none'")
            _check(not single or value is not None,
                   f"search 'none' trains one configuration: give both learning_rate and "
                   f"weight_decay (got learning_rate={self.learning_rate}, "
                   f"weight_decay={self.weight_decay})")
        for name in ("learning_rates", "weight_decays"):
            values = getattr(self, name)
            _check(given or halving_over_given or not values,
                   f"{name}={','.join(map(str, values))} is used only by search 'grid', "
                   f"{', '.join(map(repr, HALVING_SEARCHES))} (search is {self.search!r}); drop it, "
                   f"or use search 'grid'")
            _check(not (given or halving_over_given) or values,
                   f"search {self.search!r} over given values trains every pair: give both learning_rates "
                   f"and weight_decays (got learning_rates={list(self.learning_rates)}, "
                   f"weight_decays={list(self.weight_decays)})")
        rates = self.learning_rates + (() if self.learning_rate is None else (self.learning_rate,))
        decays = self.weight_decays + (() if self.weight_decay is None else (self.weight_decay,))
        _check(all(rate > 0 for rate in rates), f"learning rates must be positive, got {list(rates)}")
        _check(all(decay >= 0 for decay in decays),
               f"weight decays must be >= 0 (0 = none), got {list(decays)}")
        _check(self.train_steps >= 1, f"train_steps must be at least 1, got {self.train_steps}")
        self._check_halving()
        _check(0 <= self.warmup_steps < self.train_steps,
               f"warmup_steps must be in [0, train_steps={self.train_steps}), got {self.warmup_steps}")
        _check(0 <= self.label_smoothing < 1,
               f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        _check(0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")
        if isinstance(self.bn_momentum, str):
            _choice("bn_momentum", self.bn_momentum, BN_MOMENTUM_RULES)
        else:
            _check(0 <= self.bn_momentum < 1,
                   f"bn_momentum must be in [0, 1) or one of {', '.join(BN_MOMENTUM_RULES)}, "
                   f"got {self.bn_momentum}")

    def _check_halving(self) -> None:
        """Refuse halving values for other searches; for halving, fill in and check the defaults."""
        if self.search not in HALVING_SEARCHES:
            for name in OPTIONAL_SETTINGS:
                _check(getattr(self, name) is None,
                       f"{name}={getattr(self, name)} is used only by search "
                       f"{' or '.join(map(repr, HALVING_SEARCHES))} (search is {self.search!r}); "
                       f"drop it, or use search 'halving'")
            return
        eta = HALVING_ETA if self.halving_eta is None else int(self.halving_eta)
        _check(eta >= 2, f"halving_eta must be an integer >= 2, got {self.halving_eta}")
        low = self.halving_min_steps
        if low is None:
            low = max(1, round(self.train_steps / eta ** (HALVING_DEFAULT_RUNGS - 1)))
        _check(1 <= low <= self.train_steps,
               f"halving_min_steps must be in [1, train_steps={self.train_steps}], got {low}")
        object.__setattr__(self, "halving_eta", eta)
        object.__setattr__(self, "halving_min_steps", int(low))

    @classmethod
    def paper(cls, regime: str) -> "TrainingSettings":
        """The paper's protocol for `regime` (its grid and schedule length)."""
        _choice("trained regime", regime, TRAINED_REGIMES)
        return cls(search="paper", train_steps=protocol.PAPER_STEPS[regime])


@dataclasses.dataclass(frozen=True)
class EstimateSettings:
    """The estimate regime has no setting of its own: it scores the ImageNet features of the
    training split with every estimator (their fixed choices are recorded in each run's details)."""


SETTINGS_TYPES = {"probe": ProbeSettings, "finetune": TrainingSettings, "scratch": TrainingSettings,
                  "estimate": EstimateSettings}


def settings_to_dict(settings) -> Dict[str, Any]:
    """Plain JSON data (tuples as lists), the form records store; unused OPTIONAL_SETTINGS left out."""
    return json_ready({name: value for name, value in dataclasses.asdict(settings).items()
                       if not (name in OPTIONAL_SETTINGS and value is None)})


def settings_from_dict(regime: str, config: Mapping[str, Any]):
    """The settings of `regime` from a record's dict; unknown keys are an error that names them."""
    _choice("regime", regime, REGIMES)
    kind = SETTINGS_TYPES[regime]
    known = {field.name for field in dataclasses.fields(kind)}
    unknown = sorted(set(config) - known)
    _check(not unknown, f"unknown {regime} settings {unknown}; valid: {', '.join(sorted(known))}")
    return kind(**{name: tuple(value) if isinstance(value, list) else value
                   for name, value in config.items()})


def json_ready(value):
    """Tuples to lists, recursively: what JSON would give back."""
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    return value


@dataclasses.dataclass(frozen=True)
class Runtime:
    """How and where a run executes; never part of its identity.

    strategy: devices.make_strategy's name. checkpoint_every: steps between checkpoints (a rerun
    resumes from the last). eval_every: during a trial, score the validation split every so many
    steps (TensorBoard curves, and the trial record's `validation_curve`); None = at every
    checkpoint, 0 = only at the end. steps_per_loop: training steps per compiled call.
    """

    strategy: str = "auto"
    checkpoint_every: int = 1000
    eval_every: Optional[int] = None
    steps_per_loop: int = 50
    verbose: bool = True

    def __post_init__(self):
        _choice("strategy", self.strategy, STRATEGIES)
        _check(self.checkpoint_every >= 1,
               f"checkpoint_every must be at least 1, got {self.checkpoint_every}")
        _check(self.eval_every is None or self.eval_every >= 0,
               f"eval_every must be >= 0 (0 = only at the end), got {self.eval_every}")
        _check(self.steps_per_loop >= 1, f"steps_per_loop must be at least 1, got {self.steps_per_loop}")

    @property
    def validation_interval(self) -> int:
        """Steps between validation scores during a trial; 0 = none before the end."""
        return self.checkpoint_every if self.eval_every is None else self.eval_every

"""The flags of the fine-tune and scratch binaries, and the settings they ask for."""

from __future__ import annotations

from absl import flags

from tfbench import protocol
from tfbench.app import common_flags
from tfbench.settings import (BN_MOMENTUM_RULES, HALVING_ETA, SEARCHES, InvalidSettingError, Runtime,
                              TrainingSettings)

FLAGS = flags.FLAGS

flags.DEFINE_enum(
    "search", "paper", SEARCHES,
    "Hyperparameter search: 'paper' = the paper's grid (fine-tune 7 learning rates x 8 weight "
    "decays incl. none; scratch 7 x 8), 'small' = a 3 x 2 laptop preset, 'grid' = every pair of "
    "--learning_rates x --weight_decays, 'none' = one trial with --learning_rate and "
    "--weight_decay, 'halving' = successive halving over the paper's grid (--halving_eta, "
    "--halving_min_steps), each rung restarting its trials on a schedule of its own length, "
    "'halving_continue' = the same rungs, every trial on the full budget's schedule and a promoted "
    "trial continued from its checkpoint of the rung before (ASHA-style), 'hyperrule' = "
    "BiT-HyperRule's one configuration, its length by the training split's size (tfbench.hyperrule).")
flags.DEFINE_integer(
    "halving_eta", None,
    f"Only with --search=halving or halving_continue: each rung keeps the best 1/eta of the one "
    f"before and trains it eta times longer (default {HALVING_ETA}).", lower_bound=2)
flags.DEFINE_integer(
    "halving_min_steps", None,
    "Only with --search=halving or halving_continue: the first rung's training steps (default "
    "train_steps / eta^3, so four rungs); rungs train train_steps / eta^k steps for every k down to this.", lower_bound=1)
flags.DEFINE_float("learning_rate", None, "Peak learning rate; only with --search=none.",
                   lower_bound=0.0)
flags.DEFINE_float(
    "weight_decay", None,
    "Weight decay, only with --search=none; the paper's convention: an L2 penalty of "
    "weight_decay / learning_rate on kernels only (0 = none).", lower_bound=0.0)
flags.DEFINE_list("learning_rates", None,
                  "Peak learning rates, comma-separated; only with --search=grid (or a halving search, "
                  "to halve over them instead of the paper's grid).")
flags.DEFINE_list("weight_decays", None,
                  "Weight decays, comma-separated (0 = none); only with --search=grid (or a halving search).")
flags.DEFINE_integer(
    "train_steps", None,
    f"Training steps per trial and for the final retrain; default the paper's "
    f"({protocol.FINETUNE_STEPS:,} fine-tune, {protocol.SCRATCH_STEPS:,} scratch).", lower_bound=1)
flags.DEFINE_integer("warmup_steps", 0,
                     "Linear learning-rate warm-up steps before the cosine decay.", lower_bound=0)
flags.DEFINE_float("label_smoothing", 0.0, "Label smoothing in [0, 1).",
                   lower_bound=0.0, upper_bound=0.999)
flags.DEFINE_float("dropout", 0.0, "Dropout rate before the new head, in [0, 1).",
                   lower_bound=0.0, upper_bound=0.999)
flags.DEFINE_string(
    "bn_momentum", "paper",
    "Momentum of the batch-norm moving statistics (Keras convention: new = m * old + (1 - m) * "
    "batch): 'paper' = max(1 - 10 / steps per epoch, 0.9) from the training split's size and the "
    "batch size; 'backbone' = each network's own; or a number in [0, 1).")
flags.DEFINE_integer(
    "checkpoint_every", 1000,
    "Steps between checkpoints; a killed run given the same command again resumes from the last "
    "one. Changing it never conflicts with a finished run.", lower_bound=1)
flags.DEFINE_integer(
    "eval_every", None,
    "Score the validation split every N steps of a trial (TensorBoard curves and the trial "
    "record's validation_curve); default: at every checkpoint; 0: only at the end.", lower_bound=0)
flags.adopt_module_key_flags(common_flags)



def settings_from_flags(regime: str) -> TrainingSettings:
    """The validated training settings the flags ask for (the paper's where a flag is not given)."""
    steps = FLAGS.train_steps or protocol.PAPER_STEPS[regime]
    return TrainingSettings(
        search=FLAGS.search, train_steps=steps, learning_rate=FLAGS.learning_rate,
        weight_decay=FLAGS.weight_decay,
        learning_rates=_floats("learning_rates"), weight_decays=_floats("weight_decays"),
        warmup_steps=FLAGS.warmup_steps, label_smoothing=FLAGS.label_smoothing,
        dropout=FLAGS.dropout, bn_momentum=_bn_momentum(FLAGS.bn_momentum),
        halving_eta=FLAGS.halving_eta, halving_min_steps=FLAGS.halving_min_steps)


def _bn_momentum(text: str):
    if text in BN_MOMENTUM_RULES:
        return text
    try:
        return float(text)
    except ValueError:
        raise InvalidSettingError(f"--bn_momentum takes a number in [0, 1) or one of "
                                  f"{', '.join(BN_MOMENTUM_RULES)}, got {text!r}") from None


def runtime_from_flags() -> Runtime:
    return common_flags.runtime_from_flags(checkpoint_every=FLAGS.checkpoint_every,
                                           eval_every=FLAGS.eval_every)


def _floats(flag: str) -> tuple:
    try:
        return tuple(float(text) for text in FLAGS[flag].value or ())
    except ValueError:
        raise InvalidSettingError(f"--{flag} takes numbers, got {FLAGS[flag].value}") from None



def main(regime: str) -> None:
    """The fine-tune and scratch binaries' entry point: one protocol, two initialisations."""
    from tfbench.regimes import trained

    common_flags.main(regime, lambda: settings_from_flags(regime), trained.run, runtime_from_flags)

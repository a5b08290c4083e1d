"""The fine-tuning regime: every weight trained, starting from ImageNet, with a new linear head.

    python -m tfbench.finetune --flagfile=flags/finetune.flags --model=mobilenet_v2 --dataset=dtd
    python -m tfbench.finetune --flagfile=flags/finetune_small.flags   # tiny backbone, digits, minutes

Searches learning rate x weight decay on validation, retrains the best on train+val and scores test
(tfbench.training.run_regime). Its flags are shared with tfbench.scratch, defined here once.
"""

from __future__ import annotations

from typing import Any, Dict

from absl import flags

from tfbench import flags_common, search, training
from tfbench.experiment import InvalidSettingError

FLAGS = flags.FLAGS
_DEFAULTS = training.DEFAULT_SETTINGS

flags.DEFINE_enum(
    "search", _DEFAULTS["search"], search.SEARCHES,
    "Hyperparameter search: 'paper' = the paper's grid (fine-tune 7 learning rates x 8 weight "
    "decays incl. none; scratch 7 x 8), 'small' = a 3 x 2 laptop preset, 'grid' = every pair of "
    "--learning_rates x --weight_decays, 'none' = one trial with --learning_rate and "
    "--weight_decay.")
flags.DEFINE_float("learning_rate", _DEFAULTS["learning_rate"],
                   "Peak learning rate for --search=none.", lower_bound=0.0)
flags.DEFINE_float(
    "weight_decay", _DEFAULTS["weight_decay"],
    "Weight decay for --search=none, the paper's convention: an L2 penalty of weight_decay / "
    "learning_rate on kernels only (0 = none).", lower_bound=0.0)
flags.DEFINE_list("learning_rates", _DEFAULTS["learning_rates"],
                  "Peak learning rates for --search=grid, comma-separated.")
flags.DEFINE_list("weight_decays", _DEFAULTS["weight_decays"],
                  "Weight decays for --search=grid, comma-separated (0 = none).")
flags.DEFINE_integer("train_steps", _DEFAULTS["train_steps"],
                     "Training steps per trial and for the final retrain.", lower_bound=1)
flags.DEFINE_integer("warmup_steps", _DEFAULTS["warmup_steps"],
                     "Linear learning-rate warm-up steps before the cosine decay.", lower_bound=0)
flags.DEFINE_float("label_smoothing", _DEFAULTS["label_smoothing"], "Label smoothing in [0, 1).",
                   lower_bound=0.0, upper_bound=0.999)
flags.DEFINE_float("dropout", _DEFAULTS["dropout"], "Dropout rate before the new head, in [0, 1).",
                   lower_bound=0.0, upper_bound=0.999)
flags.DEFINE_float(
    "bn_momentum", _DEFAULTS["bn_momentum"],
    "Momentum of the batch-norm moving statistics (Keras convention: new = m * old + (1 - m) * "
    "batch); default: each backbone's own.", lower_bound=0.0, upper_bound=0.999)
flags.DEFINE_enum(
    "strategy", _DEFAULTS["strategy"], training.STRATEGIES,
    "Devices: auto = MirroredStrategy over all local GPUs (one device otherwise); one_device; "
    "mirrored; multi_worker = MultiWorkerMirroredStrategy from TF_CONFIG (spans hosts; "
    "--output_dir must be shared storage).")
flags.DEFINE_integer("checkpoint_every", _DEFAULTS["checkpoint_every"],
                     "Steps between checkpoints; a rerun resumes from the last one.", lower_bound=1)


def settings_from_flags() -> Dict[str, Any]:
    """The training settings of a fine-tune or scratch experiment (stored in Experiment.settings)."""
    settings = {name: FLAGS[name].value for name in _DEFAULTS}
    for name in ("learning_rates", "weight_decays"):
        if settings[name] is not None:
            settings[name] = [_float(name, value) for value in settings[name]]
    return settings


def _float(flag: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InvalidSettingError(f"--{flag} takes numbers, got {text!r}") from None


def main():
    flags_common.main("finetune", settings_from_flags, training.run_regime)


if __name__ == "__main__":
    main()

"""BiT-HyperRule's numbers on one page, each with its source: the cheapest fine-tuning baseline.

Kolesnikov, Beyer, Zhai, Puigcerver, Yung, Gelly & Houlsby, "Big Transfer (BiT): General Visual
Representation Learning", ECCV 2020, section 3.3, and its code (google-research/big_transfer,
bit_hyperrule.py): no search; the schedule length follows the training-set size, the learning rate
is fixed, SGD with momentum 0.9, no weight decay, batch 512.

How tfbench adapts it (`--search=hyperrule`), so that it differs from the paper grid's trials only
in the choice of learning rate, weight decay and length. BiT's code keeps batch 512 and learning
rate 0.003 on any hardware (it splits a batch that does not fit, `--batch_split`); tfbench trains
at the run's batch instead and keeps BiT's number of *examples* (ADAPTATION, written into the
record):
- schedule length: BiT's steps x 512 / batch (equal examples: 1,000 / 20,000 / 40,000 steps at the
  paper's batch 256), scaled by train_steps / 20,000 so that a run shortened with --train_steps
  shortens it alike;
- learning rate 0.003 x batch / 512 (the linear scaling rule of Goyal et al. 2017, "Accurate,
  Large Minibatch SGD": 0.0015 at batch 256; tfbench's choice, not BiT's), weight decay none;
- kept from tfbench's protocol, not BiT's: Nesterov momentum, cosine decay instead of BiT's
  warm-up and steps at 30/60/90%, the paper's crop and flip at the native size (BiT: resize to 160
  or 448 px, then crop 128 or 384), no MixUp (BiT: alpha 0.1 from 20k examples).
"""

from __future__ import annotations

SOURCE = ("Kolesnikov et al., Big Transfer (BiT), ECCV 2020, section 3.3; "
          "github.com/google-research/big_transfer, bit_hyperrule.py")
BATCH_SIZE = 512
BASE_LEARNING_RATE = 0.003
WEIGHT_DECAY = 0.0
FULL_STEPS = 20_000
# (training-set size below which, steps): fewer than 20k examples 500 steps, fewer than 500k 10k.
STEPS_BY_SIZE = ((20_000, 500), (500_000, 10_000))


def bit_steps(train_examples: int) -> int:
    """BiT's schedule length for a training set of `train_examples` images."""
    for below, steps in STEPS_BY_SIZE:
        if train_examples < below:
            return steps
    return FULL_STEPS


ADAPTATION = ("BiT's examples at the run's batch: BiT's steps x 512 / batch, scaled by "
              "train_steps / 20,000; learning rate 0.003 x batch / 512 (linear scaling, Goyal et al. "
              "2017; BiT's code keeps batch 512 and 0.003 by splitting the batch)")


def train_steps(train_examples: int, full_steps: int, batch_size: int) -> int:
    """tfbench's schedule length: as many examples as BiT's schedule at batch 512, scaled by
    full_steps / 20,000 (at least 1 step)."""
    bit_examples = bit_steps(train_examples) * BATCH_SIZE
    return max(1, round(bit_examples / batch_size * full_steps / FULL_STEPS))


def learning_rate(batch_size: int) -> float:
    """BiT's 0.003 at batch 512, scaled linearly with the batch size (Goyal et al. 2017)."""
    return BASE_LEARNING_RATE * (batch_size / BATCH_SIZE)

"""BiT-HyperRule's numbers on one page, each with its source: the cheapest fine-tuning baseline.

Kolesnikov, Beyer, Zhai, Puigcerver, Yung, Gelly & Houlsby, "Big Transfer (BiT): General Visual
Representation Learning", ECCV 2020, section 3.3, and its code (google-research/big_transfer,
bit_hyperrule.py): no search; the schedule length follows the training-set size, the learning rate
is fixed, SGD with momentum 0.9, no weight decay, batch 512.

How tfbench adapts it (`--search=hyperrule`), so that it differs from the paper grid's trials only
in the choice of learning rate, weight decay and length:
- learning rate 0.003 x batch / 512 (BiT's own linear scaling with the batch size: 0.0015 at the
  paper's batch 256), weight decay none;
- schedule length: BiT's steps scaled by train_steps / 20,000 (so at the paper's 20,000 steps
  exactly BiT's 500 / 10,000 / 20,000; a run shortened with --train_steps shortens it alike);
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


def train_steps(train_examples: int, full_steps: int) -> int:
    """tfbench's schedule length: BiT's, scaled by full_steps / 20,000 (at least 1 step)."""
    return max(1, round(bit_steps(train_examples) * full_steps / FULL_STEPS))


def learning_rate(batch_size: int) -> float:
    """BiT's 0.003 at batch 512, scaled linearly with the batch size."""
    return BASE_LEARNING_RATE * (batch_size / BATCH_SIZE)

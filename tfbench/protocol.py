"""Every number the paper fixes, on one page, each with its source.

Kornblith, Shlens & Le, "Do Better ImageNet Models Transfer Better?", CVPR 2019 ("the paper").
Where the paper is silent and tfbench chooses, the choice is marked CHOICE and is written into
every run record through the record's `protocol` and `conventions` fields.

Nothing here computes anything: modules that apply the protocol import these names, so that a
number the paper fixes has exactly one home.
"""

from __future__ import annotations

from typing import Dict, Tuple

PAPER = ("Kornblith, Shlens & Le, Do Better ImageNet Models Transfer Better?, CVPR 2019, "
         "arXiv:1805.08974")


def log_spaced(low_exponent: float, high_exponent: float, count: int) -> Tuple[float, ...]:
    """`count` values 10^e, e evenly spaced from low to high inclusive, rounded to 12 digits
    (so that 10^-3.5 prints as 0.000316227766017, the same in every record)."""
    step = (high_exponent - low_exponent) / (count - 1)
    return tuple(float(f"{10.0 ** (low_exponent + i * step):.12g}") for i in range(count))


# ---------------------------------------------------------------------------------------------
# Linear probe (paper, section 3; its details are in appendix A.4 by issue #22's reading of the
# paper, an earlier reading cited A.2: logistic regression on penultimate features)

# "45 logarithmically spaced values between 1e-6 and 1e5", chosen on the validation split.
PROBE_L2_GRID = log_spaced(-6, 5, 45)
# The scale those values belong to: a *summed* cross-entropy. The paper's first author's own L-BFGS
# linear-evaluation code minimises sum_i CE_i + l2 * ||W||^2 with the bias unpenalised, and the
# published replication of this protocol (ssl-transfer) uses scikit-learn with C = 1 / l2, also a
# summed loss. In scikit-learn's terms: LogisticRegression(C=1 / (2 * l2)).
PROBE_PENALTY_CONVENTION = ("objective = sum_i CE_i + l2 * ||W||^2 over the training examples, "
                            "bias unpenalised; scikit-learn C = 1 / (2 * l2)")

# ---------------------------------------------------------------------------------------------
# Fine-tuning and training from scratch (paper, appendix A.5 by issue #22's reading of the paper; an
# earlier reading cited A.3)

OPTIMIZER = "SGD with Nesterov momentum"
MOMENTUM = 0.9
BATCH_SIZE = 256
FINETUNE_STEPS = 20_000
# Training from random initialisation uses longer schedules; 78,125 steps of 256 is the longest of
# the paper's step grid for it, the one tfbench's paper protocol uses (CHOICE: one length for all
# datasets rather than a search over lengths).
SCRATCH_STEPS = 78_125
LEARNING_RATE_SCHEDULE = "cosine decay to 0 over the training steps"
# 7 learning rates log-spaced in [1e-4, 1e-1] x (7 weight decays log-spaced in [1e-6, 1e-3] and none).
FINETUNE_LEARNING_RATES = log_spaced(-4, -1, 7)
FINETUNE_WEIGHT_DECAYS = log_spaced(-6, -3, 7) + (0.0,)
# 7 learning rates log-spaced in [1e-3, 1] x 8 weight decays log-spaced in [1e-5, 10^-1.5].
SCRATCH_LEARNING_RATES = log_spaced(-3, 0, 7)
SCRATCH_WEIGHT_DECAYS = log_spaced(-5, -1.5, 8)
PAPER_GRIDS: Dict[str, Tuple[Tuple[float, ...], Tuple[float, ...]]] = {
    "finetune": (FINETUNE_LEARNING_RATES, FINETUNE_WEIGHT_DECAYS),
    "scratch": (SCRATCH_LEARNING_RATES, SCRATCH_WEIGHT_DECAYS),
}
PAPER_STEPS = {"finetune": FINETUNE_STEPS, "scratch": SCRATCH_STEPS}

# "We divide weight decay by the learning rate": an L2 penalty of (wd / lr_0) / 2 * sum ||k||^2 on
# kernels, whose gradient goes through the momentum update; the per-step shrink before momentum is
# lr_t * (wd / lr_0) * k, i.e. wd itself at the peak learning rate lr_0, whatever lr_0 is.
WEIGHT_DECAY_CONVENTION = (
    "L2 penalty (weight_decay / learning_rate) / 2 * sum ||kernel||^2 on trainable variables of "
    "rank >= 2 only (no biases, no batch-norm parameters); its gradient goes through the Nesterov "
    "momentum, so the per-step shrink before momentum is lr_t * (weight_decay / learning_rate) * "
    "kernel, i.e. weight_decay at the peak learning rate"
)
AUGMENTATION = ("Inception-style random-resized crop (8-100% area, 3/4-4/3 aspect) and random "
                "left-right flip at the network's native resolution; evaluation: whole image resized")

# Batch-norm moving-statistics momentum: max(1 - 10 / s, 0.9), s = steps per epoch, so that the
# statistics average over about a tenth of an epoch (the protocol as restated in SimCLR,
# Chen et al. 2020, appendix B.8, which follows this paper's fine-tuning setup).
BN_MOMENTUM_FLOOR = 0.9
BN_MOMENTUM_HORIZON = 10.0


def bn_momentum(train_examples: int, batch_size: int) -> float:
    """The batch-norm momentum rule max(1 - 10 / s, 0.9), s = steps per epoch (at least 1)."""
    steps_per_epoch = max(train_examples // batch_size, 1)
    return max(1.0 - BN_MOMENTUM_HORIZON / steps_per_epoch, BN_MOMENTUM_FLOOR)


# ---------------------------------------------------------------------------------------------
# Analysis (paper, section 3 and figure 1)

# Pearson r between ImageNet top-1 and mean log-odds transfer accuracy over PAPER_NETWORKS networks.
PAPER_R = {"probe": 0.99, "finetune": 0.96, "scratch": 0.55}
PAPER_NETWORKS = 16
# Training from scratch, split by training-set size (paper, section 4.3): r over the datasets with
# fewer than SMALL_DATASET_TRAIN_EXAMPLES training images (7 of 12) and over the others (5 of 12).
# The count is the paper's training-set size (its dataset table: train+val where there is an
# official validation split), the images the final models were trained on.
PAPER_SCRATCH_R_BY_SIZE = {"under_10k": 0.29, "over_10k": 0.86}
SMALL_DATASET_TRAIN_EXAMPLES = 10_000

# ---------------------------------------------------------------------------------------------
# Training-set size (the paper's Figure 9: score against the number of training examples, for the
# probe, fine-tuning and training from random initialisation). As issue #22 reads the paper: 11
# datasets, Inception v4, examples per class doubling from 1 up to each dataset's largest (e.g.
# Food-101 to 512, CIFAR-10 to 4,096, Flowers to 8), three random subsets with standard errors.
# flags/data_size.flags runs it (--train_examples_per_class=paper).

DATA_SIZE_MODEL = "inception_v4"
DATA_SIZE_SUBSETS = 3  # random subsets (tfbench: one per seed, 0, 1, 2)
# tfbench's derivation of each dataset's largest size: the largest power of two at most the
# official training split's examples per class (without an official validation split; the mean
# over classes). It gives the three maxima the paper states; the others are CHOICE. VOC 2007 is
# the twelfth dataset, left out: multi-label, an image counts towards several classes (CHOICE).
DATA_SIZE_LARGEST = {
    "food101": 512,  # 75,750 / 101 = 750 (the paper: 512)
    "cifar10": 4096,  # 50,000 / 10 = 5,000 (the paper: 4,096)
    "cifar100": 256,  # 50,000 / 100 = 500
    "birdsnap": 64,  # 47,386 / 500 = 95
    "sun397": 32,  # 19,850 / 397 = 50
    "stanford_cars": 32,  # 8,144 / 196 = 42
    "fgvc_aircraft": 32,  # 3,334 train / 100 = 33
    "dtd": 32,  # 1,880 train / 47 = 40
    "oxford_pets": 64,  # 3,680 / 37 = 99
    "caltech101": 16,  # 30 per class
    "oxford_flowers102": 8,  # 1,020 train / 102 = 10 (the paper: 8)
}


def data_size_examples_per_class(dataset: str) -> Tuple[int, ...]:
    """The paper's sizes for `dataset`: 1, 2, 4, ... up to its DATA_SIZE_LARGEST."""
    largest = DATA_SIZE_LARGEST[dataset]
    return tuple(2 ** k for k in range(largest.bit_length()))

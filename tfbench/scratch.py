"""The from-scratch regime: the same network and protocol as fine-tuning, from random weights.

    python -m tfbench.scratch --flagfile=flags/scratch.flags --model=mobilenet_v2 --dataset=dtd
    python -m tfbench.scratch --flagfile=flags/scratch_small.flags   # tiny backbone, digits, minutes

Same flags as tfbench.finetune; the paper's scratch grid is 7 learning rates in [1e-3, 1] x 8
weight decays in [1e-5, 10^-1.5], with a longer schedule.
"""

from __future__ import annotations

from tfbench import finetune, flags_common, training


def main():
    flags_common.main("scratch", finetune.settings_from_flags, training.run_regime)


if __name__ == "__main__":
    main()

"""The from-scratch binary: the same network and protocol as fine-tuning, from random weights.

    python -m tfbench.scratch --model=mobilenet_v2 --dataset=dtd           # the paper's protocol
    python -m tfbench.scratch --flagfile=flags/scratch_small.flags          # minutes on a laptop

Same flags and code as tfbench.finetune; the paper's scratch grid is 7 learning rates in [1e-3, 1]
x 8 weight decays in [1e-5, 10^-1.5], with a longer schedule (tfbench.protocol).
"""

from absl import flags

from tfbench.app import training_flags

flags.adopt_module_key_flags(training_flags)  # --help lists them


def main():
    training_flags.main("scratch")


if __name__ == "__main__":
    main()

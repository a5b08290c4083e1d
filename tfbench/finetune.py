"""The fine-tuning binary: every weight trained, starting from ImageNet, with a new linear head.

    python -m tfbench.finetune --model=mobilenet_v2 --dataset=dtd          # the paper's protocol
    python -m tfbench.finetune --flagfile=flags/finetune_small.flags         # minutes on a laptop

The protocol (tfbench.regimes.trained): train every trial of the search on "train" and score it on
"val", choose the best validation score, retrain it on "trainval" and score "test" once.
"""

from absl import flags

from tfbench.app import training_flags

flags.adopt_module_key_flags(training_flags)  # --help lists them


def main():
    training_flags.main("finetune")


if __name__ == "__main__":
    main()

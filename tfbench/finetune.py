"""The fine-tuning binary: every weight trained, starting from ImageNet, with a new linear head.

    python -m tfbench.finetune --model=mobilenet_v2 --dataset=dtd          # the paper's protocol
    python -m tfbench.finetune --flagfile=flags/finetune_small.flags         # minutes on a laptop

The protocol (tfbench.regimes.trained): train every trial of the search on "train" and score it on
"val", choose the best validation score, retrain it on "trainval" and score "test" once.
"""

from absl import flags

from tfbench.app import common_flags, training_flags

flags.adopt_module_key_flags(training_flags)  # --help lists them


def main():
    from tfbench.regimes import trained

    common_flags.main("finetune", lambda: training_flags.settings_from_flags("finetune"), trained.run,
                      training_flags.runtime_from_flags)


if __name__ == "__main__":
    main()

"""The estimate binary: transferability estimators of a network's frozen training features.

    python -m tfbench.estimate --model=efficientnet_lite0 --dataset=digits

Records LogME, LEEP (where the network has its ImageNet classifier), NLEEP, the H-score and its
shrunk form, and leave-one-out k-NN accuracy under `estimates`, in seconds once the training
features are cached (tfbench.regimes.estimate); the report scores them against the probe's and
the fine-tune's test scores.
"""

from absl import flags

from tfbench.app import common_flags, estimate_flags

flags.adopt_module_key_flags(estimate_flags)  # --help lists them


def main():
    from tfbench.regimes import estimate

    common_flags.main("estimate", estimate_flags.settings_from_flags, estimate.run)


if __name__ == "__main__":
    main()

"""The linear-probe binary: frozen penultimate features + L2-regularised logistic regression.

    python -m tfbench.probe --model=resnet50 --dataset=dtd --data_dir=~/tensorflow_datasets

Extracts features of train, val and test once (cached), chooses the L2 penalty on validation
(`--l2_search`), refits on train+val with it and reports the dataset's test metric
(tfbench.regimes.probe).
"""

from absl import flags

from tfbench.app import common_flags, probe_flags

flags.adopt_module_key_flags(probe_flags)  # --help lists them


def main():
    from tfbench.regimes import probe

    common_flags.main("probe", probe_flags.settings_from_flags, probe.run)


if __name__ == "__main__":
    main()

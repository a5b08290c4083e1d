"""Every flagfile parses with the binaries' flags, and the trained-regime presets train on data
that survives the protocol's augmentation."""

import glob
import os

import pytest
from absl import flags

from tfbench import sweep  # noqa: F401  (defines every binary's flags)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGFILES = sorted(glob.glob(os.path.join(ROOT, "flags", "*.flags")))
# Random crops and left-right flips destroy what identifies an 8x8 digit (a flipped 2 is no 2).
NOT_FOR_TRAINING = {"digits"}


def _parse(path):
    values = flags.FlagValues()
    for name, flag in flags.FLAGS._flags().items():  # every defined flag, under its long name
        if name == flag.name:
            values[name] = flag
    values.unparse_flags()
    values(["test", f"--flagfile={path}"])
    parsed = {name: values[name].value for name in ("search", "dataset", "datasets", "train_steps")}
    values.unparse_flags()
    return parsed


@pytest.mark.parametrize("path", FLAGFILES, ids=os.path.basename)
def test_flagfile_parses(path):
    _parse(path)


@pytest.mark.parametrize("path", [p for p in FLAGFILES if _parse(p)["train_steps"] is not None],
                         ids=os.path.basename)
def test_trained_presets_use_data_that_survives_crops_and_flips(path):
    parsed = _parse(path)
    used = set(parsed["datasets"] or []) | {parsed["dataset"]} - {None}
    assert not used & NOT_FOR_TRAINING, f"{os.path.basename(path)} trains on {used & NOT_FOR_TRAINING}"

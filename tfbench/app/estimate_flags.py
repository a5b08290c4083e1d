"""The flags of the estimate binary (the shared ones and the feature cache), and its settings."""

from __future__ import annotations

from absl import flags

from tfbench.app import common_flags, feature_flags
from tfbench.settings import EstimateSettings

flags.adopt_module_key_flags(common_flags)
flags.adopt_module_key_flags(feature_flags)


def settings_from_flags() -> EstimateSettings:
    return EstimateSettings()

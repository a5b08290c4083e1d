"""The flags of the probe binary, and the settings they ask for."""

from __future__ import annotations

from absl import flags

from tfbench.app import common_flags, feature_flags
from tfbench.settings import L2_SEARCHES, PROBE_INITS, ProbeSettings

FLAGS = flags.FLAGS

flags.DEFINE_enum(
    "l2_search", "paper", L2_SEARCHES,
    "L2 search: 'paper' fits all 45 log-spaced values in [1e-6, 1e5] (the paper's protocol); "
    "'fast' fits about 12 of them (a decade at a time to the first decline of the validation "
    "score, then bisection) and polishes the chosen fit to full tolerance.")
flags.DEFINE_enum(
    "init", "imagenet", PROBE_INITS,
    "Features of the backbone's ImageNet weights (the paper), or of a random initialisation of the "
    "same network seeded by --seed (how much of the transfer the architecture alone gives).")
flags.adopt_module_key_flags(common_flags)
flags.adopt_module_key_flags(feature_flags)


def settings_from_flags() -> ProbeSettings:
    return ProbeSettings(l2_search=FLAGS.l2_search, init=FLAGS.init)

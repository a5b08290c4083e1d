"""The flag of every binary that reads frozen features (probe, estimate): where they are cached."""

from __future__ import annotations

from absl import flags

flags.DEFINE_string(
    "cache_dir", None,
    "Feature cache folder (default: $TFBENCH_CACHE/features or ~/.cache/tfbench/features).")

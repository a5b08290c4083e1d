"""The command-line layer of the binaries: every absl flag definition and the `main` the regime
binaries share. Only binaries import this package, so library modules and Ray workers never
define flags (tests/test_layout.py checks it)."""

"""The three regimes as library code, each a `run(experiment, runtime) -> record`: the linear
`probe` on frozen features, and fine-tune / scratch (`trained`, with the `trainer` that trains one
hyperparameter setting). The binaries `python -m tfbench.<regime>` parse flags and call these."""

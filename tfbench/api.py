"""The Python API, what `import tfbench` offers: `tfbench.probe(model, dataset, **settings)`,
`tfbench.finetune(...)`, `tfbench.scratch(...)` and `tfbench.load_results(output_dir)`.

It runs the code the binaries run (tfbench.runs.define and tfbench.runs.run_experiment), writes the same
files and skips the same finished runs:

    import tfbench

    result = tfbench.probe(my_keras_model, "digits", l2_search="fast")
    result.test_score, result.hyperparameters, result.record_path
    tfbench.finetune("tiny", "fashion_mnist_mini", search="small", train_steps=40, batch_size=32)
    tfbench.load_results("runs")        # a pandas DataFrame when pandas is installed

Keyword arguments are the binaries' flags (`--l2_search=fast` is `l2_search="fast"`), checked by
the same settings classes; a bad one raises InvalidSettingError (or UnknownNameError for a name)
with the one-line message the binary prints. A run that raises is recorded as failed, as by the
binary, and raises RunFailedError.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
from typing import Any, Dict, List, Mapping, Optional

from tfbench.checkup import doctor  # noqa: F401  (tfbench.doctor(): the machine's self-check)
from tfbench.registry import UnknownNameError, unknown_name_message
from tfbench.results import RunConflictError
from tfbench.settings import SETTINGS_TYPES, TRAINED_REGIMES, InvalidSettingError

__all__ = ["doctor", "InvalidSettingError", "RunConflictError", "RunFailedError", "RunResult", "UnknownNameError",
           "finetune", "load_results", "probe", "scratch"]

# Keyword arguments besides the regime's settings, as the binaries' flags of the same names.
EXPERIMENT_OPTIONS = ("seed", "data_dir", "image_size", "batch_size", "precision", "preset",
                      "skip_bad_images", "train_examples_per_class")
MODEL_OPTIONS = ("models_file", "display_name", "imagenet_top1", "top1_source", "input_range",
                 "input_mean", "input_std")
REGIME_OPTIONS = {"probe": ("cache_dir", "strategy"),
                  "finetune": ("strategy", "checkpoint_every", "eval_every"),
                  "scratch": ("strategy", "checkpoint_every", "eval_every")}


class RunFailedError(RuntimeError):
    """The request was valid but the run raised; its record (status "failed") is `result`."""

    def __init__(self, message: str, result: "RunResult"):
        super().__init__(message)
        self.result = result


@dataclasses.dataclass(frozen=True)
class RunResult:
    """One run's outcome, read from the record the run wrote (`record` holds all of it).

    `skipped`: the run had finished earlier with the same settings, so nothing ran.
    """

    regime: str
    model: str
    dataset: str
    status: str  # "ok", "diverged" or "failed" (tfbench.results.STATUSES)
    test_score: Optional[float]
    metric: Optional[str]
    hyperparameters: Mapping[str, Any]
    record_path: str
    skipped: bool
    record: Mapping[str, Any] = dataclasses.field(repr=False)

    @classmethod
    def from_record(cls, record: Mapping[str, Any], record_path: str, skipped: bool) -> "RunResult":
        experiment = record["experiment"]
        return cls(regime=experiment["regime"], model=experiment["model"], dataset=experiment["dataset"],
                   status=record["status"], test_score=record.get("test_score"), metric=record.get("metric"),
                   hyperparameters=dict(record.get("hyperparameters", {})), record_path=record_path,
                   skipped=skipped, record=record)


def probe(model, dataset: str, *, output_dir: str = "runs", overwrite: bool = False, **settings) -> RunResult:
    """Frozen features + L2 logistic regression (python -m tfbench.probe).

    `model`: a keras.Model feature extractor (images in [0, 255] unless `input_range` or
    `input_mean`/`input_std` say otherwise; see README, "Your own backbone"), a registry name, a
    models-file name (with `models_file`), a `.keras` file, a SavedModel directory or `hub:<handle>`.
    `settings`: l2_search, init, cache_dir and the shared options (seed, image_size, ...).
    """
    return _run("probe", model, dataset, output_dir, overwrite, settings)


def finetune(model, dataset: str, *, output_dir: str = "runs", overwrite: bool = False,
             **settings) -> RunResult:
    """Every weight trained from ImageNet's (python -m tfbench.finetune); `settings`: search,
    train_steps, learning_rate(s), weight_decay(s), ..., checkpoint_every, eval_every and the
    shared options. Without settings it runs the paper's protocol (GPU-days per run)."""
    return _run("finetune", model, dataset, output_dir, overwrite, settings)


def scratch(model, dataset: str, *, output_dir: str = "runs", overwrite: bool = False,
            **settings) -> RunResult:
    """The same network and protocol from random weights (python -m tfbench.scratch)."""
    return _run("scratch", model, dataset, output_dir, overwrite, settings)


def load_results(output_dir: str = "runs"):
    """Every run record under `output_dir` (however deep its output roots lie), one row per run
    with the columns of the report's runs.csv: a pandas DataFrame when pandas is installed (it is
    not a dependency), else a list of dicts."""
    from tfbench import results

    if not os.path.isdir(output_dir):
        raise FileNotFoundError(f"no output folder {output_dir!r}")
    rows: List[Dict[str, Any]] = results.table(results.collect(output_dir))
    try:  # by name: pandas is optional, in no requirement and no Bazel target
        pandas = importlib.import_module("pandas")
    except ImportError:
        return rows
    return pandas.DataFrame(rows)


def _run(regime: str, model, dataset: str, output_dir: str, overwrite: bool,
         options: Mapping[str, Any]) -> RunResult:
    """The binaries' path with keyword arguments for flags: settings, names, then runs.run_experiment."""
    from tfbench import backbones, datasets, protocol, results, runs
    from tfbench.settings import Runtime

    kind = SETTINGS_TYPES[regime]
    setting_names = tuple(field.name for field in dataclasses.fields(kind))
    valid = setting_names + EXPERIMENT_OPTIONS + MODEL_OPTIONS + REGIME_OPTIONS[regime]
    for name in options:
        if name not in valid:
            raise InvalidSettingError(unknown_name_message(f"{regime} setting", name, sorted(valid)))
    values = {name: options[name] for name in setting_names if name in options}
    if regime in TRAINED_REGIMES:
        values.setdefault("train_steps", protocol.PAPER_STEPS[regime])
    settings = kind(**values)
    runtime = Runtime(**{name: options[name] for name in REGIME_OPTIONS[regime]
                         if name in options and name != "cache_dir"})
    if options.get("models_file"):
        backbones.load_models_file(options["models_file"])
    # Before a model object is saved: a typo in the dataset's name must leave nothing behind.
    datasets.spec(dataset, skip_bad_images=options.get("skip_bad_images", False))
    description = {name: options[name] for name in MODEL_OPTIONS[1:] if options.get(name) is not None}
    experiment = runs.define(regime, _model_name(model, output_dir, description), dataset, settings,
                             output_dir=output_dir, cache_dir=options.get("cache_dir"),
                             **{name: options[name] for name in EXPERIMENT_OPTIONS if name in options})
    outcome = runs.run_experiment(experiment, _regime_run(regime), runtime, overwrite=overwrite,
                           user_errors=runs.user_errors())
    path = results.record_path(experiment)
    result = RunResult.from_record(outcome.record, path, outcome.skipped)
    if outcome.error is not None:
        raise RunFailedError(f"{regime} run failed: {outcome.record['reason']} (recorded in {path})",
                             result) from outcome.error
    return result


def _model_name(model, output_dir: str, description: Mapping[str, Any]) -> str:
    """The name a run knows `model` by; a Keras model object is saved and registered first."""
    from tfbench import backbones
    from tfbench.backbones import user_models

    keras = sys.modules.get("keras")  # a model object means Keras is imported already
    if keras is not None and isinstance(model, keras.Model):
        return user_models.register_model_object(model, output_dir, description)
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if not isinstance(model, str):
        raise InvalidSettingError(f"model must be a keras.Model, a registry name, a path or hub:<handle>, "
                                  f"got a {type(model).__name__}")
    if description:
        backbones.describe_source(model, description)
    return model


def _regime_run(regime: str):
    """The library function that does a regime's work (the one its binary passes to runs.run_experiment)."""
    if regime == "probe":
        from tfbench.regimes import probe as regime_module
    else:
        from tfbench.regimes import trained as regime_module
    return regime_module.run



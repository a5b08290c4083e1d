"""The experiment: everything that defines one run, as one frozen value.

Flags are parsed once into an `Experiment`; library code receives it (or its fields) explicitly,
so every run is reproducible from its record alone and testable without absl.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from typing import Any, Dict, Mapping, Optional, Union

from tfbench import protocol
from tfbench.settings import (PRECISIONS, REGIMES, SETTINGS_TYPES, TRAINED_REGIMES, EstimateSettings,
                              InvalidSettingError, ProbeSettings, TrainingSettings, settings_from_dict,
                              settings_to_dict)

# Where things live, not what they are: kept out of a run's identity, so moving the data, the
# feature cache or the output folder does not make a finished run look different.
LOCATIONS = ("output_dir", "data_dir", "cache_dir")
# Names for people (a preset's name, a model's display name): recorded, never identity.
LABELS = ("preset", "display_name")
# Searches that are protocols of their own, named in a record's protocol (tfbench.tuning).
NAMED_SEARCHES = ("halving", "halving_continue", "hyperrule")
Settings = Union[ProbeSettings, TrainingSettings, EstimateSettings]


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One (regime, model, dataset) run and everything that changes its result.

    `settings` is the regime's own typed settings (tfbench.settings). How the run executes (the
    Runtime) is not here: it never changes what a run is. `skip_bad_images` leaves unreadable
    images of a folder dataset out instead of refusing it. `preset` names the flagfile the settings
    came from (recorded as the protocol's name when they differ from the paper's); `display_name`
    is how reports label the model.
    """

    regime: str
    model: str
    dataset: str
    output_dir: str
    settings: Settings
    seed: int = 0
    data_dir: Optional[str] = None
    image_size: Optional[int] = None
    batch_size: int = 64
    precision: str = "auto"
    cache_dir: Optional[str] = None
    skip_bad_images: bool = False
    preset: Optional[str] = None
    display_name: Optional[str] = None
    train_examples_per_class: Optional[int] = None

    def __post_init__(self):
        if self.regime not in REGIMES:
            raise InvalidSettingError(f"unknown regime {self.regime!r}; valid choices: {', '.join(REGIMES)}")
        if not isinstance(self.settings, SETTINGS_TYPES[self.regime]):
            raise InvalidSettingError(
                f"{self.regime} takes {SETTINGS_TYPES[self.regime].__name__}, got "
                f"{type(self.settings).__name__}")
        if self.precision not in PRECISIONS:
            raise InvalidSettingError(
                f"unknown precision {self.precision!r}; valid choices: {', '.join(PRECISIONS)}"
            )
        if self.batch_size < 1:
            raise InvalidSettingError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.train_examples_per_class is not None and (
                isinstance(self.train_examples_per_class, bool) or not isinstance(self.train_examples_per_class, int)
                or self.train_examples_per_class < 1):
            raise InvalidSettingError(
                f"train_examples_per_class must be a whole number of at least 1, got "
                f"{self.train_examples_per_class!r}")
        if self.image_size is not None and self.image_size < 8:
            raise InvalidSettingError(f"image_size must be at least 8 pixels, got {self.image_size}")

    def identity(self) -> Dict[str, Any]:
        """The fields that decide the result: two runs with equal identity are the same run."""
        return identity(self.to_dict())

    def to_dict(self) -> Dict[str, Any]:
        """Plain data; a run on the whole training set has no `train_examples_per_class` key, as
        records had before the setting existed, so their identities stay equal."""
        config = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        config["settings"] = settings_to_dict(self.settings)
        if self.train_examples_per_class is None:
            del config["train_examples_per_class"]
        return config

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> "Experiment":
        config = dict(config)
        config["settings"] = settings_from_dict(config["regime"], config.get("settings", {}))
        return cls(**config)

    def dataset_spec(self):
        """The dataset's spec as this run reads it (unreadable images left out if asked)."""
        from tfbench import datasets

        return datasets.spec(self.dataset, skip_bad_images=self.skip_bad_images)

    def train_subset(self, split: str):
        """The subset `split` is drawn from (tfbench.datasets.TrainSubset), or None when the split
        is read whole: always for val and test, and for every split without the setting."""
        from tfbench.datasets.splits import SUBSET_SPLITS, TrainSubset

        if self.train_examples_per_class is None or split not in SUBSET_SPLITS:
            return None
        return TrainSubset(self.train_examples_per_class, self.seed)

    def load(self, split: str):
        """One split of the run's dataset (tfbench.datasets.load)."""
        from tfbench import datasets

        return datasets.load(self.dataset, split, self.data_dir, skip_bad_images=self.skip_bad_images,
                             train_subset=self.train_subset(split))

    def load_table(self, split: str):
        """The same split as a table indexed by example number (tfbench.datasets.load_table)."""
        from tfbench import datasets

        return datasets.load_table(self.dataset, split, self.data_dir, skip_bad_images=self.skip_bad_images,
                                   train_subset=self.train_subset(split))

    def run_dir(self) -> str:
        """`<output_dir>/<regime>/<dataset>/<model>`, with names made safe for a file system; a
        probe of randomly initialised features is `<model>+random_init`, beside the ImageNet one;
        a seed other than 0 adds `+seed<N>` to the model's folder and a training subset
        `+<N>_per_class` to the dataset's, so such runs sit beside the default one."""
        model = path_component(self.model)
        if getattr(self.settings, "init", "imagenet") == "random":
            model += "+random_init"
        if self.seed != 0:
            model += f"+seed{self.seed}"
        dataset = path_component(self.dataset)
        if self.train_examples_per_class is not None:
            dataset += f"+{self.train_examples_per_class}_per_class"
        return os.path.join(self.output_dir, self.regime, dataset, model)


def identity(config: Mapping[str, Any]) -> Dict[str, Any]:
    """An experiment dict (as records store it) without its locations and labels."""
    return {key: value for key, value in config.items() if key not in LOCATIONS + LABELS}


def protocol_of(experiment: Experiment) -> Dict[str, Any]:
    """How the run's protocol relates to the paper's: {"name", "differences"}.

    "paper" when every setting that defines the protocol (the regime's settings, the batch size of a
    trained regime, the native image size) is the paper's; otherwise the preset's name, the cheaper
    protocol's ("halving", "halving_continue", "hyperrule"), or "custom",
    with each differing setting as {"paper": ..., "run": ...}.
    """
    paper_settings = (TrainingSettings.paper(experiment.regime) if experiment.regime in TRAINED_REGIMES
                      else SETTINGS_TYPES[experiment.regime]())
    paper = {f"settings.{k}": v for k, v in settings_to_dict(paper_settings).items()}
    run = {f"settings.{k}": v for k, v in settings_to_dict(experiment.settings).items()}
    paper["image_size"], run["image_size"] = "native", experiment.image_size or "native"
    if experiment.regime in TRAINED_REGIMES:
        paper["batch_size"], run["batch_size"] = protocol.BATCH_SIZE, experiment.batch_size
    differences = {key: {"paper": paper[key], "run": run[key]} for key in sorted(paper)
                   if paper[key] != run[key]}
    search = getattr(experiment.settings, "search", None)
    named = search if search in NAMED_SEARCHES else "custom"
    name = "paper" if not differences else experiment.preset or named
    return {"name": name, "differences": differences}


def path_component(name: str) -> str:
    """A file-system-safe folder name for a model or dataset name that may be a path or URL.

    Registry names pass unchanged; anything else is reduced to safe characters plus a short hash
    of the original, so two different paths never share a folder.
    """
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "unnamed"
    if safe == name:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{safe[-60:]}-{digest}"


def identity_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> Dict[str, Any]:
    """Which identity fields differ between two runs (flattened `settings.*` keys), for messages."""

    def flat(config: Mapping[str, Any]) -> Dict[str, str]:
        out = {k: json.dumps(v, sort_keys=True) for k, v in config.items() if k != "settings"}
        out.update({f"settings.{k}": json.dumps(v, sort_keys=True) for k, v in config.get("settings", {}).items()})
        return out

    fa, fb = flat(a), flat(b)
    return {key: (fa.get(key), fb.get(key)) for key in sorted(set(fa) | set(fb)) if fa.get(key) != fb.get(key)}

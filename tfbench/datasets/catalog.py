"""The dataset registry: every benchmark dataset with its classes, metric and split definition.

Paper datasets follow Kornblith, Shlens & Le (2019) (docs/DESIGN.md, "The protocol and its
sources"): the official validation split for FGVC Aircraft, VOC 2007, DTD and Flowers; elsewhere
validation is held out from the training split. The paper's text does not give the held-out size;
HELD_OUT_FRACTION = 0.2 of every class is the fraction public re-implementations of this protocol
use, and it keeps at least 6 validation images per class on the smallest held-out dataset
(Caltech-101, 30 training images per class) while leaving 80% for fitting. Model selection then
refits on train+val, so the fraction only affects the selection, not the final training set.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from typing import List, Optional, Tuple

from tfbench import metrics
from tfbench.registry import Registry

SOURCES = ("tfds", "tfbench_tfds", "sklearn_digits", "fashion_mnist", "folder")
HELD_OUT_FRACTION = 0.2
SPLIT_SEED = 0
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """One dataset and exactly how its train / val / trainval / test splits are formed.

    train_split, val_split and test_split name the source's official splits (TFDS split names
    for TFDS sources: Food-101's official test set, for instance, is TFDS "validation").
    val_split None: validation is held out from train_split, val_fraction of every class drawn
    with split_seed. test_split None: the source has no official test split; test is held out
    (before validation) from train_split, either test_fraction of every class or, with
    trainval_per_class, everything but trainval_per_class examples drawn from every class.
    split_seed is fixed here, not taken from the run, so every run of the benchmark sees the same
    split. paper_sizes: the (trainval, test) example counts of the paper's dataset table,
    which `python -m tfbench.prepare --audit` checks the prepared data against. crop_bottom:
    rows removed from the bottom of every decoded image (FGVC Aircraft's copyright banner).
    subset_per_class: (train pool, test) examples kept per class, drawn with split_seed before
    any other split rule (0 = all); a small, fixed, class-balanced version of a large dataset
    for runs that must finish in minutes (the offline mini-reproduction).
    """

    name: str
    num_classes: int
    metric: str
    multi_label: bool
    source: str
    train_split: str = "train"
    val_split: Optional[str] = None
    test_split: Optional[str] = "test"
    val_fraction: float = HELD_OUT_FRACTION
    test_fraction: float = 0.0
    trainval_per_class: int = 0
    split_seed: int = SPLIT_SEED
    tfds_name: Optional[str] = None  # "builder[/config][:version]"
    id_feature: Optional[str] = None  # the feature naming the example's file; None: TFDS record id
    id_with_class: bool = False  # prefix the class name: the file name repeats across classes
    path: Optional[str] = None  # where folder / Debian files live
    paper_sizes: Optional[Tuple[int, int]] = None  # (trainval, test)
    crop_bottom: int = 0  # pixel rows cut off the bottom of every image after decoding
    subset_per_class: Tuple[int, int] = (0, 0)  # (train pool, test) per class; 0 = all
    notes: str = ""

    def __post_init__(self):
        for field, value, choices in (("metric", self.metric, metrics.names()), ("source", self.source, SOURCES)):
            if value not in choices:
                raise ValueError(
                    f"{self.name}: unknown {field} {value!r}; valid choices: {', '.join(choices)}"
                )
        if (self.val_split is None) != (0.0 < self.val_fraction < 1.0):
            raise ValueError(f"{self.name}: give either an official val_split or a val_fraction in (0, 1)")
        test_rules = [self.test_split is not None, 0.0 < self.test_fraction < 1.0, self.trainval_per_class > 0]
        if sum(test_rules) != 1:
            raise ValueError(
                f"{self.name}: give exactly one of an official test_split, a test_fraction in (0, 1) "
                "or a trainval_per_class > 0"
            )
        if self.multi_label and self.val_split is None:
            raise ValueError(f"{self.name}: multi-label datasets need an official validation split")


_REGISTRY: Registry[DatasetSpec] = Registry(
    "dataset", list_hint="python -m tfbench.probe --dataset=list lists them"
)


def _register(**fields) -> None:
    _REGISTRY.register(fields["name"], DatasetSpec(**fields))


def _tfds(name, num_classes, metric, tfds_name, id_feature, **fields) -> None:
    _register(name=name, num_classes=num_classes, metric=metric, multi_label=False,
              source="tfds", tfds_name=tfds_name, id_feature=id_feature, **fields)


def _official_val(split: str = "validation") -> dict:
    return {"val_split": split, "val_fraction": 0.0}


# --- the twelve paper datasets (docs/DESIGN.md, "The protocol and its sources") ---
_tfds("food101", 101, "top1", "food101:2.1.0", "id", test_split="validation", paper_sizes=(75750, 25250),
      notes="TFDS 'validation' is the official 25,250-image test set; version 2.1.0 carries image ids.")
_tfds("cifar10", 10, "top1", "cifar10", "id", paper_sizes=(50000, 10000))
_tfds("cifar100", 100, "top1", "cifar100", "id", paper_sizes=(50000, 10000))
_register(name="birdsnap", num_classes=500, metric="top1", multi_label=False, source="tfbench_tfds",
          tfds_name="birdsnap", id_feature="file_name", paper_sizes=(47386, 2443),
          notes="tfbench's TFDS builder (tfbench.datasets.birdsnap): the official image list, test = "
                "test_images.txt; only images whose MD5 matches the list; dead links are left out.")
_tfds("sun397", 397, "top1", "sun397/standard-part1-120k", "file_name", paper_sizes=(19850, 19850),
      notes="First official partition (Training_01 / Testing_01, 50 + 50 per class); TFDS stores "
            "images resized to at most 120,000 pixels.")
_tfds("stanford_cars", 196, "top1", "cars196", "id", paper_sizes=(8144, 8041))
_register(name="fgvc_aircraft", num_classes=100, metric="mean_per_class", multi_label=False,
          source="tfbench_tfds", tfds_name="fgvc_aircraft", id_feature="file_name", **_official_val(),
          paper_sizes=(6667, 3333), crop_bottom=20,
          notes="100 variants; tfbench's TFDS builder (tfbench.datasets.fgvc_aircraft) of the official "
                "2013b archive, with the 20-pixel copyright banner cropped off every image.")
_register(name="voc2007", num_classes=20, metric="map11", multi_label=True, source="tfds",
          tfds_name="voc/2007", id_feature="image/filename", **_official_val(), paper_sizes=(5011, 4952),
          notes="Multi-hot labels: 1 present, 0 absent, -1 only 'difficult' objects of the class.")
_tfds("dtd", 47, "top1", "dtd", "file_name", **_official_val(), paper_sizes=(3760, 1880),
      notes="TFDS dtd is the first official split (train1 / val1 / test1).")
_tfds("oxford_pets", 37, "mean_per_class", "oxford_iiit_pet", "file_name", paper_sizes=(3680, 3669),
      notes="TFDS 'train' is the official trainval list (3,680 images).")
_tfds("caltech101", 102, "mean_per_class", "caltech101", "image/file_name", id_with_class=True,
      train_split="train+test", test_split=None, trainval_per_class=30, paper_sizes=(3060, 6084),
      notes="102 classes (101 + BACKGROUND_Google). tfbench's own seeded draw over all images: 30 "
            "per class for train+val, the rest for test (TFDS's own draw depends on directory order).")
_tfds("oxford_flowers102", 102, "mean_per_class", "oxford_flowers102", "file_name", **_official_val(),
      paper_sizes=(2040, 6149))

# --- offline datasets (no download at all) ---
_register(name="digits", num_classes=10, metric="top1", multi_label=False, source="sklearn_digits",
          train_split="all", test_split=None, test_fraction=HELD_OUT_FRACTION,
          notes="scikit-learn's bundled 8x8 digits (1,797): 20% test, then 20% of the rest val.")
_register(name="fashion_mnist", num_classes=10, metric="top1", multi_label=False,
          source="fashion_mnist", tfds_name="fashion_mnist", path=FASHION_MNIST_DIR,
          notes="Debian dataset-fashion-mnist IDX files, else TFDS fashion_mnist when prepared.")
_register(name="fashion_mnist_mini", num_classes=10, metric="top1", multi_label=False,
          source="fashion_mnist", tfds_name="fashion_mnist", path=FASHION_MNIST_DIR,
          subset_per_class=(300, 100),
          notes="A fixed seeded subset of fashion_mnist for minutes-long CPU runs: 300 training "
                "images per class (240 train / 60 val) and 100 test images per class (1,000).")


def names() -> List[str]:
    """Registered dataset names (a folder of images is also accepted as "folder:PATH")."""
    return _REGISTRY.names()


def registered_spec(name: str) -> DatasetSpec:
    """The DatasetSpec registered under `name`; unknown names fail with close matches."""
    return _REGISTRY.get(name)


# (trainval, test) of the datasets the paper's table does not list, for cost estimates (kept out of
# DatasetSpec: its fields are part of every feature-cache key).
OTHER_SIZES = {"digits": (1437, 360), "fashion_mnist": (60000, 10000), "fashion_mnist_mini": (3000, 1000)}
# The paper's datasets with an official validation split (FGVC Aircraft, VOC 2007, DTD, Flowers)
# split their trainval about in half between train and val.
OFFICIAL_VAL_FRACTION = 0.5


def estimated_split_sizes(spec: DatasetSpec, train_examples_per_class: Optional[int] = None) -> Optional[dict]:
    """Examples in train / val / trainval / test, from the dataset's table sizes (no data read),
    for cost estimates; None when the registry does not know them (say, a folder: dataset)."""
    sizes = spec.paper_sizes or OTHER_SIZES.get(spec.name)
    if sizes is None:
        return None
    trainval, test = sizes
    val = round(trainval * (spec.val_fraction if spec.val_split is None else OFFICIAL_VAL_FRACTION))
    train = trainval - val
    if train_examples_per_class is not None:
        train = min(train, train_examples_per_class * spec.num_classes)
    return {"train": train, "val": val, "trainval": train + val, "test": test}
def fashion_mnist_files_present(spec: DatasetSpec) -> bool:
    """Whether Debian's four Fashion-MNIST IDX files are in spec.path."""
    return all(os.path.exists(os.path.join(spec.path, name))
               for names in FASHION_MNIST_FILES.values() for name in names)


def default_data_dir() -> str:
    """TFDS's default data directory, found without importing TFDS (which imports TensorFlow)."""
    return os.environ.get("TFDS_DATA_DIR") or os.path.join(os.path.expanduser("~"), "tensorflow_datasets")


def is_prepared(spec: DatasetSpec, data_dir: Optional[str]) -> bool:
    """Whether the dataset can be read without `python -m tfbench.prepare`: bundled with a
    package, Debian's files installed, or a TFDS build with its dataset_info.json in data_dir."""
    if spec.source == "sklearn_digits" or spec.source == "folder":
        return True
    if spec.source == "fashion_mnist" and fashion_mnist_files_present(spec):
        return True
    root = os.path.join(os.path.expanduser(data_dir or default_data_dir()), *spec.tfds_name.split("/"))
    return bool(glob.glob(os.path.join(glob.escape(root), "**", "dataset_info.json"), recursive=True))

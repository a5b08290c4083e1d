"""Birdsnap (Berg et al., CVPR 2014) as a TFDS builder, "birdsnap": TFDS has none.

Birdsnap is published as a list of Flickr URLs. Its metadata archive birdsnap.tgz extracts to
    birdsnap/images.txt       tab-separated with a header: url, md5, path, species_id, bb_x1, ...
    birdsnap/species.txt      tab-separated with a header: id (1..500), common, scientific, dir
    birdsnap/test_images.txt  a header "path", then the path of each of the 2,443 test images
    birdsnap/get_birdsnap.py  the official downloader, which saves each image at
                              birdsnap/download/images/<path>
This builder reads exactly that tree in the manual directory (default
<data_dir>/downloads/manual/birdsnap/), whether the official script or
`python -m tfbench.prepare --datasets=birdsnap` (fill_manual_dir below) filled it. Test is
test_images.txt, train every other listed image (47,386 when every image is obtained). Only
images whose MD5 matches images.txt enter the dataset; how many were listed, missing or
mismatched is kept in the dataset's metadata. Labels are species_id - 1.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import shutil
import tarfile
from typing import Dict, List, Sequence

import tensorflow_datasets as tfds

from tfbench import files
from tfbench.datasets import fetch
from tfbench.datasets.downloads import builder_manual_dir

METADATA_URL = "https://thomasberg.org/datasets/birdsnap/1.1/birdsnap.tgz"
METADATA_ARCHIVE = "birdsnap.tgz"
FOLDER = "birdsnap"
IMAGES = os.path.join("download", "images")  # where get_birdsnap.py saves images, under FOLDER
NUM_SPECIES = 500
METADATA_FILES = ("images.txt", "species.txt", "test_images.txt")

_CITATION = """@inproceedings{berg2014birdsnap,
  title = {Birdsnap: Large-scale Fine-grained Visual Categorization of Birds},
  author = {Berg, Thomas and Liu, Jiongxin and Lee, Seung Woo and Alexander, Michelle L. and
            Jacobs, David W. and Belhumeur, Peter N.},
  booktitle = {CVPR}, year = {2014}}"""


@dataclasses.dataclass(frozen=True)
class ListedImage(fetch.ListedFile):
    """An entry of images.txt (the bounding box and part columns are not used)."""

    species_id: int = 0


def _read_table(path: str) -> List[Dict[str, str]]:
    """Rows of a tab-separated file whose first line names the fields."""
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream, delimiter="\t"))


def read_image_list(folder: str) -> List[ListedImage]:
    """Every image of images.txt."""
    return [ListedImage(url=row["url"], md5=row["md5"], path=row["path"], species_id=int(row["species_id"]))
            for row in _read_table(os.path.join(folder, "images.txt"))]


def read_test_paths(folder: str) -> set:
    """The paths (as in images.txt) of the official test images."""
    return {row["path"] for row in _read_table(os.path.join(folder, "test_images.txt"))}


def read_species(folder: str) -> List[str]:
    """Common names in species-id order (label i is species id i + 1)."""
    names = {int(row["id"]): row["common"] for row in _read_table(os.path.join(folder, "species.txt"))}
    if sorted(names) != list(range(1, NUM_SPECIES + 1)):
        raise ValueError(f"{os.path.join(folder, 'species.txt')} must list species ids 1..{NUM_SPECIES}, "
                         f"found {len(names)} ids")
    return [names[species_id] for species_id in range(1, NUM_SPECIES + 1)]


def has_metadata(folder: str) -> bool:
    return all(os.path.exists(os.path.join(folder, name)) for name in METADATA_FILES)


class Birdsnap(tfds.core.GeneratorBasedBuilder):
    """Birdsnap 1.1: 500 North American bird species, official test list."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Images of images.txt whose MD5 matches; test = test_images.txt."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"Download {METADATA_URL}, extract it in the manual directory (default "
        "<data_dir>/downloads/manual/) and run `python get_birdsnap.py` inside the birdsnap/ "
        "folder, or let `python -m tfbench.prepare --datasets=birdsnap` do both."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Birdsnap 1.1: images of 500 bird species from Flickr (those still online).",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3)),
                "label": tfds.features.ClassLabel(num_classes=NUM_SPECIES),
                "file_name": tfds.features.Text(),
            }),
            supervised_keys=("image", "label"),
            homepage="https://thomasberg.org/",
            citation=_CITATION,
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        manual = builder_manual_dir(dl_manager)
        folder = os.fspath(manual / FOLDER) if manual is not None else ""
        if not folder or not has_metadata(folder) or not os.path.isdir(os.path.join(folder, IMAGES)):
            raise FileNotFoundError(
                f"Birdsnap needs its image list and images in {folder or '<manual_dir>/' + FOLDER}: "
                f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
            )
        self.info.features["label"].names = read_species(folder)
        test_paths = read_test_paths(folder)
        images = read_image_list(folder)
        return {
            "train": self._generate_examples(folder, [item for item in images if item.path not in test_paths], "train"),
            "test": self._generate_examples(folder, [item for item in images if item.path in test_paths], "test"),
        }

    def _generate_examples(self, folder: str, images: Sequence[ListedImage], split: str):
        counts = {"listed": len(images), "missing": 0, "md5_mismatch": 0}
        for item in images:
            path = os.path.join(folder, IMAGES, item.path)
            if not os.path.exists(path):
                counts["missing"] += 1
                continue
            if files.file_digest(path, "md5") != item.md5:
                counts["md5_mismatch"] += 1
                continue
            yield item.path, {"image": path, "label": item.species_id - 1, "file_name": item.path}
        self.info.metadata[split] = counts


def fill_manual_dir(manual_dir: str, options: fetch.FetchOptions, skip_hosts: Sequence[str] = ()) -> fetch.Report:
    """Fetch the listed images missing from manual_dir/birdsnap, as get_birdsnap.py does, with
    retries and parallel downloads; the image list must already be there (see extract_metadata)."""
    folder = os.path.join(manual_dir, FOLDER)
    return fetch.fetch_all(read_image_list(folder), os.path.join(folder, IMAGES), options,
                           skip_hosts=skip_hosts)


def extract_metadata(archive: str, manual_dir: str) -> None:
    """Extract birdsnap.tgz into manual_dir/birdsnap. It is extracted next to its destination and
    each file renamed into place, image list last, so an interrupted extraction never leaves a
    folder that has_metadata() accepts."""
    destination = os.path.join(manual_dir, FOLDER)
    os.makedirs(destination, exist_ok=True)
    staging = files.make_staging_dir(manual_dir, prefix=".birdsnap-extract-")
    try:
        with tarfile.open(archive) as stream:
            stream.extractall(staging, filter="data")
        extracted = os.path.join(staging, FOLDER)
        if not has_metadata(extracted):
            raise ValueError(f"{archive} has no {FOLDER}/{{{','.join(METADATA_FILES)}}}: is it birdsnap.tgz?")
        names = sorted(name for name in os.listdir(extracted) if os.path.isfile(os.path.join(extracted, name)))
        for name in sorted(names, key=lambda name: name == "images.txt"):
            os.replace(os.path.join(extracted, name), os.path.join(destination, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)

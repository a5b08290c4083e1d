"""Where a dataset's source files come from: TFDS's download folders, the URLs a builder would
fetch, and whether their hosts can be reached.

An offline `download_and_prepare` retries for minutes before it gives up, so preparation first
asks which URLs a builder needs (by running the builder's own `_split_generators` against a
download manager that only records what it is asked for), skips those a user already put in the
manual folder, and checks the remaining hosts with one short connection each.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import socket
import urllib.parse
from typing import Iterable, List, Optional

import tensorflow_datasets as tfds
from etils import epath

PROBE_TIMEOUT_SECONDS = 5.0
_DEFAULT_PORTS = {"http": 80, "https": 443}


def download_dir(data_dir: str) -> str:
    """TFDS's download folder of a data directory."""
    return os.path.join(data_dir, "downloads")


def default_manual_dir(data_dir: str) -> str:
    """TFDS's manual-download folder of a data directory (files a user fetched by hand)."""
    return os.path.join(download_dir(data_dir), "manual")


def builder_manual_dir(dl_manager) -> Optional[epath.Path]:
    """The manual folder of a TFDS download manager, or None when it is absent or empty
    (TFDS's own property raises in both cases)."""
    try:
        return epath.Path(dl_manager.manual_dir)
    except AssertionError:
        return None


@dataclasses.dataclass(frozen=True)
class Download:
    """A file a builder fetches, and the name it is found under in the manual folder."""

    url: str
    file_name: str


class _Recorded(Exception):
    """Stops a builder's `_split_generators` once it has asked for its downloads."""


class _RecordingDownloadManager:
    """Stands in for tfds.download.DownloadManager: records the URLs asked for, fetches nothing.

    Extracting or iterating a local file means the builder found its data without downloading.
    """

    def __init__(self, manual_dir: str):
        self._manual_dir = epath.Path(manual_dir)
        self.urls: List[str] = []

    @property
    def manual_dir(self) -> epath.Path:
        if not self._manual_dir.exists() or not any(self._manual_dir.iterdir()):
            raise AssertionError(f"manual directory {self._manual_dir} is absent or empty")
        return self._manual_dir

    def download(self, url_or_urls):
        for resource in _leaves(url_or_urls):
            self.urls.append(resource.url if isinstance(resource, tfds.download.Resource) else str(resource))
        raise _Recorded()

    download_and_extract = download

    def extract(self, path_or_paths):
        raise _Recorded()

    iter_archive = extract


def _leaves(tree):
    """The URLs of a download request: one, or a (nested) dict or list of them."""
    if isinstance(tree, dict):
        tree = list(tree.values())
    if isinstance(tree, (list, tuple)):
        return [leaf for item in tree for leaf in _leaves(item)]
    return [tree]


def needed_downloads(builder: tfds.core.DatasetBuilder, manual_dir: str) -> List[Download]:
    """The files `builder` would download to prepare itself, given what `manual_dir` holds."""
    recorder = _RecordingDownloadManager(manual_dir)
    try:
        builder._split_generators(recorder)  # pylint: disable=protected-access
    except _Recorded:
        pass
    registered = builder.url_infos or {}
    downloads = []
    for url in recorder.urls:
        info = registered.get(url)
        file_name = info.filename if info is not None and info.filename else _url_file_name(url)
        downloads.append(Download(url=url, file_name=file_name))
    return downloads


def _url_file_name(url: str) -> str:
    return os.path.basename(urllib.parse.urlparse(url).path)


def missing_from(downloads: Iterable[Download], manual_dir: str) -> List[Download]:
    """The downloads a user has not placed in `manual_dir` (TFDS uses those found there)."""
    return [item for item in downloads if not os.path.exists(os.path.join(manual_dir, item.file_name))]


def unreachable_hosts(urls: Iterable[str], timeout: float = PROBE_TIMEOUT_SECONDS) -> List[str]:
    """The hosts among `urls` that do not accept a connection within `timeout` seconds."""
    addresses = set()
    for url in urls:
        parsed = urllib.parse.urlparse(url)
        addresses.add((parsed.hostname or "", parsed.port or _DEFAULT_PORTS.get(parsed.scheme, 80)))

    def reachable(address) -> bool:
        try:
            socket.create_connection(address, timeout=timeout).close()
            return True
        except Exception:  # pylint: disable=broad-except
            # Whatever stops a connection (no DNS, refused, timed out, a sandbox that forbids
            # sockets) means a download from this host cannot start.
            return False

    ordered = sorted(addresses)
    if not ordered:
        return []
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(16, len(ordered))) as pool:
        results = list(pool.map(reachable, ordered))
    return sorted({host for (host, _), ok in zip(ordered, results) if not ok})

"""Fetch a list of files, each from its own URL and checked against its published MD5.

Birdsnap is published as such a list (tens of thousands of Flickr URLs, many of them dead by
now). Each file is fetched with retries for transient failures (timeouts, refused or reset
connections, HTTP 5xx / 408 / 429), never retried for a permanent answer (other HTTP 4xx: a dead
link), verified against its MD5, and only then moved into place, so a file at its final path is
always complete and verified. Files already present with the right MD5 are kept, which makes
an interrupted run resumable. What was fetched, kept, or not obtained (and why) is returned
and written to a JSON report.

A file with no published MD5 (an archive such as birdsnap.tgz) is written with a fingerprint
beside it, `<file>.fingerprint.json`, and checked against it before it is reused: one damaged
since (truncated, altered, its fingerprint lost) is discarded with a one-line warning and fetched
again, instead of failing every later preparation.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import http.client
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Callable, Dict, Optional, Sequence


from tfbench import cli, files
from tfbench.progress import track

REPORT_FILE = "download_report.json"
FINGERPRINT_SUFFIX = ".fingerprint.json"
# What a failed GET raises: HTTPError (a URLError; permanent unless 5xx / 408 / 429), other
# URLErrors and OSErrors (no DNS, refused, reset, timed out), HTTPException (a truncated body).
_FETCH_ERRORS = (urllib.error.URLError, http.client.HTTPException, OSError)
_USER_AGENT = "tfbench-dataset-fetch/1.0"
_TRANSIENT_HTTP = (408, 429)

NEW = "downloaded"
PRESENT = "already_present"
DEAD = "dead_link"
MD5_MISMATCH = "md5_mismatch"
FAILED = "failed"
HOST_UNREACHABLE = "host_unreachable"
OBTAINED = (NEW, PRESENT)


@dataclasses.dataclass(frozen=True)
class FetchOptions:
    """retries: extra attempts after a transient failure, waiting backoff_seconds * 2**attempt;
    timeout: seconds per attempt; workers: parallel downloads."""

    retries: int = 3
    timeout: float = 30.0
    workers: int = 8
    backoff_seconds: float = 1.0
    progress: bool = True


@dataclasses.dataclass(frozen=True)
class ListedFile:
    """One entry of a published list: where to fetch it, its MD5 (None: none is published), and
    its path relative to the destination folder."""

    url: str
    md5: Optional[str]
    path: str


@dataclasses.dataclass
class Report:
    """Per-file outcome (one of NEW, PRESENT, DEAD, MD5_MISMATCH, FAILED, HOST_UNREACHABLE) and
    the reason for each file not obtained."""

    outcomes: Dict[str, str] = dataclasses.field(default_factory=dict)
    reasons: Dict[str, str] = dataclasses.field(default_factory=dict)

    def counts(self) -> Dict[str, int]:
        counts: Dict[str, int] = {}
        for outcome in self.outcomes.values():
            counts[outcome] = counts.get(outcome, 0) + 1
        return counts

    def obtained(self) -> int:
        return sum(outcome in OBTAINED for outcome in self.outcomes.values())

    def summary(self) -> str:
        counts = self.counts()
        parts = [f"{count} {outcome.replace('_', ' ')}" for outcome, count in sorted(counts.items())]
        return f"{self.obtained()} of {len(self.outcomes)} files obtained ({', '.join(parts)})"


def http_get(url: str, timeout: float) -> bytes:
    """The body of a successful GET; HTTP errors raise urllib.error.HTTPError."""
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


def fetch_all(listed: Sequence[ListedFile], root: str, options: FetchOptions = FetchOptions(), *,
              skip_hosts: Sequence[str] = (), get: Callable[[str, float], bytes] = http_get,
              report_path: Optional[str] = None) -> Report:
    """Fetch every listed file into root/<path>, and write the report (default root/REPORT_FILE).

    skip_hosts: hosts known to be unreachable; their files are recorded, not attempted.
    """
    report = Report()
    skipped = frozenset(skip_hosts)

    def one(item: ListedFile):
        return (item, *_fetch_one(item, root, options, get, skipped))

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, options.workers)) as pool:
        results = pool.map(one, listed)
        for item, outcome, reason in track(results, "files", len(listed), "file", enabled=options.progress):
            report.outcomes[item.path] = outcome
            if reason:
                report.reasons[item.path] = f"{reason} ({item.url})"
    files.write_json_atomic(report_path or os.path.join(root, REPORT_FILE),
                            {"counts": report.counts(), "outcomes": report.outcomes, "reasons": report.reasons})
    return report


def _fetch_one(item: ListedFile, root: str, options: FetchOptions, get: Callable[[str, float], bytes],
               skip_hosts=frozenset()):
    """(outcome, reason) of one file; the file is in place only when its MD5 matched."""
    target = os.path.join(root, item.path)
    if os.path.exists(target):
        if item.md5 is not None:
            if files.file_digest(target, "md5") == item.md5:
                return PRESENT, ""
        elif _reusable(target, item.url):
            return PRESENT, ""
    if urllib.parse.urlparse(item.url).hostname in skip_hosts:
        return HOST_UNREACHABLE, "host unreachable"
    for attempt in range(options.retries + 1):
        try:
            body = get(item.url, options.timeout)
            break
        except _FETCH_ERRORS as error:
            if isinstance(error, urllib.error.HTTPError) and not _is_transient(error.code):
                return DEAD, f"HTTP {error.code}"
            if attempt == options.retries:
                return FAILED, f"{type(error).__name__}: {error} after {options.retries + 1} attempts"
            time.sleep(options.backoff_seconds * 2 ** attempt)
    digest = hashlib.md5(body).hexdigest()
    if item.md5 is not None and digest != item.md5:
        return MD5_MISMATCH, f"MD5 {digest} is not the published {item.md5}"
    files.write_bytes_atomic(target, body)
    if item.md5 is None:  # nothing published to check it against later: record what was written
        files.write_json_atomic(target + FINGERPRINT_SUFFIX, {"url": item.url, **files.fingerprint(target)})
    return NEW, ""


def _reusable(target: str, url: str) -> bool:
    """Whether a file fetched earlier still matches the fingerprint written with it; if not, it is
    removed with a warning (and fetched again by the caller)."""
    try:
        with open(target + FINGERPRINT_SUFFIX) as stream:
            recorded = json.load(stream)
        problem = files.fingerprint_mismatch(target, recorded) if recorded.get("url") == url else \
            f"{os.path.basename(target)} was fetched from {recorded.get('url')}"
    except FileNotFoundError:
        problem = f"{os.path.basename(target)} has no fingerprint ({os.path.basename(target)}{FINGERPRINT_SUFFIX})"
    except (OSError, ValueError, AttributeError):
        problem = f"its fingerprint {os.path.basename(target)}{FINGERPRINT_SUFFIX} does not parse"
    if problem is None:
        return True
    cli.warn(f"downloaded file {target} cannot be trusted ({problem}); discarding it and fetching it again")
    for stale in (target, target + FINGERPRINT_SUFFIX):
        if os.path.exists(stale):
            os.remove(stale)
    return False


def fetch_file(url: str, path: str, options: FetchOptions = FetchOptions(),
               get: Callable[[str, float], bytes] = http_get) -> str:
    """Fetch one file (no published MD5) to `path` unless it is there; raise OSError on failure."""
    outcome, reason = _fetch_one(ListedFile(url=url, md5=None, path=os.path.basename(path)),
                                 os.path.dirname(path), options, get)
    if outcome not in OBTAINED:
        raise OSError(f"could not download {url}: {reason}")
    return path


def _is_transient(status: int) -> bool:
    return status >= 500 or status in _TRANSIENT_HTTP

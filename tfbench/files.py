"""Writing and fingerprinting files: the one place that decides how tfbench touches the disk.

Every file tfbench writes (records, reports, caches, downloads, converted weights) goes through
`write_bytes_atomic`: readers see the old complete file or the new complete file, never a partial
one, and the file gets the permissions any other program would give it under the user's umask
(a temporary file alone would be 0600, unreadable to others on shared storage or from Docker).
Every fingerprint of file contents goes through `file_digest` / `tree_digest`; a file tfbench
trusts on a later run (a cache entry, a download) carries a `fingerprint` written with it and is
checked against it with `fingerprint_mismatch` before it is used.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Any, BinaryIO, Callable, Dict, Mapping, Optional, Tuple

from tfbench import fencing


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it; restored at once
    os.umask(mask)
    return mask


def apply_umask(path: str, directory: bool = False) -> None:
    """Give `path` the mode a plain open()/mkdir() would have given it (0666 / 0777 minus umask)."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def make_staging_dir(parent: str, prefix: str) -> str:
    """A temporary folder inside `parent` (renamed into place when complete), with normal permissions."""
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(dir=parent, prefix=prefix, suffix=".tmp")
    apply_umask(staging, directory=True)
    return staging


def _write_temporary(path: str, write: Callable[[BinaryIO], Any]) -> str:
    """A temporary file next to `path` holding what `write(handle)` wrote, fsynced, under the umask."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        apply_umask(tmp)
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def write_atomic(path: str, write: Callable[[BinaryIO], Any]) -> None:
    """Call `write(handle)` on a temporary file next to `path`, fsync it and rename it to `path`.

    Streams, so a large array need not be held twice in memory to be written safely. Inside a task
    the rename happens only while the task's lock is still ours (tfbench.fencing): a lost owner
    raises LeaseLost here and leaves the file as the current owner made it.
    """
    tmp = _write_temporary(path, write)
    try:
        fencing.check()
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Write `data` to `path` through a temporary file, fsync and rename."""
    write_atomic(path, lambda handle: handle.write(data))


def _json_bytes(payload: Mapping[str, Any]) -> bytes:
    return (json.dumps(payload, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


def write_json_atomic(path: str, payload: Mapping[str, Any]) -> None:
    """Canonical JSON (sorted keys, no NaN) written atomically."""
    write_bytes_atomic(path, _json_bytes(payload))


def create_json_exclusive(path: str, payload: Mapping[str, Any]) -> bool:
    """Create `path` complete with `payload` only if it does not exist; False if it does.

    The content is written to a temporary file first and hard-linked into place: the link either
    fails because the file exists or makes it appear whole, atomically, also on NFS (where
    O_EXCL alone has not always been reliable). Locks are made this way.
    """
    tmp = _write_temporary(path, lambda handle: handle.write(_json_bytes(payload)))
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)


def file_digest(path: str, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, streamed."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, algorithm).hexdigest()


def tree_digest(path: str, algorithm: str = "sha256") -> str:
    """Digest of a file, or of a folder as every file's relative path and digest, in sorted order."""
    if os.path.isfile(path):
        return file_digest(path, algorithm)
    digest = hashlib.new(algorithm)
    for root, _, filenames in sorted(os.walk(path)):
        for filename in sorted(filenames):
            full = os.path.join(root, filename)
            digest.update(f"{os.path.relpath(full, path)}\0{file_digest(full, algorithm)}\n".encode())
    return digest.hexdigest()


FINGERPRINT_DIGEST = "sha256"
# Files whose digest matched in this process, by (path, size, mtime, inode, expected digest):
# each trusted file is read in full at most once per process, unless it changes.
_VERIFIED: set = set()


def fingerprint(path: str) -> Dict[str, Any]:
    """What a file is checked against when it is read back: its size and content digest."""
    return {"bytes": os.path.getsize(path), FINGERPRINT_DIGEST: file_digest(path, FINGERPRINT_DIGEST)}


def fingerprint_mismatch(path: str, expected: Mapping[str, Any]) -> Optional[str]:
    """Why the file at `path` no longer matches `expected` (a `fingerprint`), or None if it does.

    Cheap first: a missing file or a wrong size is told from its metadata alone; the digest is
    computed only when the size matches, and once per process for a file that has not changed.
    """
    name = os.path.basename(path)
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return f"{name} is missing"
    if not isinstance(expected, Mapping) or not isinstance(expected.get(FINGERPRINT_DIGEST), str):
        return f"{name} has no recorded {FINGERPRINT_DIGEST} digest"
    if status.st_size != expected.get("bytes"):
        return f"{name} has {status.st_size} bytes, {expected.get('bytes')} were written"
    seen: Tuple = (os.path.abspath(path), status.st_size, status.st_mtime_ns, status.st_ino,
                   expected[FINGERPRINT_DIGEST])
    if seen in _VERIFIED:
        return None
    if file_digest(path, FINGERPRINT_DIGEST) != expected[FINGERPRINT_DIGEST]:
        return f"{name} does not match its recorded {FINGERPRINT_DIGEST} digest"
    _VERIFIED.add(seen)
    return None


def cache_root() -> str:
    """Where tfbench keeps what it can rebuild (features, image checks): $TFBENCH_CACHE, else
    ~/.cache/tfbench."""
    return os.path.expanduser(os.environ.get("TFBENCH_CACHE", os.path.join("~", ".cache", "tfbench")))

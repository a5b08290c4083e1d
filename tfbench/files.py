"""Writing and fingerprinting files: the one place that decides how tfbench touches the disk.

Every file tfbench writes (records, reports, caches, downloads, converted weights) goes through
`write_bytes_atomic`: readers see the old complete file or the new complete file, never a partial
one, and the file gets the permissions any other program would give it under the user's umask
(a temporary file alone would be 0600, unreadable to others on shared storage or from Docker).
Every fingerprint of file contents goes through `file_digest` / `tree_digest`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Any, Mapping


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


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Write `data` to `path` through a temporary file, fsync and rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        apply_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(_json_bytes(payload))
            handle.flush()
            os.fsync(handle.fileno())
        apply_umask(tmp)
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

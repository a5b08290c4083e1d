"""Atomic writes under the user's umask, and digests."""

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time

import pytest

from tfbench import files


def test_failed_rename_keeps_the_old_record_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "record.json"
    files.write_json_atomic(str(path), {"status": "ok", "experiment": {}, "n": 1})

    def crash(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        files.write_json_atomic(str(path), {"status": "ok", "experiment": {}, "n": 2})
    assert json.loads(path.read_text())["n"] == 1
    assert os.listdir(tmp_path) == ["record.json"]


def test_record_survives_kill_mid_write(tmp_path):
    """SIGKILL a process that rewrites a large record in a loop: the file is always whole."""
    path = tmp_path / "record.json"
    writer = textwrap.dedent(f"""
        from tfbench import files
        payload = {{"status": "ok", "experiment": {{}}, "blob": ["x" * 1000] * 2000}}
        i = 0
        while True:
            payload["i"] = i
            files.write_json_atomic({str(path)!r}, payload)
            i += 1
    """)
    process = subprocess.Popen([sys.executable, "-c", writer], cwd=os.path.dirname(os.path.dirname(__file__)))
    try:
        deadline = time.time() + 30
        while not path.exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    record = json.loads(path.read_text())
    assert record["i"] >= 0 and len(record["blob"]) == 2000




@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_files_and_staging_folders_follow_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        files.write_json_atomic(str(tmp_path / "record.json"), {"a": 1})
        staging = files.make_staging_dir(str(tmp_path / "cache"), prefix=".entry-")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(tmp_path / "record.json").st_mode) == 0o666 & ~umask
    assert stat.S_IMODE(os.stat(staging).st_mode) == 0o777 & ~umask


def test_digests_match_hashlib(tmp_path):
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "a.bin").write_bytes(b"alpha")
    (tmp_path / "tree" / "sub" / "b.bin").write_bytes(b"beta" * 100_000)
    assert files.file_digest(str(tmp_path / "tree" / "a.bin")) == hashlib.sha256(b"alpha").hexdigest()
    assert files.file_digest(str(tmp_path / "tree" / "a.bin"), "md5") == hashlib.md5(b"alpha").hexdigest()
    expected = hashlib.sha256()
    for relative, data in (("a.bin", b"alpha"), (os.path.join("sub", "b.bin"), b"beta" * 100_000)):
        expected.update(f"{relative}\0{hashlib.sha256(data).hexdigest()}\n".encode())
    assert files.tree_digest(str(tmp_path / "tree")) == expected.hexdigest()

"""Task locks: exclusive, released, stale ones taken over exactly once, a lost lock noticed."""

import os
import socket
import subprocess
import sys
import threading
import time

from tfbench import files
from tfbench.tasks import locks


def test_create_json_exclusive_creates_once(tmp_path):
    path = os.path.join(tmp_path, "a.lock")
    assert files.create_json_exclusive(path, {"n": 1})
    assert not files.create_json_exclusive(path, {"n": 2})
    assert locks.read_owner(path) == {"n": 1}
    assert os.listdir(tmp_path) == ["a.lock"]  # no temporary file left behind


def test_a_held_lock_excludes_others_until_released(tmp_path):
    path = os.path.join(tmp_path, "t.json.lock")
    lock = locks.acquire(path)
    owner = locks.read_owner(path)
    assert (owner["host"], owner["pid"]) == (socket.gethostname(), os.getpid())
    assert locks.acquire(path) is None
    lock.release()
    assert not os.path.exists(path)
    with locks.acquire(path) as again:
        assert again is not None


def test_heartbeat_keeps_the_lock_fresh(tmp_path):
    path = os.path.join(tmp_path, "t.lock")
    with locks.acquire(path, heartbeat_seconds=0.05):
        first = locks.read_owner(path)["heartbeat"]
        time.sleep(0.3)
        assert locks.read_owner(path)["heartbeat"] > first
        assert locks.acquire(path, stale_after=0.2) is None  # fresh: not stale


def _dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_dead_local_owner_is_taken_over_at_once(tmp_path):
    path = os.path.join(tmp_path, "t.lock")
    files.create_json_exclusive(path, {"host": socket.gethostname(), "pid": _dead_pid(), "token": "old",
                                       "heartbeat": time.time()})
    with locks.acquire(path) as lock:
        assert lock is not None and locks.read_owner(path)["token"] == lock.owner["token"]


def test_a_silent_remote_owner_is_taken_over_after_the_timeout(tmp_path):
    path = os.path.join(tmp_path, "t.lock")
    files.create_json_exclusive(path, {"host": "elsewhere", "pid": 1, "token": "old", "heartbeat": time.time()})
    assert locks.acquire(path, stale_after=60) is None
    time.sleep(0.2)
    with locks.acquire(path, stale_after=0.1) as lock:
        assert lock is not None


def test_of_many_takers_of_one_stale_lock_exactly_one_wins(tmp_path):
    path = os.path.join(tmp_path, "t.lock")
    for round_ in range(20):
        files.write_json_atomic(path, {"host": "elsewhere", "pid": 1, "token": f"old{round_}", "heartbeat": 0})
        won, barrier = [], threading.Barrier(8)

        def take():
            barrier.wait()
            lock = locks.acquire(path, stale_after=1)
            if lock is not None:
                won.append(lock)

        threads = [threading.Thread(target=take) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(won) == 1
        won[0].release()
        assert sorted(os.listdir(tmp_path)) == []


def test_an_owner_whose_lock_was_taken_over_notices(tmp_path):
    path = os.path.join(tmp_path, "t.lock")
    lock = locks.acquire(path, heartbeat_seconds=0.05)
    files.write_json_atomic(path, {"host": "elsewhere", "pid": 1, "token": "new", "heartbeat": time.time()})
    time.sleep(0.3)
    assert lock.lost
    lock.release()
    assert locks.read_owner(path)["token"] == "new"  # not ours: left alone

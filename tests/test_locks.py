"""Task locks: exclusive, released, stale ones taken over exactly once, a lost lock noticed."""

import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from tfbench import fencing, files
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
    with locks.acquire(path, locks.Timing(heartbeat_seconds=0.05, stale_after=60)):
        first = locks.read_owner(path)["heartbeat"]
        time.sleep(0.3)
        assert locks.read_owner(path)["heartbeat"] > first
        assert locks.acquire(path, locks.Timing(0.05, stale_after=0.2)) is None  # fresh: not stale


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
    assert locks.acquire(path, locks.Timing(1, stale_after=60)) is None
    time.sleep(0.2)
    with locks.acquire(path, locks.Timing(0.05, stale_after=0.1)) as lock:
        assert lock is not None


def test_of_many_takers_of_one_stale_lock_exactly_one_wins(tmp_path):
    path = os.path.join(tmp_path, "t.lock")
    for round_ in range(20):
        files.write_json_atomic(path, {"host": "elsewhere", "pid": 1, "token": f"old{round_}", "heartbeat": 0})
        won, barrier = [], threading.Barrier(8)

        def take():
            barrier.wait()
            lock = locks.acquire(path, locks.Timing(0.5, stale_after=1))
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
    lock = locks.acquire(path, locks.Timing(heartbeat_seconds=0.05, stale_after=60))
    files.write_json_atomic(path, {"host": "elsewhere", "pid": 1, "token": "new", "heartbeat": time.time()})
    time.sleep(0.3)
    assert lock.lost
    lock.release()
    assert locks.read_owner(path)["token"] == "new"  # not ours: left alone


def test_a_write_under_a_lock_taken_over_is_refused_and_leaves_the_file_alone(tmp_path):
    path, record = os.path.join(tmp_path, "t.json.lock"), os.path.join(tmp_path, "t.json")
    lock = locks.acquire(path, locks.Timing(heartbeat_seconds=30, stale_after=60))
    with fencing.holding(lock):
        files.write_json_atomic(record, {"by": "owner"})  # ours: written
        files.write_json_atomic(path, {**lock.owner, "token": "taker"})  # as a takeover leaves it
        with pytest.raises(fencing.LeaseLost, match="lost"):
            files.write_json_atomic(record, {"by": "old owner"})
        with pytest.raises(fencing.LeaseLost):
            fencing.check()  # and so does the next step boundary
    files.write_json_atomic(record + ".other", {})  # outside the task: not fenced
    lock.release()
    assert locks.read_owner(path)["token"] == "taker" and locks.read_owner(record) == {"by": "owner"}
    assert sorted(os.listdir(tmp_path)) == ["t.json", "t.json.lock", "t.json.other"]  # no temporary left


def test_an_owner_whose_heartbeat_ran_late_has_lost_its_lease_even_if_nobody_took_over(tmp_path):
    """What a paused owner finds when it wakes up: its heartbeat is older than the lease, so a
    taker may already be breaking the lock; it must stop, and leave the lock for the taker."""
    path = os.path.join(tmp_path, "t.lock")
    timing = locks.Timing(heartbeat_seconds=0.2, stale_after=0.5)
    lock = locks.acquire(path, timing)
    lock._stop.set()  # the heartbeat thread stops, as in a paused process
    lock._thread.join()
    assert lock.held()
    time.sleep(timing.stale_after - timing.margin + 0.05)
    assert not lock.held() and locks.read_owner(path)["token"] == lock.owner["token"]
    lock.release()
    assert os.path.exists(path)  # left to be taken over as stale, never removed by a late owner


def test_lock_timing_needs_a_heartbeat_of_margin():
    with pytest.raises(locks.TimingError, match="at most half the stale timeout"):
        locks.Timing(heartbeat_seconds=60, stale_after=90)

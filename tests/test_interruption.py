"""The stop request: who can make it, who hears it, and what a binary does with a signal.

Signals are sent to small Python processes (no TensorFlow) running `cli.interruptible`, as the
binaries do; the training loop's side is in test_training.py and test_finetune_cli.py.
"""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from tfbench import interruption

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# work() counts steps; it looks at the stop request after each one unless told to ignore it.
WORKER = textwrap.dedent('''
    import sys, time
    from tfbench import cli, interruption

    def work():
        print("started", flush=True)
        step = 0
        while True:
            time.sleep(0.02)
            step += 1
            if sys.argv[1] == "checks":
                interruption.check(f"at step {step}")

    cli.interruptible(work)
''')


@pytest.fixture(autouse=True)
def _no_request_left_behind():
    yield
    interruption.clear()


def _start(mode, *script):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    process = subprocess.Popen([sys.executable, "-c", "\n".join(script) or WORKER, mode], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "started"
    return process


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_work_at_its_next_check_with_one_line_and_128_plus_the_signal(number):
    process = _start("checks")
    time.sleep(0.2)
    process.send_signal(number)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 128 + number
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    lines = stderr.strip().splitlines()
    assert lines[-1].startswith("interrupted at step ") and lines[-1].endswith(
        "; the same command resumes from there")
    assert len(lines) == 2 and lines[0].startswith(signal.Signals(number).name)  # what it is doing about it


def test_a_second_signal_exits_at_once():
    process = _start("ignores")  # never reaches a safe point
    process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert process.poll() is None
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 128 + signal.SIGTERM
    assert "SIGTERM again: exiting at once" in stderr


def test_a_signal_is_heard_while_the_main_thread_is_blocked():
    """A compiled training loop keeps the main thread inside TensorFlow, where Python runs no
    signal handler: the request must still reach the loop's callback at once."""
    process = _start("", "import select",
                     "from tfbench import interruption",
                     "with interruption.handling_signals(), interruption.on_request(lambda: print('heard', flush=True)):",
                     "    print('started', flush=True)",
                     "    select.select([], [], [], 60)")
    try:
        process.send_signal(signal.SIGTERM)
        assert process.stdout.readline().strip() == "heard"
    finally:
        process.kill()
        process.communicate()


def test_requests_from_any_thread_reach_every_listener_once_and_check_raises():
    heard = []
    with interruption.on_request(lambda: heard.append("a")), interruption.on_request(lambda: heard.append("b")):
        assert interruption.requested() is None
        interruption.check("nowhere")  # nothing asked: nothing raised
        thread = threading.Thread(target=interruption.request_stop, args=("lock lost",))
        thread.start()
        thread.join()
        interruption.request_stop("again")  # the first request wins
    assert heard == ["a", "b"]
    assert interruption.requested() == interruption.Request("lock lost")
    with pytest.raises(interruption.Interrupted) as stopped:
        interruption.check("at step 3")
    assert stopped.value.within("of trial t").line() == \
        "interrupted at step 3 of trial t; the same command resumes from there"
    assert stopped.value.exit_code == interruption.REQUESTED_EXIT
    assert not isinstance(stopped.value, Exception)  # `except Exception` never records it as a failure
    with interruption.on_request(lambda: heard.append("late")):  # listening after the request
        pass
    assert heard[-1] == "late"
    interruption.clear()
    interruption.check()


def test_signal_handlers_are_restored_after_the_block():
    before = signal.getsignal(signal.SIGTERM)
    with interruption.handling_signals():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before

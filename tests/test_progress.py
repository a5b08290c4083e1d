"""The progress display: plain lines in a log, one redrawn line on a terminal."""

import io

from tfbench import progress
from tfbench.progress import Progress, track


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_log_gets_plain_lines_without_escape_codes_or_carriage_returns(monkeypatch):
    monkeypatch.setattr(progress, "PLAIN_SECONDS", 0.0)  # a line at every update
    log = io.StringIO()
    with Progress("training", 4, "steps", stream=log) as shown:
        for step in range(1, 5):
            shown.update(step, loss=0.5 / step)
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and "\x1b" not in log.getvalue()
    assert len(lines) == 5  # four updates and the closing line
    assert lines[0].startswith("training: 1/4 steps, 25%") and lines[0].endswith("loss=0.5")
    assert lines[-1].startswith("training: 4/4 steps, 100%") and lines[-1].endswith("loss=0.125")


def test_a_log_gets_one_line_per_interval_and_the_last(monkeypatch):
    log = io.StringIO()
    with Progress("features train", 1000, "img", stream=log) as shown:
        for _ in range(1000):
            shown.advance()
    assert log.getvalue().splitlines() == [log.getvalue().splitlines()[-1]]
    assert log.getvalue().startswith("features train: 1,000/1,000 img, 100%")


def test_a_terminal_gets_one_line_redrawn_in_place(monkeypatch):
    monkeypatch.setattr(progress, "REDRAW_SECONDS", 0.0)
    screen = Terminal()
    with Progress("checking images", None, "img", stream=screen) as shown:
        shown.advance(3)
        shown.advance(2)
    text = screen.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n") and text.count("\n") == 1
    assert "\x1b" not in text and "checking images: 5 img" in text.split("\r")[-1]


def test_track_yields_every_item_and_a_resumed_count_starts_where_it_left_off(monkeypatch):
    monkeypatch.setattr(progress.sys, "stdout", io.StringIO())
    assert list(track(range(3), "files", 3, "file")) == [0, 1, 2]
    assert progress.sys.stdout.getvalue().startswith("files: 3/3 file")
    log = io.StringIO()
    with Progress("training", 10, "steps", stream=log, start=6) as shown:
        shown.update(8)
    assert log.getvalue().startswith("training: 8/10 steps, 80%")

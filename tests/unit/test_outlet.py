"""Our own output's outlet (helpers/shared/outlet.py) with real pipes: a reader who stops reading never
blocks us, lines keep their order, and a drain before we end lasts no longer than its deadline, or than
until a signal we listen for comes."""

from __future__ import annotations

import errno
import math
import os
import threading
import time

import pytest

from sandboxed_run_helpers.shared import outlet
from support import fill, full_pipe

LINES = b"".join(b"line %d\n" % i for i in range(2000))


@pytest.fixture(autouse=True)
def own_outlets(monkeypatch):
    """The outlets, what a drain hears and its deadline as a process of ours has them when it starts."""
    monkeypatch.setattr(outlet, "_outlets", [])
    monkeypatch.setattr(outlet, "_heard", [])
    monkeypatch.setattr(outlet, "_deadline", None)
    monkeypatch.setattr(outlet, "_enabled_in", 0)


@pytest.fixture
def pipe():
    fds = full_pipe()
    yield fds
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def read_all(fd: int) -> bytes:
    os.set_blocking(fd, False)
    data = bytearray()
    try:
        while chunk := os.read(fd, 1 << 16):
            data += chunk
    except BlockingIOError:
        pass
    os.set_blocking(fd, True)
    return bytes(data)


def test_the_earliest_deadline_stays():
    assert outlet.deadline() is None
    outlet.hurry_at(None)
    assert outlet.deadline() is None
    outlet.hurry_at(50.0)
    outlet.hurry_at(80.0)
    assert outlet.deadline() == 50.0
    outlet.hurry_at(20.0)
    assert outlet.deadline() == 20.0
    outlet.hurry()
    assert outlet.deadline() == -math.inf
    outlet.hurry_at(0.0)
    assert outlet.deadline() == -math.inf


def test_a_reader_who_stops_reading_never_blocks_us_and_gets_every_line_in_order(pipe):
    r, w = pipe
    outlet.enable()
    out = outlet.outlet(w, lambda exc: pytest.fail(f"reported {exc}"))
    out.write(LINES)  # returns at once: the pipe is full
    assert outlet.waiting() == [w]
    read_all(r)  # the filler
    received = bytearray()
    while outlet.waiting():
        outlet.select_readable([], 5.0)
        received += read_all(r)
    assert bytes(received) == LINES


def test_descriptors_of_one_pipe_share_an_outlet_and_its_order(pipe):
    r, w = pipe
    told = []
    other = os.dup(w)
    try:
        first = outlet.outlet(w, told.append)
        assert outlet.outlet(other, told.append) is first
        assert len(first.told) == 2
    finally:
        os.close(other)


def test_a_regular_file_gets_an_outlet_per_descriptor(tmp_path):
    with open(tmp_path / "f", "wb") as a, open(tmp_path / "f", "ab") as b:
        assert outlet.outlet(a.fileno(), print) is not outlet.outlet(b.fileno(), print)


def test_a_hurried_drain_drops_what_does_not_fit_at_once(pipe):
    r, w = pipe
    outlet.enable()
    outlet.outlet(w, print).write(b"dropped\n")
    outlet.hurry()
    started = time.monotonic()
    outlet.drain()
    assert time.monotonic() - started < 5.0
    assert outlet.waiting() == []
    assert b"dropped" not in read_all(r)


def test_a_drain_waits_for_a_slow_reader_until_its_deadline_then_drops_the_rest(pipe):
    r, w = pipe
    outlet.enable()
    outlet.outlet(w, print).write(b"late\n")
    outlet.hurry_at(time.monotonic() + 0.3)
    started = time.monotonic()
    outlet.drain()
    assert time.monotonic() - started >= 0.3 - 0.01  # it waited for the reader as long as it was allowed
    assert outlet.waiting() == []
    assert b"late" not in read_all(r)


def test_a_drain_without_a_deadline_writes_everything_to_a_reader_who_reads(pipe):
    r, w = pipe
    outlet.enable()
    outlet.outlet(w, print).write(LINES)
    received = bytearray()

    def reader() -> None:
        while chunk := os.read(r, 1 << 16):
            received.extend(chunk)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        outlet.drain()
    finally:
        os.close(w)
        thread.join(30)
    assert bytes(received).endswith(LINES)


def test_something_heard_ends_a_drain_and_is_left_for_its_reader(pipe):
    r, w = pipe
    heard_r, heard_w = os.pipe()
    try:
        outlet.enable()
        outlet.hear(heard_r)
        outlet.outlet(w, print).write(b"dropped\n")
        os.write(heard_w, b"!")
        outlet.drain()
        assert outlet.waiting() == []
        assert os.read(heard_r, 10) == b"!"
    finally:
        os.close(heard_r)
        os.close(heard_w)


def test_a_reader_who_went_away_is_told_once_and_the_rest_is_dropped(pipe):
    r, w = pipe
    os.close(r)
    outlet.enable()
    told = []
    out = outlet.outlet(w, told.append)
    out.write(b"first\n")
    out.write(b"second\n")
    assert [exc.errno for exc in told] == [errno.EPIPE]
    assert out.broken and outlet.waiting() == []


def test_without_enable_a_write_blocks_as_the_programs_own_would():
    r, w = os.pipe()
    try:
        out = outlet.outlet(w, print)
        out.write(b"at once\n")
        assert out.pending == b"" and os.read(r, 100) == b"at once\n"
    finally:
        os.close(r)
        os.close(w)


def test_a_forked_child_writes_nothing_its_parent_had_pending(pipe):
    r, w = pipe
    outlet.enable()
    outlet.outlet(w, print).write(b"the parent's\n")
    outlet.hurry()
    pid = os.fork()
    if pid == 0:
        os._exit(0 if outlet.waiting() == [] and outlet.deadline() is None else 1)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert outlet.waiting() == [w]
    fill(w)  # still full: nothing went out meanwhile

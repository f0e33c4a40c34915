"""Behaviours 7 and 8: processes the main process leaves get the stop signal, the grace period,
then SIGKILL, and the launcher returns the main status; a timeout stops the job the same way."""

from __future__ import annotations

import subprocess
import time

import pytest

import sandbox
from support import CLI, PYTHON, log_lines, marked_processes, signal_job, this_process

# Three kinds of leftovers: a setsid daemon that cleans up on SIGTERM, a double fork, and one
# that ignores SIGTERM and must be SIGKILLed when the grace period ends.
LEAVER = r"""
import os, signal, sys, time
log = sys.argv[1]
def note(text):
    with open(log, "a") as f:
        f.write(text + "\n")
def daemon(name, on_term):
    signal.signal(signal.SIGTERM, on_term)
    note(name + " up")
    while True:
        time.sleep(1)
def cleanup(sig, frame):
    note("daemon cleaned")
    os._exit(0)
if os.fork() == 0:
    os.setsid()
    daemon("daemon", cleanup)
if os.fork() == 0:
    if os.fork() == 0:
        daemon("grandchild", signal.SIG_DFL)
    os._exit(0)
if os.fork() == 0:
    daemon("stubborn", signal.SIG_IGN)
while len(open(log).read().splitlines()) < 3:
    time.sleep(0.01)
sys.exit(3)
"""


def _leaver(tmp_path):
    script = tmp_path / "leaver.py"
    script.write_text(LEAVER)
    log = tmp_path / "leaver.log"
    log.touch()
    return [PYTHON, str(script), str(log)], log


def test_cli_stops_what_the_main_process_left_and_returns_its_status(tmp_path, no_leftovers):
    argv, log = _leaver(tmp_path)
    started = time.monotonic()
    result = subprocess.run([CLI, "--grace", "1", *argv], cwd=tmp_path)
    elapsed = time.monotonic() - started
    assert result.returncode == 3
    assert "daemon cleaned" in log_lines(log), "the setsid daemon did not get the stop signal"
    assert elapsed >= 1.0, "the stubborn process was killed before its grace period ended"
    assert not marked_processes(no_leftovers, this_process()), "the launcher returned while processes remained"


def test_api_stops_what_the_main_process_left_and_returns_its_status(tmp_path, no_leftovers):
    argv, log = _leaver(tmp_path)
    result = sandbox.run(argv, grace=1)
    assert result.returncode == 3
    assert "daemon cleaned" in log_lines(log)
    assert not marked_processes(no_leftovers, this_process())


def test_cli_timeout_stops_the_job_with_grace_and_exits_124(tmp_path):
    argv, log = signal_job(tmp_path, cleanup=0.5)
    result = subprocess.run([CLI, "--timeout", "1", "--grace", "5", *argv], cwd=tmp_path)
    assert result.returncode == 124
    assert log_lines(log)[1:] == ["SIGTERM", "cleaned"]


def test_api_timeout_raises_timeoutexpired_after_the_job_ended(tmp_path, no_leftovers):
    argv, log = signal_job(tmp_path, cleanup=0.5)
    with pytest.raises(subprocess.TimeoutExpired):
        sandbox.run(argv, timeout=1, grace=5, capture_output=True)
    assert log_lines(log)[1:] == ["SIGTERM", "cleaned"], "TimeoutExpired came before the job's cleanup ended"
    assert not marked_processes(no_leftovers, this_process())


def test_api_timeout_keeps_partial_output(tmp_path):
    with pytest.raises(subprocess.TimeoutExpired) as caught:
        sandbox.run(["sh", "-c", "echo partial; sleep 30"], timeout=1, grace=1, capture_output=True)
    assert caught.value.stdout == b"partial\n"

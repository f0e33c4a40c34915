"""--json-status: one JSON object per line for every lifecycle event, "finished" last; the API's
result carries the same events."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

import sandbox
from support import CLI, Ending, names, read_status, status_events, wait_for


def _check_common(events: list[dict]) -> None:
    assert events[0]["event"] == "started"
    assert events[0]["job_pid"] > 0 and events[0]["mnt_ns"] > 0 and events[0]["pid_ns"] > 0
    times = [e["time"] for e in events]
    assert times == sorted(times)


@pytest.mark.root("a loop device")
def test_status_after_a_normal_exit(tmp_path, no_leftovers):
    events = Ending(tmp_path, "exit").events()
    _check_common(events)
    assert names(events) == ["started", "exited", "hook", "finished"]
    assert (events[1]["code"], events[1]["signal"]) == (0, None)
    assert events[2]["code"] == 0 and "loops=" in events[2]["command"]
    assert (events[-1]["status"], events[-1]["signal"]) == (0, None)


@pytest.mark.root("a loop device")
def test_status_after_ctrl_c(tmp_path, no_leftovers):
    events = Ending(tmp_path, "ctrl-c").events()
    _check_common(events)
    assert names(events) == ["started", "exited", "hook", "finished"]
    assert events[1]["signal"] == "SIGINT"
    assert (events[-1]["status"], events[-1]["signal"]) == (130, "SIGINT")


@pytest.mark.root("a loop device")
def test_status_after_a_timeout(tmp_path, no_leftovers):
    events = Ending(tmp_path, "timeout").events()
    _check_common(events)
    assert names(events) == ["started", "stopping", "exited", "hook", "finished"]
    assert events[1]["reason"] == "timeout" and events[1]["grace"] == 5.0 and events[1]["signal"] == "SIGTERM"
    assert events[2]["signal"] == "SIGTERM"
    assert (events[-1]["status"], events[-1]["signal"]) == (124, None)


@pytest.mark.root("a loop device")
def test_status_of_a_sigkilled_launcher_ends_without_finished(tmp_path, no_leftovers):
    ending = Ending(tmp_path, "launcher-sigkill")
    assert ending.loop_gone()
    # The hook monitor, which outlives sandboxed-run, still reports its hook; nobody writes "finished".
    assert wait_for(lambda: names(ending.events()) == ["started", "hook"])


def test_status_of_a_forwarded_signal(tmp_path, no_leftovers):
    status_file = tmp_path / "status.jsonl"
    launcher = subprocess.Popen([CLI, "--json-status", str(status_file), "sleep", "1000"], start_new_session=True)
    assert wait_for(lambda: read_status(status_file))
    os.kill(launcher.pid, signal.SIGTERM)
    assert launcher.wait(30) == -signal.SIGTERM
    events = read_status(status_file)
    assert names(events) == ["started", "signal", "exited", "finished"]
    assert (events[1]["signal"], events[1]["origin"]) == ("SIGTERM", "launcher")
    assert (events[-1]["status"], events[-1]["signal"]) == (143, "SIGTERM")


def test_status_of_leftovers_stopped_and_killed(tmp_path, no_leftovers):
    status_file = tmp_path / "status.jsonl"
    job = "trap '' TERM; sleep 1000 & exit 6"
    result = subprocess.run([CLI, "--grace", "0.3", "--json-status", str(status_file), "sh", "-c", job])
    assert result.returncode == 6
    events = read_status(status_file)
    assert names(events) == ["started", "exited", "stopping", "killed", "finished"]
    assert events[2]["reason"] == "main process exited" and events[2]["grace"] == 0.3
    assert events[3]["count"] == 1
    assert events[-1]["status"] == 6


def test_status_fd_and_a_job_that_was_not_found(tmp_path):
    result = subprocess.run([CLI, "--json-status-fd", "1", "no-such-command-xyz"], capture_output=True, text=True)
    assert result.returncode == 127
    events = status_events(result.stdout)
    assert names(events) == ["finished"]
    assert events[0]["status"] == 127 and "not found" in events[0]["error"]


def test_status_options_refuse_bad_input(tmp_path):
    result = subprocess.run([CLI, "--json-status-fd", "77", "true"], capture_output=True, text=True)
    assert result.returncode == 125 and "not an open file descriptor" in result.stderr
    result = subprocess.run([CLI, "--json-status", str(tmp_path / "no/such/dir/x"), "true"], capture_output=True,
                            text=True)
    assert result.returncode == 125 and result.stderr.count("\n") == 1
    result = subprocess.run([CLI, "--json-status", "x", "--json-status-fd", "1", "true"], capture_output=True,
                            text=True)
    assert result.returncode == 2


def test_api_result_carries_the_events():
    result = sandbox.run(["sh", "-c", "kill -USR1 $$"])
    assert result.returncode == -signal.SIGUSR1
    assert [name for name, _ in result.events] == ["started", "exited", "finished"]
    assert result.events[1][1]["signal"] == "SIGUSR1"
    assert result.events[-1][1]["status"] == 128 + signal.SIGUSR1

"""What we write ourselves (stderr, the status stream, the hook monitor's pipe) never changes the job's
fate or the exit status: a reader that goes away is reported once if possible, then ignored; a reader who
stops reading holds our lines back, never our waits (a signal or --timeout still ends them)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from support import (
    CLI,
    children,
    fill,
    full_pipe,
    launched,
    log_lines,
    read_status,
    signal_job,
    status_events,
    wait_for,
)

PIPE_SIZE = 65536  # a pipe's default capacity on Linux


def read_to_end(r: int) -> bytes:
    data = b""
    while chunk := os.read(r, PIPE_SIZE):
        data += chunk
    return data


# What ends the launcher while nobody reads our lines: a signal to it (passed on to the job, which dies
# of it after its cleanup), or its --timeout.
ENDINGS = {"SIGTERM": -signal.SIGTERM, "SIGINT": -signal.SIGINT, "timeout": 124}


@pytest.mark.parametrize("ending", ENDINGS)
@pytest.mark.parametrize("stream", ["status", "stderr"])
@pytest.mark.parametrize("hooks", [False, True], ids=["no-hooks", "hooks"])
def test_a_reader_who_stops_reading_never_makes_our_waits_deaf(tmp_path, ending, stream, hooks, no_leftovers):
    argv, log = signal_job(tmp_path, cleanup=0.3)
    r, w = full_pipe()
    flags = ["-v", "--json-status-fd", str(w)] if stream == "status" else ["-v"]
    flags += ["--on-exit", "echo hook ran"] if hooks else []
    flags += ["--timeout", "2s"] if ending == "timeout" else []
    try:
        with launched([CLI, *flags, "--", *argv], pass_fds=(w,), stdout=subprocess.DEVNULL,
                      stderr=w if stream == "stderr" else subprocess.DEVNULL) as launcher:
            assert wait_for(lambda: log_lines(log)), "the job did not start"
            if ending != "timeout":
                launcher.send_signal(getattr(signal, ending))
            assert launcher.wait(timeout=60) == ENDINGS[ending]
        assert log_lines(log)[1:] == ["SIGINT" if ending == "SIGINT" else "SIGTERM", "cleaned"]
    finally:
        os.close(w)
        os.close(r)


@pytest.mark.parametrize("stream", ["status", "stderr"])
def test_lines_held_back_arrive_whole_and_in_order_once_the_reader_reads(tmp_path, stream, no_leftovers):
    """Without a signal we wait for the reader, as any program writing to a pipe does: everything arrives."""
    r, w = full_pipe()
    flags = ["--json-status-fd", str(w)] if stream == "status" else ["-v"]
    with launched([CLI, *flags, "--on-exit", "echo hook ran >&2", "--", "sh", "-c", "exit 3"], pass_fds=(w,),
                  stderr=w, stdout=subprocess.DEVNULL) as launcher:
        os.close(w)
        assert wait_for(lambda: not children(launcher.pid)), "the sandbox did not end"  # no wait of ours
        data = read_to_end(r)[PIPE_SIZE:]  # ours, after what filled the pipe
        os.close(r)
        assert launcher.wait(timeout=60) == 3
    if stream == "status":
        events = [event["event"] for event in status_events(data)]
        assert events == ["started", "exited", "hook", "finished"], data
        assert "hook ran" in data.decode().splitlines()
    else:
        words = [line.split()[1] for line in data.decode().splitlines() if line.startswith("sandboxed-run: ")]
        assert words == ["started", "exited", "hook", "finished"], data


@pytest.mark.parametrize("stream", ["status", "stderr"])
def test_a_reader_who_stops_reading_keeps_us_no_longer_than_the_timeout(tmp_path, stream, no_leftovers):
    """The job ends before its --timeout; then the time left is all we wait for a reader who does not read."""
    r, w = full_pipe()
    flags = ["-v", "--json-status-fd", str(w)] if stream == "status" else ["-v"]
    try:
        with launched([CLI, *flags, "--timeout", "3s", "--on-exit", "true", "--", "sh", "-c", "exit 3"],
                      pass_fds=(w,), stdout=subprocess.DEVNULL,
                      stderr=w if stream == "stderr" else subprocess.DEVNULL) as launcher:
            assert launcher.wait(timeout=60) == 3
    finally:
        os.close(w)
        os.close(r)


OUTLET_LINES = """
import os, sys
from sandboxed_run_helpers.shared import outlet
r, w = int(sys.argv[1]), int(sys.argv[2])
outlet.enable()
ours = outlet.outlet(w, lambda exc: None)
for letter in "abc":
    ours.write(letter.encode() * 3000 + b"\\n")  # held back: the pipe is full
os.read(r, 4096)  # room for one page
outlet.push(outlet.waiting())
os.write(w, b"OTHER\\n")  # another writer of the same pipe (the job, a hook)
os.read(r, 65536 - 4096)  # what filled the pipe
outlet.drain()
data = b""
while len(data) < 3 * 3001 + 6:  # ours and the other writer's
    data += os.read(r, 65536)
sys.stdout.write(data.decode())
"""


def test_our_lines_held_back_are_never_split_by_another_writer(tmp_path):
    """What is held back goes out in whole lines of at most a pipe's atomic size: another process writing
    to the same pipe meanwhile lands between our lines, never inside one."""
    r, w = full_pipe()
    try:
        result = subprocess.run([sys.executable, "-c", OUTLET_LINES, str(r), str(w)], pass_fds=(r, w),
                                capture_output=True, text=True, timeout=60)
    finally:
        os.close(w)
        os.close(r)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert sorted(lines) == sorted(["a" * 3000, "b" * 3000, "c" * 3000, "OTHER"]), [line[:8] for line in lines]


def test_a_stderr_reader_that_goes_away_does_not_stop_the_job(tmp_path, no_leftovers):
    done = tmp_path / "done"
    r, w = os.pipe()
    os.close(r)  # as `2>&1 | head -1` once head has its line
    try:
        result = subprocess.run([CLI, "-v", "--", "sh", "-c", f"sleep 0.3; echo ok > {done}; exit 3"],
                                stderr=w, stdout=subprocess.DEVNULL, timeout=60)
    finally:
        os.close(w)
    assert result.returncode == 3
    assert done.read_text() == "ok\n"


def test_a_status_reader_that_goes_away_changes_nothing(tmp_path, no_leftovers):
    done = tmp_path / "done"
    r, w = os.pipe()
    os.close(r)
    try:
        result = subprocess.run([CLI, "--json-status-fd", str(w), "--", "sh", "-c",
                                 f"sleep 0.3; echo ok > {done}; exit 3"], pass_fds=(w,), capture_output=True,
                                text=True, timeout=60)
    finally:
        os.close(w)
    assert result.returncode == 3
    assert done.read_text() == "ok\n"
    assert result.stderr.count("\n") == 1 and "status" in result.stderr  # reported once


def test_json_status_on_stdout_leaves_the_hooks_their_stdout(tmp_path):
    result = subprocess.run([CLI, "--json-status-fd", "1", "--on-exit", "echo from-the-hook", "--", "true"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "from-the-hook" in lines
    assert lines[-1].startswith('{"event":"finished"')
    assert [event["event"] for event in status_events(result.stdout)] == ["started", "exited", "hook", "finished"]


def test_a_killed_hook_monitor_does_not_change_the_status(tmp_path, no_leftovers):
    status = tmp_path / "status"
    with launched([CLI, "--json-status", str(status), "--on-exit", "true", "--", "sh", "-c", "sleep 1; exit 3"],
                  stderr=subprocess.PIPE, text=True) as launcher:
        def hook_monitor() -> list[int]:
            # Named by itself once forked: until then it is a second child under our own name.
            return [pid for pid in children(launcher.pid)
                    if open(f"/proc/{pid}/comm").read().strip() == "sandbox-hooks"]

        assert wait_for(hook_monitor)
        monitor = hook_monitor()
        os.kill(monitor[0], signal.SIGKILL)
        _, err = launcher.communicate(timeout=60)
    assert launcher.returncode == 3
    assert len(err.splitlines()) == 1 and "hook" in err, err
    assert read_status(status)[-1]["event"] == "finished"


def test_a_hook_sees_the_status_file_complete_up_to_itself(tmp_path):
    """Sanity for the above: hooks still run and report when nothing is broken."""
    log = tmp_path / "log"
    result = subprocess.run([CLI, "--on-exit", f"echo $SANDBOXED_RUN_STATUS > {log}", "--", "sh", "-c", "exit 3"],
                            timeout=60)
    assert result.returncode == 3 and log_lines(log) == ["3"]


def full_terminal() -> tuple[int, int]:
    """A pseudo-terminal whose reader has stopped reading: its master, and a slave with no room left."""
    master, slave = os.openpty()
    return master, fill(slave, b"x" * 64)


def test_a_terminal_that_takes_a_little_never_makes_our_waits_deaf(tmp_path, no_leftovers):
    """A terminal's write blocks until all of it is taken, whatever poll() said: a reader who has room for
    part of a long line only must not hold the hook monitor in its write, deaf to the SIGTERM it should pass
    on to the next hook (and the launcher waiting for it)."""
    log = tmp_path / "hook.log"
    master, slave = full_terminal()
    hook = f"trap 'echo TERM >> {log}; exit 0' TERM; echo ready >> {log}; while :; do sleep 0.1; done"
    os.read(master, 1000)  # room for our first lines and part of the first hook's, which then waits for more
    try:
        with launched([CLI, "-v", "--on-exit", ": " + "a" * 6000, "--on-exit", hook, "--", "true"],
                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave) as launcher:
            assert wait_for(lambda: any(open(f"/proc/{pid}/comm").read().strip() == "sandbox-hooks"
                                        for pid in children(launcher.pid))), "no hook monitor"
            wait_for(lambda: False, timeout=1)  # the monitor's first line: blocked for good, if it blocks
            launcher.send_signal(signal.SIGTERM)
            assert launcher.wait(timeout=30) == 0
        assert log_lines(log) == ["ready", "TERM"]
    finally:
        os.close(slave)
        os.close(master)

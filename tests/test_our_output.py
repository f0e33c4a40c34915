"""What we write ourselves (stderr, the status stream, the hook monitor's pipe) never changes the job's
fate or the exit status: a reader that goes away is reported once if possible, then ignored."""

from __future__ import annotations

import os
import signal
import subprocess

from support import CLI, children, launched, log_lines, read_status, wait_for


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

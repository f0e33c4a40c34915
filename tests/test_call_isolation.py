"""In the API one failing call fails alone: the spawn server and every other running job go on, and
each job's hooks run exactly once. If the spawn server itself is killed, running jobs still report
their real end and the next call starts a fresh server."""

from __future__ import annotations

import errno
import os
import signal

import pytest

import sandbox
from sandbox.api import spawner
from support import alive, log_lines, wait_for


def closed_descriptor() -> int:
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    return w


@pytest.mark.parametrize("bad", ["stdout", "stdin"])
def test_a_bad_descriptor_fails_that_call_alone(tmp_path, bad, no_leftovers):
    log = tmp_path / "hook"
    other = sandbox.Popen(["sh", "-c", "sleep 1; exit 7"], on_exit=[f"echo hook >> {log}"])
    with pytest.raises(OSError) as caught:
        sandbox.run(["true"], **{bad: closed_descriptor()})
    assert caught.value.errno == errno.EBADF
    assert sandbox.run(["sh", "-c", "exit 4"]).returncode == 4
    assert other.wait(timeout=30) == 7
    assert log_lines(log) == ["hook"]
    names = [name for name, _ in other.events]
    assert "stopping" not in names and names[-1] == "finished"


def test_a_killed_spawn_server_leaves_running_jobs_their_real_end(tmp_path, no_leftovers):
    log = tmp_path / "hook"
    job = sandbox.Popen(["sh", "-c", "sleep 1; exit 7"], on_exit=[f"echo hook >> {log}"])
    server = spawner.current().pid
    os.kill(server, signal.SIGKILL)
    assert wait_for(lambda: not alive(server))
    try:
        code = job.wait(timeout=30)
    except sandbox.SandboxError as exc:  # allowed: a clear error instead of the status
        assert "spawn server" in str(exc)
    else:
        assert code == 7, "a made-up status"
    assert log_lines(log) == ["hook"]
    # The next call starts a fresh server.
    assert sandbox.run(["sh", "-c", "exit 5"]).returncode == 5
    assert spawner.current().pid != server


def test_a_killed_spawn_server_leaves_a_running_job_session_usable_to_its_end(no_leftovers):
    with sandbox.Job() as job:
        os.kill(spawner.current().pid, signal.SIGKILL)
        assert job.run(["sh", "-c", "exit 3"]).returncode == 3

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


def test_a_command_that_cannot_start_still_runs_its_hooks_in_the_caller(tmp_path, no_leftovers):
    log = tmp_path / "hook"
    events: list = []
    with pytest.raises(sandbox.CommandNotFound):
        sandbox.run(["no-such-program-xyz"], on_exit=[f"echo $SANDBOXED_RUN_STATUS >> {log}"],
                    on_event=lambda name, fields: events.append((name, fields)))
    assert log_lines(log) == ["127"]
    assert [name for name, _ in events][-2:] == ["hook", "finished"]
    assert events[-1][1]["status"] == 127


CLAIMS = """
import os, select, signal, sys, sandbox
from sandbox.api import spawner
log = sys.argv[1]
a = sandbox.Popen(["sleep", "0.5"], on_exit=[f"echo A >> {log}"])
server = os.pidfd_open(spawner.current().pid)
signal.pidfd_send_signal(server, signal.SIGKILL)
select.select([server], [], [])  # dead: the next call starts a new server (a request racing its death fails alone)
b = sandbox.Popen(["sleep", "2"], on_exit=[f"echo B >> {log}"])
a.wait()  # claims A's hooks: a ticket of the dead server, which must not take B's from the new one
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_claiming_hooks_after_a_new_spawn_server_never_takes_anothers(tmp_path, no_leftovers):
    import subprocess
    import sys

    log = tmp_path / "hook"
    subprocess.run([sys.executable, "-c", CLAIMS, str(log)], timeout=60)
    assert wait_for(lambda: len(log_lines(log)) == 2, timeout=20)
    assert sorted(log_lines(log)) == ["A", "B"]


def test_poll_and_wait_from_several_threads_take_the_end_once(tmp_path, no_leftovers):
    import threading

    log = tmp_path / "hook"
    errors = []
    for _ in range(15):
        p = sandbox.Popen(["sleep", "0.05"], on_exit=[f"echo x >> {log}"])

        def waiting(p: sandbox.Popen = p) -> None:
            try:
                p.wait()
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)

        def polling(p: sandbox.Popen = p) -> None:
            try:
                while p.poll() is None:
                    pass
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=f) for f in (waiting, waiting, polling)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert p.returncode == 0
    assert errors == []
    assert log_lines(log) == ["x"] * 15


def test_an_abandoned_popen_leaks_no_descriptor(no_leftovers):
    import gc

    sandbox.run(["true"])
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(10):
        sandbox.Popen(["true"])
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) == before


BROKEN_SERVER = """
import sys, sandbox
sys.executable = sys.argv[1]  # the spawn server is started with it: here a program that dies at once
try:
    sandbox.run(["true"])
except sandbox.SandboxError as exc:
    print(exc)
"""


@pytest.mark.parametrize(("body", "said"), [
    ("kill -KILL $$", "the sandbox spawn server was killed by SIGKILL at start-up"),
    ("echo 'no interpreter here' >&2; exit 3",
     "the sandbox spawn server exited at start-up with status 3 (see its message above)"),
])
def test_a_spawn_server_that_dies_at_start_up_is_said_to_as_it_died(tmp_path, body, said, no_leftovers):
    import subprocess
    import sys

    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\n{body}\n")
    fake.chmod(0o755)
    done = subprocess.run([sys.executable, "-c", BROKEN_SERVER, str(fake)], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.strip() == said
    if "message above" in said:
        assert "no interpreter here" in done.stderr

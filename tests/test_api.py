"""The Python API as a drop-in for subprocess: results, errors, and bad arguments refused up front."""

from __future__ import annotations

import os
import subprocess

import pytest

import sandbox


def test_run_returns_completedprocess_with_output():
    result = sandbox.run(["sh", "-c", "echo out; echo err >&2; exit 3"], capture_output=True, text=True)
    assert isinstance(result, subprocess.CompletedProcess)
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")


def test_check_raises_calledprocesserror():
    with pytest.raises(subprocess.CalledProcessError) as caught:
        sandbox.run(["sh", "-c", "exit 5"], check=True)
    assert caught.value.returncode == 5


def test_input_and_stderr_to_stdout():
    result = sandbox.run(["sh", "-c", "cat; echo e >&2"], input=b"in\n", stdout=sandbox.PIPE, stderr=sandbox.STDOUT)
    assert result.stdout == b"in\ne\n"


def test_env_cwd_and_umask(tmp_path):
    old = os.umask(0o027)
    try:
        result = sandbox.run(["sh", "-c", "echo $ONLY; pwd; umask"], env={"ONLY": "this", "PATH": "/usr/bin:/bin"},
                             cwd=tmp_path, capture_output=True, text=True)
    finally:
        os.umask(old)
    assert result.stdout.split() == ["this", str(tmp_path), "0027"]


def test_missing_and_non_executable_programs_raise_oserror_subclasses():
    with pytest.raises(FileNotFoundError) as caught:
        sandbox.run(["no-such-program-xyz"])
    assert isinstance(caught.value, sandbox.SandboxError) and caught.value.exit_code == 127
    with pytest.raises(PermissionError):
        sandbox.run(["/etc/passwd"])


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"args": []}, ValueError),
        ({"args": ["true"], "grace": -1}, ValueError),
        ({"args": ["true"], "grace": float("nan")}, ValueError),
        ({"args": ["true"], "stop_signal": "NOPE"}, ValueError),
        ({"args": ["true"], "tmpfs": ["relative"]}, ValueError),
        ({"args": ["true"], "tmpfs": "/tmp"}, ValueError),
        ({"args": ["true"], "propagation": "shared"}, ValueError),
        ({"args": ["true"], "bind": ["/no/such/path:/mnt"]}, sandbox.SandboxError),
        ({"args": ["true"], "tmpfs": ["/etc/hostname"]}, sandbox.SandboxError),
        ({"args": ["true"], "timeout": "-1s"}, ValueError),  # a negative number is subprocess's: expired at once
        ({"args": ["true"], "stdin": -7}, ValueError),
        ({"args": ["true"], "stdin": sandbox.PIPE, "stdout": -5}, ValueError),
    ],
)
def test_bad_arguments_raise_before_anything_starts(kwargs, error):
    from sandbox.api import spawner

    before = spawner.current()
    descriptors = len(os.listdir("/proc/self/fd"))
    with pytest.raises(error):
        sandbox.run(**kwargs)
    assert spawner.current() is before, "a sandbox was started for bad arguments"
    assert len(os.listdir("/proc/self/fd")) == descriptors, "a descriptor of ours was left open"


def test_popen_interface():
    with sandbox.Popen(["sh", "-c", "read line; echo got $line"], stdin=sandbox.PIPE, stdout=sandbox.PIPE) as p:
        assert p.pid > 0 and p.poll() is None
        out, _ = p.communicate(b"hello\n")
    assert out == b"got hello\n" and p.returncode == 0
    events = [name for name, _ in p.events]
    assert events[0] == "started" and "exited" in events


def test_popen_context_exit_stops_the_job():
    with sandbox.Popen(["sleep", "100"], grace=1) as p:
        pass
    assert p.returncode == -15


def test_send_signal_and_kill():
    p = sandbox.Popen(["sleep", "100"])
    p.send_signal(10)
    assert p.wait(timeout=30) == -10
    p = sandbox.Popen(["sleep", "100"])
    p.kill()
    assert p.wait(timeout=30) == -9
    p = sandbox.Popen(["sleep", "100"], grace=0)
    with pytest.raises(subprocess.TimeoutExpired):
        p.wait(timeout=0.2)
    assert p.stop() == -15

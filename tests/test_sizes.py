"""Argument lists and environments: whatever execve(2) accepts runs; anything larger is refused
with one clear error (E2BIG) before anything starts; nothing ever hangs."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys

import pytest

import sandbox
from sandbox.api import spawner
from support import CLI, all_ended, children, launched, wait_for

MAX_STRING = 32 * 4096 - 1  # MAX_ARG_STRLEN, less the NUL byte
COUNT = ["sh", "-c", 'echo $# ${#1} ${#BIG}', "sh"]


def run_cli(argv: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    process = subprocess.Popen([CLI, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, env=env)
    try:
        out, err = process.communicate(timeout=60)
        hung = False
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        hung = True
    if hung:
        pytest.fail("sandboxed-run hung", pytrace=False)
    return subprocess.CompletedProcess(argv, process.returncode, out, err)


def test_the_command_takes_arguments_beyond_a_socket_message(no_leftovers):
    args = ["x" * 120_000, "y" * 120_000, *["z" * 1000] * 300]
    result = run_cli(["--", *COUNT, *args])
    assert (result.returncode, result.stdout, result.stderr) == (0, f"{len(args)} 120000 0\n", "")


def test_the_command_takes_the_largest_single_string(no_leftovers):
    env = {**os.environ, "BIG": "b" * (MAX_STRING - len("BIG="))}
    result = run_cli(["--", *COUNT, "a" * MAX_STRING], env=env)
    assert (result.returncode, result.stdout, result.stderr) == (0, f"1 {MAX_STRING} {MAX_STRING - 4}\n", "")


def arg_limit(argv: list[str], env: dict[str, str]) -> int:
    """How many bytes of strings execve accepts for this many pointers (fs/exec.c's rule)."""
    import resource

    stack = resource.getrlimit(resource.RLIMIT_STACK)[0]
    limit = 6 << 20 if stack == resource.RLIM_INFINITY else min(6 << 20, stack // 4)
    limit = max(limit, 32 * 4096)
    return limit - (len(argv) + len(env)) * 8


def test_the_api_runs_what_execve_accepts_and_refuses_one_byte_more(tmp_path):
    """Measured against the kernel itself: fill the limit to the byte with the host's true(1)."""
    argv = ["/bin/true", *["a" * 100_000] * 15]
    env = {"PATH": "/usr/bin:/bin", **{f"FILL{i}": "" for i in range(6)}}
    # Our own marks are in the job's environment too: SANDBOXED_RUN=1, SANDBOXED_RUN_MNT_NS, SANDBOXED_RUN_BIN,
    # and that directory at the end of PATH.
    marks = {"SANDBOXED_RUN": "1", "SANDBOXED_RUN_MNT_NS": str(os.stat("/proc/self/ns/mnt").st_ino),
             "SANDBOXED_RUN_BIN": os.path.dirname(sys.executable),
             "PATH": env["PATH"] + ":" + os.path.dirname(sys.executable)}
    used = sum(len(a) + 1 for a in argv) + len("/bin/true") + 1
    used += sum(len(k) + len(v) + 2 for k, v in {**env, **marks}.items())
    spare = arg_limit(argv, {**env, **marks}) - used
    for i in range(6):
        env[f"FILL{i}"] = "f" * min(spare, 100_000)
        spare -= len(env[f"FILL{i}"])
    assert spare == 0
    assert sandbox.run(argv, env=env).returncode == 0
    env["FILL0"] += "f"
    with pytest.raises(OSError) as caught:
        subprocess.run(argv, env={**env, **marks})  # the kernel refuses it too
    assert caught.value.errno == errno.E2BIG
    with pytest.raises(OSError) as caught:
        sandbox.run(argv, env=env)
    assert caught.value.errno == errno.E2BIG and "too long" in str(caught.value)


@pytest.mark.parametrize("argv", [["true", "a" * (MAX_STRING + 1)], ["true", *["a" * 100_000] * 70]])
def test_the_api_refuses_too_much_before_anything_starts(argv):
    before = spawner.current()
    descriptors = len(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError) as caught:
        sandbox.run(argv)
    assert caught.value.errno == errno.E2BIG
    assert spawner.current() is before, "a sandbox was started for a command that cannot run"
    assert len(os.listdir("/proc/self/fd")) == descriptors


def test_a_large_request_fails_alone_and_others_run_on(tmp_path, no_leftovers):
    """A call the kernel refuses must not touch the spawn server that other jobs depend on."""
    log = tmp_path / "hook"
    other = sandbox.Popen(["sh", "-c", "sleep 1; exit 7"], on_exit=[f"echo hook >> {log}"])
    with pytest.raises(OSError):
        sandbox.run(["true", "a" * (MAX_STRING + 1)])
    big = sandbox.run(COUNT + ["x" * 120_000, "y" * 120_000], capture_output=True, text=True)
    assert big.stdout == "2 120000 0\n"
    assert other.wait(timeout=30) == 7
    assert log.read_text() == "hook\n"
    assert not any(name == "stopping" for name, _ in other.events)


def test_a_signal_during_start_up_ends_it(tmp_path, no_leftovers):
    """The reaper is busy setting up (a new network namespace): SIGTERM to the command still ends the run."""
    with launched([CLI, "--net", "none", "--", "sleep", "30"], start_new_session=True) as launcher:
        assert wait_for(lambda: children(launcher.pid))
        launcher.send_signal(signal.SIGTERM)
        launcher.wait(timeout=30)
    assert launcher.returncode == -signal.SIGTERM
    assert wait_for(lambda: all_ended(no_leftovers, {os.getpid()}))

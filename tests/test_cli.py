"""Behaviour 10 and bad input: exit codes follow the shell; bad input gets one line and 2 or 125."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

import sandbox
from support import CLI


def run_cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=60, **kw)


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["true"], 0),
        (["sh", "-c", "exit 7"], 7),
        (["/etc/passwd"], 126),
        (["/"], 126),
        (["no-such-command-anywhere"], 127),
        (["./no-such-file"], 127),
    ],
)
def test_exit_status_follows_the_shell(args, code):
    result = run_cli(*args)
    assert result.returncode == code, result.stderr
    if code >= 126:
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("sandboxed-run: ")


def test_death_by_a_signal_is_reraised():
    result = run_cli("sh", "-c", "kill -USR1 $$")
    assert result.returncode == -signal.SIGUSR1
    result = run_cli("sh", "-c", "kill -QUIT $$")
    assert result.returncode == -signal.SIGQUIT


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        ([], 2, "COMMAND"),
        (["--tmpfs", "relative/dir", "true"], 2, "absolute"),
        (["--bind", "relative:/mnt", "true"], 2, "absolute"),
        (["--tmpfs", "/no/such/dir", "true"], 125, "does not exist"),
        (["--bind", "/no/such/src:/mnt", "true"], 125, "does not exist"),
        (["--bind", "/etc:/etc/hostname", "true"], 125, "cannot bind a directory over a file"),
        (["--ro-bind", "/etc/hostname:/mnt", "true"], 125, "cannot bind a file over a directory"),
        (["--stop-signal", "NOPE", "true"], 2, "unknown stop signal"),
        (["--grace", "-1", "true"], 2, "grace"),
        (["--grace", "soon", "true"], 2, "grace"),
        (["--timeout", "-3", "true"], 2, "timeout"),
        (["--propagation", "shared", "true"], 2, "propagation"),
        (["--setenv", "NOEQUALS", "true"], 2, "NAME=VALUE"),
        (["--no-such-option", "true"], 2, "no-such-option"),
        (["--", ""], 2, "command"),
    ],
)
def test_bad_input_gets_one_clear_line(args, code, words):
    result = run_cli(*args)
    assert result.returncode == code, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert words.lower() in result.stderr.lower(), result.stderr


def test_help_documents_every_option_and_the_exit_codes():
    result = run_cli("--help")
    assert result.returncode == 0
    for option in ("--grace", "--stop-signal", "--timeout", "--tmpfs", "--bind", "--ro-bind", "--propagation",
                   "--chdir", "--setenv", "--unsetenv", "--verbose"):
        assert option in result.stdout
    for code in ("124", "125", "126", "127"):
        assert code in result.stdout


def test_options_after_the_command_belong_to_the_command():
    result = run_cli("echo", "--grace", "x")
    assert result.returncode == 0 and result.stdout == "--grace x\n"


def test_setenv_unsetenv_and_chdir(tmp_path):
    result = run_cli("--setenv", "GREETING=hello=world", "--unsetenv", "HOME", "--chdir", str(tmp_path),
                     "sh", "-c", 'echo "$GREETING ${HOME-unset} $(pwd)"')
    assert result.stdout == f"hello=world unset {tmp_path}\n"


def test_clearenv_leaves_only_setenv_our_marks_and_a_path():
    result = run_cli("--clearenv", "--setenv", "GREETING=hi", "env", "-0")
    env = dict(pair.split("=", 1) for pair in result.stdout.split("\0")[:-1])
    ours = os.path.dirname(sys.executable)
    assert sorted(env) == ["GREETING", "PATH", "SANDBOXED_RUN", "SANDBOXED_RUN_BIN", "SANDBOXED_RUN_MNT_NS"], env
    assert (env["GREETING"], env["SANDBOXED_RUN_BIN"]) == ("hi", ours)
    assert env["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:" + ours
    found = run_cli("--clearenv", "sh", "-c", "command -v sandbox-mount-image").stdout
    assert found == f"{ours}/sandbox-mount-image\n"
    # The API's env={} is the same environment.
    api = sandbox.run(["env", "-0"], env={"GREETING": "hi"}, capture_output=True, text=True).stdout
    assert {k for k, _, _ in (p.partition("=") for p in api.split("\0")[:-1])} == set(env)
    # A PATH of --setenv's stays the job's, ours after it.
    result = run_cli("--clearenv", "--setenv", "PATH=/bin", "sh", "-c", 'echo "$PATH"')
    assert result.stdout == f"/bin:{ours}\n"


def test_verbose_reports_the_lifecycle():
    result = run_cli("-v", "--grace", "0", "sh", "-c", "sleep 100 & exit 4")
    assert result.returncode == 4
    lines = result.stderr.splitlines()
    assert lines[0].startswith("sandboxed-run: started job_pid=")
    assert any("stopping reason=main process exited" in line for line in lines), lines
    assert any(line.startswith("sandboxed-run: killed count=1") for line in lines), lines
    assert any("exited code=4" in line for line in lines)


def test_closed_standard_descriptors_stay_closed_for_the_job():
    # Our own descriptors (the signalfd, sockets) must not land on a closed 0, 1 or 2.
    script = "if [ -e /proc/self/fd/0 ]; then echo stdin-open; else echo stdin-closed; fi"
    result = subprocess.run(["sh", "-c", f'"$0" sh -c \'{script}\' <&-', CLI], capture_output=True, text=True)
    assert (result.returncode, result.stdout) == (0, "stdin-closed\n"), result.stderr
    result = subprocess.run(["sh", "-c", '"$0" sh -c "exit 3" >&- 2>&-', CLI], capture_output=True, text=True)
    assert result.returncode == 3 and result.stdout == "" and result.stderr == ""
    result = subprocess.run(["sh", "-c", '"$0" no-such-command-xyz 2>&-', CLI], capture_output=True, text=True)
    assert result.returncode == 127 and result.stdout == ""


@pytest.mark.parametrize("limit", [6, 10], ids=["in the command", "in the reaper"])
def test_too_few_open_files_allowed_is_one_line_naming_the_limit(limit, tmp_path, no_leftovers):
    """A caller's RLIMIT_NOFILE too low for our own descriptors: status 125 and one line naming the limit (it
    was a traceback, or OSError's repr), wherever it runs out; nothing started."""
    import resource

    def low() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    result = subprocess.run([CLI, "touch", str(tmp_path / "ran")], preexec_fn=low, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 125 and result.stderr.count("\n") == 1, result.stderr
    assert f"too many open files (the limit is {limit}: raise it" in result.stderr, result.stderr
    assert not (tmp_path / "ran").exists()


def test_hooks_run_or_say_why_not_whatever_the_open_files_allowed(tmp_path, no_leftovers):
    """Once the sandbox was begun (the job ran, or its reaper failed), the --on-exit hooks run, or one line
    says why they could not: the hook monitor, short of a descriptor for its signals, ended without a word."""
    import resource

    seen = set()
    for limit in range(6, 17):
        def low(limit: int = limit) -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

        result = subprocess.run([CLI, "--on-exit", "echo hook-ran", "--", "true"], preexec_fn=low,
                                capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        if "cannot start the sandbox" in result.stderr:
            continue  # our command ran out before it began anything: no hooks, as after a usage error
        seen.add("helper failed" in result.stderr)
        assert "hook-ran" in result.stdout or "hooks" in result.stderr, (limit, result.stderr)
    assert seen == {True, False}  # both a reaper that ran out and a sandbox that ran

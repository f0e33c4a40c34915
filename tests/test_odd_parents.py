"""Callers that leave unusual signal state behind (SIGCHLD ignored, as Erlang does; signals blocked):
every helper resets what it relies on, and the job still inherits the ignored signals (nohup)."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from support import CLI, PYTHON, all_ended, launched, log_lines, signal_job, wait_for

# Execs argv[1:] with SIGCHLD ignored and the usual signals blocked, as an odd parent might leave them.
ODD_PARENT = """
import os, signal, sys
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP,
                                          signal.SIGUSR1, signal.SIGRTMIN + 1})
os.execv(sys.argv[1], sys.argv[1:])
"""

API_CALLER = """
import signal, sys, sandbox
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
log = sys.argv[1]
result = sandbox.run(["sh", "-c", "sleep 0.2 & exit 3"], on_exit=[f"echo hook $SANDBOXED_RUN_EXIT_CODE >> {log}"])
print(result.returncode, [name for name, _ in result.events][-1])
sys.stdout.flush()
"""


def run_bounded(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    process = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, **kwargs)
    try:
        out, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"{argv[:4]} hung")
    return subprocess.CompletedProcess(argv, process.returncode, out, err)


@pytest.mark.parametrize("job", [["sh", "-c", "exit 3"], ["sh", "-c", "sleep 0.2 & exit 3"]])
def test_the_command_under_a_parent_that_ignores_sigchld(tmp_path, job, no_leftovers):
    log = tmp_path / "hook"
    result = run_bounded([PYTHON, "-c", ODD_PARENT, CLI, "--on-exit", f"echo hook >> {log}", "--", *job])
    assert (result.returncode, result.stderr) == (3, "")
    assert log_lines(log) == ["hook"]


def test_a_timeout_under_a_parent_that_ignores_sigchld(no_leftovers):
    result = run_bounded([PYTHON, "-c", ODD_PARENT, CLI, "--timeout", "0.5", "--", "sleep", "30"])
    assert result.returncode == 124


def test_the_api_in_a_program_that_ignores_sigchld(tmp_path, no_leftovers):
    log = tmp_path / "hook"
    result = run_bounded([PYTHON, "-c", API_CALLER, str(log)])
    assert (result.returncode, result.stdout, result.stderr) == (0, "3 finished\n", "")
    assert log_lines(log) == ["hook 3"]
    # Nothing of ours outlives the program: not the spawn server, not a reaper.
    assert wait_for(lambda: all_ended(no_leftovers, {os.getpid()}))


def test_signals_blocked_by_the_parent_still_reach_the_job_once(tmp_path, no_leftovers):
    argv, log = signal_job(tmp_path, cleanup=0.2)
    with launched([PYTHON, "-c", ODD_PARENT, CLI, *argv], cwd=tmp_path, start_new_session=True) as launcher:
        assert wait_for(lambda: log_lines(log))
        launcher.send_signal(signal.SIGUSR1)
        launcher.wait(timeout=30)
    assert log_lines(log)[1:] == ["SIGUSR1", "cleaned"]
    assert launcher.returncode == -signal.SIGUSR1


def ignored_signals(text: str) -> set[int]:
    mask = int(next(line for line in text.splitlines() if line.startswith("SigIgn:")).split()[1], 16)
    return {sig for sig in range(1, 65) if mask & (1 << (sig - 1))}


@pytest.mark.parametrize("entry", ["cli", "api"])
def test_the_job_inherits_the_callers_ignored_signals_like_nohup(entry):
    read = ["cat", "/proc/self/status"]
    if entry == "cli":
        argv = ["nohup", CLI, "--", *read]
    else:
        program = f"import signal, sandbox; signal.signal(signal.SIGHUP, signal.SIG_IGN); sandbox.run({read!r})"
        argv = [PYTHON, "-c", program]
    result = run_bounded(argv, stdin=subprocess.DEVNULL)
    ignored = ignored_signals(result.stdout)
    assert signal.SIGHUP in ignored
    # What our helpers reset for themselves is not the job's business: SIGCHLD stays default.
    assert signal.SIGCHLD not in ignored

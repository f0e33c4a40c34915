"""Behaviour 2: signals sent to the launcher alone reach the job's main process exactly once;
a repeated Ctrl+C reaches the job as under bash; a third within 5 seconds SIGKILLs the sandbox."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from sandboxed_run_helpers.reaper.stopping import IMPATIENT_WINDOW
from support import (
    CLI,
    PYTHON,
    Terminal,
    all_ended,
    launched,
    log_lines,
    signal_job,
    signal_of,
    stays,
    wait_for,
)

SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2"]


@pytest.mark.parametrize("name", SIGNALS)
def test_signal_sent_to_the_cli_alone_reaches_the_job_once(tmp_path, name):
    sig = getattr(signal, name)
    argv, log = signal_job(tmp_path, cleanup=0.3)
    with launched([CLI, *argv], cwd=tmp_path, start_new_session=True) as launcher:
        assert wait_for(lambda: log_lines(log))
        os.kill(launcher.pid, sig)
        launcher.wait(timeout=30)
    assert log_lines(log)[1:] == [name, "cleaned"]
    # The job died of the signal, so the launcher re-raised it on itself.
    assert launcher.returncode == -sig


def test_signal_sent_to_an_api_caller_reaches_the_job_once(tmp_path):
    argv, log = signal_job(tmp_path, cleanup=0.3)
    program = f"import sandbox; sandbox.run({argv!r})"
    with launched([PYTHON, "-c", program], cwd=tmp_path, start_new_session=True, stderr=subprocess.DEVNULL) as caller:
        assert wait_for(lambda: log_lines(log))
        os.kill(caller.pid, signal.SIGINT)  # Python turns it into KeyboardInterrupt; no terminal sent it
        caller.wait(timeout=30)
    assert log_lines(log)[1:] == ["SIGINT", "cleaned"]
    assert caller.returncode == -signal.SIGINT


def test_repeated_ctrl_c_reaches_the_job_each_time_and_the_third_kills_everything(tmp_path, no_leftovers):
    argv, log = signal_job(tmp_path, mode="ignore")
    term = Terminal([CLI, *argv], tmp_path)
    try:
        assert wait_for(lambda: log_lines(log))
        for _ in range(3):  # a loaded machine may stretch three presses past the window: then press three again
            before = log_lines(log).count("SIGINT")
            first = time.monotonic()
            for presses in (1, 2):
                term.ctrl_c()
                assert wait_for(lambda n=before + presses: log_lines(log).count("SIGINT") == n)
            assert stays(lambda: term.poll() is None, 0.3), "two presses must not end a job that handles SIGINT"
            term.ctrl_c()
            status = term.wait(timeout=10)
            if status is not None:
                break
            assert time.monotonic() - first > IMPATIENT_WINDOW - 0.5, "three presses within the window killed nothing"
    finally:
        term.close()
    # The third press SIGKILLs at once: the job may or may not have noted that SIGINT first.
    assert log_lines(log).count("SIGINT") - before in (2, 3)
    assert status is not None and signal_of(status) == signal.SIGKILL
    assert wait_for(lambda: all_ended(no_leftovers, {os.getpid()}), timeout=5)

"""Behaviour 1: Ctrl+C typed at a terminal acts as under bash: the job sees SIGINT once, its cleanup
runs to the end, and only then does the launcher return (dying of SIGINT if the job did)."""

from __future__ import annotations

import os
import signal

import pytest

from support import (
    CLI,
    PYTHON,
    Terminal,
    ctrl_c_on_a_signal_job,
    ctrl_c_on_the_seed,
    log_lines,
    signal_job,
    signal_of,
    wait_for,
)


def test_cli_ctrl_c_lets_the_seed_trap_finish_then_dies_of_sigint(tmp_path, no_leftovers):
    status, output, left_at_exit = ctrl_c_on_the_seed([CLI, "./trap_script"], tmp_path, no_leftovers)
    assert left_at_exit == [], "the launcher returned before the job's EXIT trap finished"
    assert status is not None and signal_of(status) == signal.SIGINT, f"status {status}, output {output!r}"
    assert b"Aborted" not in output


def test_cli_job_sees_sigint_exactly_once(tmp_path):
    argv, log = signal_job(tmp_path, cleanup=0.5)
    status, lines_at_exit, _ = ctrl_c_on_a_signal_job([CLI, *argv], tmp_path, log)
    assert lines_at_exit[1:] == ["SIGINT", "cleaned"]
    assert signal_of(status) == signal.SIGINT


def test_cli_exits_with_the_status_of_a_job_that_handles_sigint(tmp_path):
    argv, log = signal_job(tmp_path, cleanup=0.2, mode="exit0")
    term = Terminal([CLI, *argv], tmp_path)
    try:
        assert wait_for(lambda: log_lines(log))
        term.ctrl_c()
        status = term.wait()
    finally:
        term.close()
    assert log_lines(log)[1:] == ["SIGINT", "cleaned"]
    assert status is not None and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


API_PROGRAM = """
import os, sandbox
try:
    sandbox.run(["./trap_script"])
except KeyboardInterrupt:
    left = [n for n in "abc" if os.path.exists(n)]
    print("KeyboardInterrupt after the job ended; left:", left or "nothing", flush=True)
    raise
"""


def test_api_ctrl_c_raises_keyboardinterrupt_after_the_trap_finished(tmp_path, no_leftovers):
    status, output, _ = ctrl_c_on_the_seed([PYTHON, "-c", API_PROGRAM], tmp_path, no_leftovers)
    assert b"KeyboardInterrupt after the job ended; left: nothing" in output, output
    assert signal_of(status) == signal.SIGINT


def test_api_job_sees_sigint_exactly_once(tmp_path):
    argv, log = signal_job(tmp_path, cleanup=0.5)
    program = f"import sandbox; sandbox.run({argv!r})"
    status, lines_at_exit, output = ctrl_c_on_a_signal_job([PYTHON, "-c", program], tmp_path, log)
    assert lines_at_exit[1:] == ["SIGINT", "cleaned"], output
    assert signal_of(status) == signal.SIGINT


NEW_GROUP_PROGRAM = """
import sys, sandbox
try:
    sandbox.run(sys.argv[2:], **{sys.argv[1]: True if sys.argv[1] == "start_new_session" else 0})
except KeyboardInterrupt:
    raise SystemExit(130)
"""


@pytest.mark.parametrize("keyword", ["start_new_session", "process_group"])
def test_api_ctrl_c_reaches_a_job_in_a_session_or_group_of_its_own_once(keyword, tmp_path, no_leftovers):
    """A job that left the terminal's process group does not get the terminal's SIGINT itself: the caller's
    Ctrl+C reaches it through us, once, and its cleanup runs to the end."""
    argv, log = signal_job(tmp_path, cleanup=0.5)
    status, lines_at_exit, output = ctrl_c_on_a_signal_job([PYTHON, "-c", NEW_GROUP_PROGRAM, keyword, *argv],
                                                           tmp_path, log)
    assert lines_at_exit[1:] == ["SIGINT", "cleaned"], output
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 130, output

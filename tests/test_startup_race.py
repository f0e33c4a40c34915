"""Behaviour 5: the caller SIGKILLed at any moment of start-up leaves nothing behind
(bubblewrap leaks in 40% of such tries). The helpers arm PDEATHSIG, then check their parent."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import pytest

from support import CLI, PYTHON, all_ended, marked_processes, wait_for

TRIES = 40


@pytest.mark.parametrize("launcher", ["cli", "api"])
def test_caller_killed_during_start_up_leaves_no_process(tmp_path, no_leftovers, launcher):
    rng = random.Random(f"start-up race {launcher}")
    if launcher == "cli":
        argv = [CLI, "sleep", "300"]
    else:
        argv = [PYTHON, "-c", "import sandbox; sandbox.run(['sleep', '300'])"]
    delays = sorted(rng.uniform(0, 0.12) for _ in range(TRIES))
    for delay in delays:
        caller = subprocess.Popen(argv, cwd=tmp_path, start_new_session=True)
        time.sleep(delay)
        caller.kill()
        caller.wait()
    me = {os.getpid()}
    assert wait_for(lambda: all_ended(no_leftovers, me), timeout=30), (
        f"left after {TRIES} killed start-ups: {marked_processes(no_leftovers, me)}")



def test_ctrl_c_while_the_command_sets_itself_up_ends_it_by_sigint_without_a_traceback(tmp_path, no_leftovers):
    """A SIGINT that comes while main() still imports and sets up (before its signals are watched) ends the
    command as it ends any program that has started nothing: by SIGINT, without a Python traceback. Here the
    SIGINT waits, blocked, from before main() until main() resets the signal mask."""
    starter = ("import os, signal, sys\nfrom sandbox.cli import main\n"
               "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})\nos.kill(os.getpid(), signal.SIGINT)\n"
               f"sys.argv = ['sandboxed-run', 'touch', {str(tmp_path / 'ran')!r}]\nmain()\n")
    result = subprocess.run([PYTHON, "-c", starter], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr) == (-signal.SIGINT, "")
    assert not (tmp_path / "ran").exists()

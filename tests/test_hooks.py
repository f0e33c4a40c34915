"""--on-exit / on_exit=: hooks run outside the sandbox, in order, once its last process is gone (the
image's loop device is already detached when they run), whatever ended the job; a failing hook is
reported and never changes the status."""

from __future__ import annotations

import subprocess

import pytest

import sandbox
from support import CLI, Ending, log_lines

EXPECTED = {
    "exit": "loops=0 code=0 signal= status=0 reason=",
    "ctrl-c": "loops=0 code= signal=SIGINT status=130 reason=",
    "timeout": "loops=0 code= signal=SIGTERM status=124 reason=timeout",
    # The spawn server outlives the caller and runs its hooks; the job's status went to the dead caller.
    "api-caller-sigkill": "loops=0 code= signal= status= reason=caller died",
    # sandboxed-run's hook monitor outlives it (and the reaper): it knows only that the launcher died.
    "launcher-sigkill": "loops=0 code= signal= status= reason=caller died",
    "all-sigkill": "loops=0 code= signal= status= reason=caller died",
}


@pytest.mark.root("a loop device")
@pytest.mark.kills_reapers
@pytest.mark.parametrize("how", sorted(EXPECTED))
def test_hooks_run_after_the_sandbox_is_gone(tmp_path, how, no_leftovers):
    ending = Ending(tmp_path, how)
    assert ending.hook_lines() == [EXPECTED[how]]
    assert ending.loop_gone()


def test_hooks_run_in_order_and_a_failing_one_changes_nothing(tmp_path):
    log = tmp_path / "order.log"
    result = subprocess.run([CLI, "--on-exit", f"echo one >> {log}; exit 3", "--on-exit", f"echo two >> {log}",
                             "--", "sh", "-c", "exit 5"], capture_output=True, text=True)
    assert result.returncode == 5
    assert log_lines(log) == ["one", "two"]
    assert "sandboxed-run: on-exit hook failed (exit status 3)" in result.stderr


def test_hooks_run_when_the_command_is_not_found(tmp_path):
    log = tmp_path / "hook.log"
    result = subprocess.run([CLI, "--on-exit", f"echo $SANDBOXED_RUN_STATUS > {log}", "no-such-command-xyz"],
                            capture_output=True, text=True)
    assert result.returncode == 127
    assert log_lines(log) == ["127"]


def test_api_on_exit_runs_hooks_in_the_caller_and_reports_them(tmp_path):
    log = tmp_path / "hook.log"
    seen = []
    result = sandbox.run(["sh", "-c", "exit 4"], on_exit=[f"echo $SANDBOXED_RUN_EXIT_CODE > {log}", "exit 9"],
                         on_event=lambda name, fields: seen.append(name), stderr=subprocess.DEVNULL)
    assert result.returncode == 4
    assert log_lines(log) == ["4"]
    hooks = [fields for name, fields in result.events if name == "hook"]
    assert [(h["code"], h["signal"]) for h in hooks] == [(0, None), (9, None)]
    assert seen[-3:] == ["hook", "hook", "finished"] and result.events[-1][0] == "finished"


@pytest.mark.parametrize("bad", ["", "   ", "exit", ["ok", 3]])
def test_api_refuses_bad_hooks(bad):
    with pytest.raises(ValueError):
        sandbox.run(["true"], on_exit=bad)


@pytest.mark.parametrize("bad", ["", "   "])
def test_the_command_refuses_an_empty_hook_as_the_api_does(bad, tmp_path):
    """--on-exit went unchecked: an empty hook ran as `sh -c ''` and was reported as a hook that succeeded."""
    result = subprocess.run([CLI, "--on-exit", bad, "touch", str(tmp_path / "ran")], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "--on-exit: an on-exit hook must be a non-empty shell command" in result.stderr, result.stderr
    assert not (tmp_path / "ran").exists()

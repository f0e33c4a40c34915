"""One signal sent to a whole process group (kill -SIG -PGID, coreutils timeout, a service manager
stopping a unit) reaches the job once, as it would under bash, and its cleanup runs to its end."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import pytest

from support import (
    CLI,
    PYTHON,
    all_ended,
    children,
    kill_and_expect_a_graceful_stop,
    launched,
    log_lines,
    signal_job,
    stays,
    wait_for,
)

GROUP_SIGNALS = ["SIGTERM", "SIGINT", "SIGHUP"]


def start(entry: str, argv: list[str], tmp_path) -> subprocess.Popen:
    """A launcher (the command, or a Python program using sandbox.run) leading a process group of its own."""
    if entry == "cli":
        command = [CLI, "--grace", "10", *argv]
    else:
        command = [PYTHON, "-c", f"import sandbox; sandbox.run({argv!r}, grace=10)"]
    return subprocess.Popen(command, cwd=tmp_path, start_new_session=True, stderr=subprocess.DEVNULL)


@pytest.mark.parametrize("entry", ["cli", "api"])
@pytest.mark.parametrize("name", GROUP_SIGNALS)
def test_a_signal_to_the_whole_group_reaches_the_job_once(tmp_path, entry, name, no_leftovers):
    sig = getattr(signal, name)
    argv, log = signal_job(tmp_path, cleanup=1.0)
    launcher = start(entry, argv, tmp_path)
    try:
        assert wait_for(lambda: log_lines(log))
        os.killpg(launcher.pid, sig)
        # The job's cleanup (1 s) must run to its end, with nothing on top of the one signal.
        assert wait_for(lambda: "cleaned" in log_lines(log), timeout=20)
        launcher.wait(timeout=30)
        assert wait_for(lambda: all_ended(no_leftovers, {os.getpid()}))
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert log_lines(log)[1:] == [name, "cleaned"]
    # The command waited and died of the job's signal; a Python caller died of it too (at once for
    # SIGTERM and SIGHUP, whose default ends it; after the job for SIGINT, as KeyboardInterrupt).
    assert launcher.returncode == -sig


TRAP_JOB = """#!/usr/bin/env bash
trap 'trap - TERM; sleep 1; echo ended >> "$1"; exit 143' TERM
echo ready >> "$1"
sleep 300 & wait
"""


def test_coreutils_timeout_lets_the_trap_finish(tmp_path, no_leftovers):
    """timeout(1) signals its child, then its whole group: under bash alone the trap finishes."""
    job = tmp_path / "job.sh"
    job.write_text(TRAP_JOB)
    job.chmod(0o755)
    log = tmp_path / "log"
    for attempt in range(3):
        log.write_text("")
        result = subprocess.run(["timeout", "-s", "TERM", "2", CLI, "--", str(job), str(log)], cwd=tmp_path,
                                timeout=60)
        assert result.returncode == 124, attempt
        assert log_lines(log) == ["ready", "ended"], attempt
        assert wait_for(lambda: all_ended(no_leftovers, {os.getpid()}))


@pytest.mark.parametrize("to", ["launcher", "group"])
def test_a_signal_while_a_hook_runs_reaches_the_hook_once(tmp_path, to, no_leftovers):
    """The launcher waits for its hooks without going deaf: what it gets, the running hook gets, once."""
    argv, log = signal_job(tmp_path, cleanup=0.5)
    # exec: a signal sent to the launcher alone goes to the hook's process, as `kill` would send it to a
    # shell; the shell would not pass it on to its child.
    hook = "exec " + " ".join(f"'{a}'" for a in argv)
    with launched([CLI, "--on-exit", hook, "--", "true"],
                  cwd=tmp_path, start_new_session=True, stderr=subprocess.PIPE, text=True) as launcher:
        assert wait_for(lambda: log_lines(log))
        if to == "group":
            os.killpg(launcher.pid, signal.SIGTERM)
        else:
            launcher.send_signal(signal.SIGTERM)
        _, err = launcher.communicate(timeout=30)
    assert log_lines(log)[1:] == ["SIGTERM", "cleaned"]
    assert "on-exit hook failed (killed by SIGTERM)" in err
    assert launcher.returncode == 0  # the job's status: a hook never changes it


def test_a_signal_to_the_reaper_alone_means_nothing_for_the_job(tmp_path, no_leftovers):
    """Only a signal the launcher relays too was sent to the whole group: a stray one sent to our reaper alone
    (a pkill -f, say) neither counts as reaching the job nor spares it the stop signal later."""
    argv, log = signal_job(tmp_path, cleanup=1.0)
    launcher = subprocess.Popen([CLI, "--grace", "5", *argv], cwd=tmp_path, start_new_session=True)
    assert wait_for(lambda: log_lines(log))
    reaper = children(launcher.pid)[0]
    for _ in range(3):
        os.kill(reaper, signal.SIGINT)  # three "presses" that never reached the job: no kill
    os.kill(reaper, signal.SIGTERM)
    assert stays(lambda: log_lines(log)[1:] == [] and launcher.poll() is None, 0.3)
    kill_and_expect_a_graceful_stop(launcher, log, no_leftovers)


def test_pkill_with_the_launchers_command_line_hits_the_launcher_alone(tmp_path, no_leftovers):
    argv, log = signal_job(tmp_path, cleanup=0.2)
    with launched([CLI, "--grace", "7", *argv], cwd=tmp_path, start_new_session=True) as launcher:
        assert wait_for(lambda: log_lines(log))
        subprocess.run(["pkill", "-TERM", "-f", f"{CLI} --grace 7"], check=True)
        launcher.wait(timeout=30)
    assert log_lines(log)[1:] == ["SIGTERM", "cleaned"]


def test_a_group_signal_then_one_to_the_launcher_alone_are_two(tmp_path, no_leftovers):
    argv, log = signal_job(tmp_path, mode="ignore")
    launcher = subprocess.Popen([CLI, "--grace", "1", *argv], cwd=tmp_path, start_new_session=True)
    try:
        assert wait_for(lambda: log_lines(log))
        os.killpg(launcher.pid, signal.SIGUSR1)
        time.sleep(0.4)
        launcher.send_signal(signal.SIGUSR1)
        assert wait_for(lambda: log_lines(log).count("SIGUSR1") == 2)
        assert stays(lambda: log_lines(log).count("SIGUSR1") == 2, 0.5)
    finally:
        launcher.kill()
        launcher.wait()


def test_ctrl_c_to_the_group_during_start_up_is_never_lost(tmp_path, no_leftovers):
    """A group's SIGINT at any moment of the start-up (from the reaper's fork to the job's first steps): the job
    gets it once it runs, and the launcher dies of SIGINT, never hangs, never fails (125). (Before the
    launcher's own code runs, a SIGINT is the interpreter's business.)"""
    rng = random.Random(5)
    for attempt in range(20):
        # sleep dies of SIGINT at any moment of its life, even before its exec.
        launcher = subprocess.Popen([CLI, "--grace", "5", "--", "sleep", "30"], cwd=tmp_path,
                                    start_new_session=True, stderr=subprocess.PIPE)
        assert wait_for(lambda launcher=launcher: children(launcher.pid), interval=0.001)
        time.sleep(rng.uniform(0.0, 0.06))
        os.killpg(launcher.pid, signal.SIGINT)
        try:
            launcher.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
            pytest.fail(f"attempt {attempt}: the job never got the SIGINT")
        assert launcher.returncode == -signal.SIGINT, (attempt, launcher.stderr.read())
        launcher.stderr.close()
        assert wait_for(lambda: all_ended(no_leftovers, {os.getpid()}))

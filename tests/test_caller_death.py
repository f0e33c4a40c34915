"""Behaviours 3 and 4: when the caller dies the job gets its stop signal and grace period; when
everything of ours is SIGKILLed the kernel still ends the job and drops its mounts."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from support import (
    CLI,
    PYTHON,
    Terminal,
    alive,
    all_ended,
    children,
    kill_and_expect_a_graceful_stop,
    log_lines,
    loop_devices,
    marked_processes,
    signal_job,
    stays,
    wait_for,
)


def test_cli_sigkilled_the_job_gets_the_stop_signal_and_its_grace_period(tmp_path, no_leftovers):
    argv, log = signal_job(tmp_path, cleanup=1.0)
    launcher = subprocess.Popen([CLI, "--grace", "5", *argv], cwd=tmp_path, start_new_session=True)
    assert wait_for(lambda: log_lines(log))
    kill_and_expect_a_graceful_stop(launcher, log, no_leftovers)


def test_api_caller_sigkilled_the_job_gets_the_stop_signal_and_its_grace_period(tmp_path, no_leftovers):
    argv, log = signal_job(tmp_path, cleanup=1.0)
    program = f"import sandbox; sandbox.run({argv!r}, grace=5)"
    caller = subprocess.Popen([PYTHON, "-c", program], cwd=tmp_path, start_new_session=True)
    assert wait_for(lambda: log_lines(log))
    kill_and_expect_a_graceful_stop(caller, log, no_leftovers)


def test_a_job_that_ignores_the_stop_signal_is_killed_after_the_grace_period(tmp_path, no_leftovers):
    argv, log = signal_job(tmp_path, mode="ignore")
    launcher = subprocess.Popen([CLI, "--grace", "1", *argv], cwd=tmp_path, start_new_session=True)
    assert wait_for(lambda: log_lines(log))
    launcher.kill()
    launcher.wait()
    assert wait_for(lambda: "SIGTERM" in log_lines(log))
    assert stays(lambda: marked_processes(no_leftovers, {os.getpid()}), 0.3), "the grace period was skipped"
    assert wait_for(lambda: all_ended(no_leftovers, {os.getpid()}), timeout=10)


SUBPROCESS_CALLER = """
import subprocess, sys
subprocess.run([sys.argv[1], "--grace", "5", *sys.argv[2:]])
"""


def test_ctrl_c_then_caller_sigkilled_gives_no_stop_signal_on_top(tmp_path, no_leftovers):
    """The problem statement: subprocess.run SIGKILLs sandboxed-run 0.25 s after Ctrl+C, mid-cleanup."""
    argv, log = signal_job(tmp_path, cleanup=1.5)
    # A session leader that outlives the launcher, as an interactive shell does (its death would hang up the job).
    wrapper = ["bash", "-c", 'trap : INT; "$@"; sleep 30', "bash", PYTHON, "-c", SUBPROCESS_CALLER, CLI, *argv]
    term = Terminal(wrapper, tmp_path)
    try:
        assert wait_for(lambda: log_lines(log))
        term.ctrl_c()
        assert wait_for(lambda: "cleaned" in log_lines(log))
        assert wait_for(lambda: len(marked_processes(no_leftovers, {os.getpid()})) <= 2)  # bash and its sleep
    finally:
        term.close()
    assert log_lines(log)[1:] == ["SIGINT", "cleaned"], "the job got a stop signal on top of its Ctrl+C"


MOUNTING_JOB = """
set -e
mkdir -p /mnt/sbx-image
mount -t tmpfs scratch /mnt
mkdir /mnt/image
mount -o loop "$1" /mnt/image
echo mounted > "$2"
sleep 1000
"""


@pytest.mark.root("a loop device")
@pytest.mark.kills_reapers
def test_everything_of_ours_sigkilled_the_kernel_ends_the_job_and_releases_its_loop_device(tmp_path, no_leftovers):
    image = tmp_path / "image.ext4"
    subprocess.run(["truncate", "-s", "8M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", str(image)], check=True)
    flag = tmp_path / "mounted"
    launcher = subprocess.Popen([CLI, "bash", "-c", MOUNTING_JOB, "job", str(image), str(flag)],
                                cwd=tmp_path, start_new_session=True)
    try:
        assert wait_for(flag.exists)
        assert str(image) in loop_devices()
        reaper = children(launcher.pid)[0]
        job = children(reaper)
        # Every process of ours at once: no grace is possible, the kernel must do the rest.
        os.kill(reaper, signal.SIGKILL)
        os.kill(launcher.pid, signal.SIGKILL)
    finally:
        launcher.kill()
        launcher.wait()
    assert job and wait_for(lambda: not any(alive(p) for p in job))
    assert wait_for(lambda: all_ended(no_leftovers, {os.getpid()}))
    assert wait_for(lambda: str(image) not in loop_devices()), "the loop device outlived the sandbox"
    time.sleep(0.1)


"""sandbox.Job: several commands and Python calls in one mount and PID namespace, torn down as a whole."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time

import pytest

import sandbox
from support import (
    CLI,
    PYTHON,
    alive,
    host_mounts,
    kill_and_expect_a_graceful_stop,
    log_lines,
    marked_processes,
    signal_job,
    this_process,
    wait_for,
)


def double(x: int) -> tuple[int, int]:
    return os.getpid(), 2 * x


def fail(message: str) -> None:
    raise KeyError(message)


def test_commands_of_one_job_share_a_tmpfs_the_host_never_sees(tmp_path):
    before = host_mounts()
    with sandbox.Job(tmpfs=[str(tmp_path)]) as job:
        job.run(["sh", "-c", f"echo inside > {tmp_path}/made-by-first && mkdir {tmp_path}/m"], check=True)
        job.run(["mount", "-t", "tmpfs", "second", f"{tmp_path}/m"], check=True)
        seen = job.run(["sh", "-c", f"cat {tmp_path}/made-by-first; grep -c ' {tmp_path}/m ' /proc/self/mountinfo"],
                       capture_output=True, text=True).stdout
        assert not (tmp_path / "made-by-first").exists()
        assert host_mounts() == before
    assert seen == "inside\n1\n"
    assert host_mounts() == before


def test_call_returns_a_value_and_reraises_with_the_remote_traceback():
    with sandbox.Job() as job:
        pid, value = job.call(double, 21)
        assert value == 42 and pid >= 2  # a fresh process inside the job's PID namespace, never its PID 1
        with pytest.raises(KeyError) as caught:
            job.call(fail, "from inside")
    assert isinstance(caught.value.__cause__, sandbox.RemoteTraceback)
    assert "from inside" in str(caught.value.__cause__) and "fail" in str(caught.value.__cause__)


def test_leaving_the_block_stops_live_daemons(tmp_path, no_leftovers):
    argv, log = signal_job(tmp_path, cleanup=0.3)
    with sandbox.Job(grace=5) as job:
        job.run(["sh", "-c", "setsid sleep 1000 & (sleep 1000 &) ; true"])
        process = job.Popen(argv)
        assert wait_for(lambda: log_lines(log))
        reaper = job.pid
        assert len([p for p in marked_processes(no_leftovers, this_process())]) >= 4
    assert log_lines(log)[1:] == ["SIGTERM", "cleaned"]
    assert process.returncode == -signal.SIGTERM
    assert not alive(reaper)  # exited (its parent, the spawn server, may not have reaped it yet)
    assert not marked_processes(no_leftovers, this_process())


def test_a_job_command_can_be_stopped_alone_while_the_job_runs_on():
    with sandbox.Job() as job:
        first = job.Popen(["sleep", "100"])
        second = job.Popen(["sleep", "100"])
        assert first.stop(grace=1) == -signal.SIGTERM
        assert second.poll() is None
        assert job.run(["true"]).returncode == 0
    assert second.returncode == -signal.SIGTERM


def test_job_pid_and_namespace_path():
    with sandbox.Job() as job:
        assert os.readlink(job.namespace_path("mnt")) != os.readlink("/proc/self/ns/mnt")
        assert os.readlink(job.namespace_path("pid")) != os.readlink("/proc/self/ns/pid")
        inside = job.run(["cat", "/proc/1/comm"], capture_output=True, text=True).stdout
        assert inside == "sandbox-reaper\n"
        assert open(f"/proc/{job.pid}/comm").read() == "sandbox-reaper\n"
        with pytest.raises(ValueError):
            job.namespace_path("nope")


JOB_CALLER = """
import sys, sandbox
job = sandbox.Job(grace=5).start()
job.Popen(sys.argv[1:])
print("started", flush=True)
sys.stdin.read()
"""


def test_caller_sigkilled_with_a_job_open_gives_the_grace_period(tmp_path, no_leftovers):
    argv, log = signal_job(tmp_path, cleanup=1.0)
    caller = subprocess.Popen([PYTHON, "-c", JOB_CALLER, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              start_new_session=True)
    try:
        assert caller.stdout.readline() == b"started\n"
        assert wait_for(lambda: log_lines(log))
        kill_and_expect_a_graceful_stop(caller, log, no_leftovers)
    finally:
        caller.kill()
        caller.wait()
        caller.stdin.close()
        caller.stdout.close()


def test_bad_job_arguments_raise_before_anything_starts():
    from sandbox.api import spawner

    before = spawner.current()
    for kwargs in ({"grace": -1}, {"tmpfs": ["relative"]}, {"propagation": "up"}, {"stop_signal": "NOPE"}):
        with pytest.raises(ValueError):
            sandbox.Job(**kwargs)
    with pytest.raises(sandbox.SandboxError):
        sandbox.Job(tmpfs=["/no/such/dir"])
    with sandbox.Job() as job:
        with pytest.raises(TypeError):
            job.Popen(["true"], tmpfs=["/mnt"])
        with pytest.raises(FileNotFoundError):
            job.run(["no-such-program-xyz"])
        assert job.run(["true"]).returncode == 0, "a failed command must not end the job"
    assert spawner.current() is not None or before is None


@pytest.mark.sandbox_job(tmpfs=["/mnt"])
def test_the_sandbox_job_fixture(sandbox_job):
    sandbox_job.run(["mount", "-t", "tmpfs", "fixture", "/mnt"], check=True)
    sandbox_job.run(["sh", "-c", "setsid sleep 1000 &"], check=True)
    assert sandbox_job.run(["mountpoint", "-q", "/mnt"]).returncode == 0
    assert subprocess.run(["mountpoint", "-q", "/mnt"]).returncode != 0


pytest_plugins = ["pytester"]


def test_the_fixture_fails_a_test_whose_sandbox_outlives_it(pytester):
    pytester.makepyfile("""
        import os
        kept = []
        def test_holds_the_namespace(sandbox_job):
            kept.append(os.open(sandbox_job.namespace_path("mnt"), os.O_RDONLY))
        def test_clean(sandbox_job):
            sandbox_job.run(["true"], check=True)
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*outlived it*holds it open*"])


def test_job_isolation_options_and_on_exit_hooks(tmp_path):
    hook_log = tmp_path / "hooks"
    with sandbox.Job(net="none", hostname="job-host", read_only=["/"], tmpfs=[str(tmp_path)],
                     on_exit=[f"echo \"stopped: $SANDBOXED_RUN_STOP_REASON\" >> {hook_log}"]) as job:
        seen = job.run(["sh", "-c", "hostname; awk -F: 'NR > 2 {print $1}' /proc/net/dev | tr -d ' '; "
                        "touch /etc/nope 2>/dev/null || echo read-only"],
                       cwd="/", capture_output=True, text=True).stdout.split()
        assert not hook_log.exists(), "a hook ran before the job ended"
    assert seen == ["job-host", "lo", "read-only"]
    assert hook_log.read_text() == "stopped: context exited\n"


async def _async_job_until(how: str, **options) -> sandbox.AsyncJob:
    async with sandbox.AsyncJob(**options) as job:
        if how == "stop":
            await job.stop()
        elif how == "--stop":
            stopper = await asyncio.create_subprocess_exec(CLI, "--stop", job.name)
            assert await stopper.wait() == 0
            await job.stop()  # only waits: it is over
    return job


@pytest.mark.parametrize("how", ["block", "stop", "--stop"])
@pytest.mark.parametrize("entry", ["Job", "AsyncJob"])
def test_a_job_that_ran_no_command_ends_at_once(entry, how, no_leftovers):
    """Nothing is left to get the stop signal, so nothing is waited for: not the grace period, which no
    SIGCHLD would cut short."""
    started = time.monotonic()
    if entry == "Job":
        with sandbox.Job(grace=60) as job:
            if how == "stop":
                job.stop()
            elif how == "--stop":
                assert subprocess.run([CLI, "--stop", job.name], timeout=60).returncode == 0
    else:
        job = asyncio.run(_async_job_until(how, grace=60))
    assert time.monotonic() - started < 30  # generous: the bug waited the whole 60 s
    assert job.usage is not None and job.usage.wall < 30


@pytest.mark.parametrize("use", ["run", "Popen", "call"])
@pytest.mark.parametrize("entry", ["Job", "AsyncJob"])
def test_a_job_used_after_its_end_says_so(entry, use):
    """Not an OSError(EBADF) from its closed socket, which reads as a bad descriptor of the caller's; and
    nothing of the attempt stays open."""
    async def async_main() -> None:
        async with sandbox.AsyncJob() as job:
            await job.run(["true"])
        before = sorted(os.listdir("/proc/self/fd"))
        with pytest.raises(RuntimeError, match="the Job has ended"):
            await {"run": lambda: job.run(["true"]), "Popen": lambda: job.create_process(["true"]),
                   "call": lambda: job.call(os.getpid)}[use]()
        assert sorted(os.listdir("/proc/self/fd")) == before  # job.call's socket to the call is closed too

    if entry == "AsyncJob":
        asyncio.run(async_main())
        return
    with sandbox.Job() as job:
        job.run(["true"])
    before = sorted(os.listdir("/proc/self/fd"))
    with pytest.raises(RuntimeError, match="the Job has ended"):
        {"run": lambda: job.run(["true"]), "Popen": lambda: job.Popen(["true"]),
         "call": lambda: job.call(os.getpid)}[use]()
    assert sorted(os.listdir("/proc/self/fd")) == before


# A command whose directory is missing, and one that is not found.
CANNOT_START = [(["true"], {"cwd": "/nonexistent-directory"}), (["no-such-command-here"], {})] * 5
PIPES = {"stdin": sandbox.PIPE, "stdout": sandbox.PIPE, "stderr": sandbox.PIPE}


@pytest.mark.parametrize("entry", ["Job", "AsyncJob"])
def test_commands_that_cannot_start_leave_no_descriptor_in_the_reaper(entry, no_leftovers):
    """Each fails alone; its reaper kept the three descriptors it was given for it (the caller's pipes, held
    open) for every such call, until a long-lived Job ran out of descriptors."""
    def reaper_fds(job) -> int:
        return len(os.listdir(f"/proc/{job.pid}/fd"))

    if entry == "Job":
        with sandbox.Job() as job:
            job.run(["true"])
            before = reaper_fds(job)
            for argv, options in CANNOT_START:
                with pytest.raises(sandbox.SandboxError):
                    job.run(argv, **PIPES, **options)
            after = reaper_fds(job)
    else:
        async def main() -> tuple[int, int]:
            async with sandbox.AsyncJob() as job:
                await job.run(["true"])
                before = reaper_fds(job)
                for argv, options in CANNOT_START:
                    with pytest.raises(sandbox.SandboxError):
                        await job.run(argv, **PIPES, **options)
                return before, reaper_fds(job)
        before, after = asyncio.run(main())
    assert after == before

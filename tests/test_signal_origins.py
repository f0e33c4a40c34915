"""Signals are believed by where the kernel says they come from: a terminal's hangup is the stop signal already
given, and a job can fake neither a fault of its PID 1 nor its caller's death."""

from __future__ import annotations

import asyncio
import ctypes
import os
import platform
import signal
import subprocess

import pytest
from test_entry_points import ENTRY_POINTS, program

import sandbox
from support import (
    CLI,
    PYTHON,
    Terminal,
    all_ended,
    children,
    launched,
    log_lines,
    read_status,
    signal_job,
    wait_for,
)


def run_through(entry: str, argv: list[str], tmp_path, **options) -> tuple[int, list[dict], str]:
    """Run argv to its end through entry: the status as a shell sees it, the events, our stderr (the command's)."""
    events: list[dict] = []
    if entry == "cli":
        target = tmp_path / "status.jsonl"
        words = [f"--{name.replace('_', '-')}={value}" for name, value in options.items()]
        result = subprocess.run([CLI, "--json-status", str(target), *words, "--", *argv], cwd=tmp_path,
                                capture_output=True, text=True, timeout=120)
        return result.returncode % 256, read_status(target), result.stderr
    options = {**options, "cwd": str(tmp_path),
               "on_event": lambda name, fields: events.append({"event": name, **fields})}
    if entry == "run":
        code = sandbox.run(argv, **options).returncode
    elif entry == "Popen":
        with sandbox.Popen(argv, **options) as process:
            code = process.wait()
    elif entry == "Job":
        with sandbox.Job() as job:
            code = job.run(argv, **options).returncode
    elif entry == "run_async":
        code = asyncio.run(sandbox.run_async(argv, **options)).returncode
    elif entry == "create_process":
        async def started() -> int:
            return await (await sandbox.create_process(argv, **options)).wait()
        code = asyncio.run(started())
    elif entry == "AsyncJob":
        async def in_job() -> int:
            async with sandbox.AsyncJob() as job:
                return (await job.run(argv, **options)).returncode
        code = asyncio.run(in_job())
    else:
        raise ValueError(entry)
    return code % 256, events, ""


# -- a terminal's hangup is a stop signal delivered --------------------------------------------------------

@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_hangup_is_the_only_stop_signal_when_the_session_leader_dies(tmp_path, entry, no_leftovers):
    """ssh -t host sandboxed-run ..., tmux, script -c: the launcher (or API caller) leads its terminal's session
    and is SIGKILLed. The kernel hangs up the terminal's foreground group, the job with it; nothing comes on top."""
    argv, log = signal_job(tmp_path, cleanup=1.0)
    term = Terminal(program(entry, argv, log, "wait"), tmp_path)
    try:
        assert wait_for(lambda: log_lines(log)), term.output
        assert os.getsid(term.pid) == term.pid  # the launcher leads the terminal's session
        os.kill(term.pid, signal.SIGKILL)
        assert wait_for(lambda: "cleaned" in log_lines(log)), log_lines(log)
        assert wait_for(lambda: all_ended(no_leftovers, {os.getpid()}))
    finally:
        term.close()
    assert log_lines(log)[1:] == ["SIGHUP", "cleaned"], "a stop signal came on top of the hangup"


# -- a job cannot fake a fault of its PID 1 -----------------------------------------------------------------

FAULTS = ("ABRT", "SEGV", "BUS", "ILL", "FPE")


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_job_cannot_end_its_reaper_with_a_fault_signal(tmp_path, entry, no_leftovers):
    script = 'trap "echo TERM >> log" TERM; for s in ' + " ".join(FAULTS) + '; do kill -$s 1; done; sleep 0.3; exit 4'
    code, events, stderr = run_through(entry, ["sh", "-c", script], tmp_path)
    assert code == 4, (stderr, events)
    assert not (tmp_path / "log").exists()  # no stop of the sandbox either
    assert [e["event"] for e in events if e["event"] in ("stopping", "killed")] == [], events


def _inject_fault(pid: int) -> None:
    """Make pid execute at address 0 (a real fault, raised by the kernel): seize it, interrupt it, point its
    instruction pointer there, let it go."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    libc.ptrace.restype = ctypes.c_long
    seize, interrupt, pokeuser, detach = 0x4206, 0x4207, 6, 17
    rip = 16 * 8  # offsetof(struct user, regs.rip) on x86_64
    assert libc.ptrace(seize, pid, None, None) == 0, os.strerror(ctypes.get_errno())
    try:
        assert libc.ptrace(interrupt, pid, None, None) == 0, os.strerror(ctypes.get_errno())
        _, status = os.waitpid(pid, 0x40000000)  # __WALL: our tracee, stopped
        assert os.WIFSTOPPED(status), status
        assert libc.ptrace(pokeuser, pid, rip, 0) == 0, os.strerror(ctypes.get_errno())
    finally:
        libc.ptrace(detach, pid, None, None)


@pytest.mark.kills_reapers
@pytest.mark.skipif(platform.machine() != "x86_64", reason="the fault is injected through x86_64's registers")
def test_a_real_fault_of_the_reaper_ends_the_sandbox(tmp_path, no_leftovers):
    """PID 1 dies of a fault the kernel raises (its default action, forced), as any crashed process does."""
    with launched([CLI, "--", "sleep", "300"], cwd=tmp_path, start_new_session=True, stderr=subprocess.PIPE,
                  text=True) as launcher:
        assert wait_for(lambda: children(launcher.pid) and children(children(launcher.pid)[0]))
        _inject_fault(children(launcher.pid)[0])
        _, err = launcher.communicate(timeout=30)
    assert launcher.returncode == 125 and "reaper" in err
    assert wait_for(lambda: all_ended(no_leftovers, {os.getpid()}))


# -- a job cannot fake its caller's death -------------------------------------------------------------------

# rt_sigqueueinfo(2): a signal with the siginfo the sender writes (the kernel refuses si_code >= 0 from it).
RT_SIGQUEUEINFO = {"x86_64": 129, "aarch64": 138, "riscv64": 138}
FORGE = """
import ctypes, sys
info = (ctypes.c_int * 32)()
info[0], info[2], info[3] = int(sys.argv[1]), -1, 0  # si_signo, si_code SI_QUEUE, si_pid 0 (as from outside)
ctypes.CDLL(None).syscall(int(sys.argv[2]), 1, int(sys.argv[1]), info)
"""


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_job_cannot_fake_its_callers_death(tmp_path, entry, no_leftovers):
    forge = ""
    if platform.machine() in RT_SIGQUEUEINFO:
        number = RT_SIGQUEUEINFO[platform.machine()]
        forge = f"for s in 35 36; do {PYTHON} -c '{FORGE}' $s {number}; done; "
    script = f'trap "echo TERM >> log" TERM; kill -35 1; kill -36 1; {forge}sleep 0.5; exit 5'
    code, events, stderr = run_through(entry, ["sh", "-c", script], tmp_path)
    assert code == 5, (stderr, events)
    assert not (tmp_path / "log").exists(), "the job got a stop signal"
    assert [e for e in events if e["event"] == "stopping" and e["reason"] == "caller died"] == [], events

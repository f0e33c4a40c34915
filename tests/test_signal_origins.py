"""Signals are believed by where the kernel says they come from: a terminal's hangup is the stop signal already
given, a job cannot fake a fault of its PID 1 or its caller's death, and a job starts with the dispositions its
caller meant it to have, not those glibc's posix_spawn leaves."""

from __future__ import annotations

import asyncio
import ctypes
import os
import platform
import signal
import subprocess
import uuid

import pytest
from test_entry_points import ENTRY_POINTS, program

import sandbox
from support import (
    CLI,
    PYTHON,
    Terminal,
    all_ended,
    children,
    cmdline,
    launched,
    log_lines,
    marked_processes,
    read_status,
    signal_job,
    unique_name,
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


@pytest.mark.root("ptraces the reaper, which is not dumpable")
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


# -- a job starts with the dispositions its caller meant it to have ---------------------------------------

SIGNAL_CALLERS = {
    "run": "sandbox.run(ARGV, **OPTIONS)",
    "Popen": "sandbox.Popen(ARGV, **OPTIONS).wait()",
    "Job": "with sandbox.Job(**OPTIONS) as job:\n    job.run(ARGV)",
    "run_async": "asyncio.run(sandbox.run_async(ARGV, **OPTIONS))",
    "create_process": "async def main():\n    await (await sandbox.create_process(ARGV, **OPTIONS)).wait()\n"
                      "asyncio.run(main())",
    "AsyncJob": "async def main():\n    async with sandbox.AsyncJob(**OPTIONS) as job:\n        await job.run(ARGV)\n"
                "asyncio.run(main())",
}


def ignored_signals(pid: int) -> set[int]:
    with open(f"/proc/{pid}/status") as f:
        mask = int(next(line for line in f if line.startswith("SigIgn:")).split()[1], 16)
    return {bit + 1 for bit in range(64) if mask & (1 << bit)}


def spawned(argv: list[str]) -> int:
    """Start argv the way system(3) and posix_spawn(3) callers do (glibc's posix_spawn: the signals glibc keeps
    for itself, 32 and 33, ignored), with SIGHUP ignored on purpose, as under nohup."""
    return os.posix_spawn("/bin/sh", ["sh", "-c", 'trap "" HUP; exec "$@"', "sh", *argv], os.environ)


def job_of(token: str, argv: list[str]) -> int | None:
    found = [pid for pid in marked_processes(token) if cmdline(pid) == " ".join(argv)]
    return found[0] if found else None


@pytest.mark.parametrize("start", ["posix_spawn", "fork"])  # fork: a process attribute (nice) is set first
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_job_starts_with_default_dispositions_but_those_ignored_on_purpose(tmp_path, entry, start, no_leftovers):
    argv = ["sleep", f"1000.{uuid.uuid4().int % 10**6}"]
    options = {"nice": 1} if start == "fork" else {}
    if entry == "cli":
        caller = [CLI, *(["--nice", "1"] if options else []), "--", *argv]
    else:
        caller = [PYTHON, "-c", f"import asyncio, sandbox\nARGV, OPTIONS = {argv!r}, {options!r}\n"
                  + SIGNAL_CALLERS[entry]]
    pid = spawned(caller)
    status = None
    try:
        assert wait_for(lambda: job_of(no_leftovers, argv))
        job = job_of(no_leftovers, argv)
        assert {signal.SIGHUP, 32} <= ignored_signals(pid)  # the caller, as such callers start
        assert ignored_signals(job) == {signal.SIGHUP}
        os.kill(job, signal.SIGKILL)
        status = os.waitpid(pid, 0)[1]
    finally:
        if status is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def test_an_entered_command_starts_with_default_dispositions(tmp_path, no_leftovers):
    name = unique_name()
    argv = ["sleep", f"1000.{uuid.uuid4().int % 10**6}"]
    with launched([CLI, "--name", name, "--", "sleep", "1000"]):
        assert wait_for(lambda: subprocess.run([CLI, "--list"], capture_output=True, text=True).stdout.count(name))
        pid = spawned([CLI, "--enter", name, "--", *argv])
        try:
            assert wait_for(lambda: job_of(no_leftovers, argv))
            assert ignored_signals(job_of(no_leftovers, argv)) == {signal.SIGHUP}
        finally:
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)
            assert subprocess.run([CLI, "--stop", name], timeout=60).returncode == 0


def test_the_spawn_server_takes_parent_gone_only_from_its_callers_death(no_leftovers):
    """Any process of the user may send the server the signal the kernel sends when the caller dies; only the
    kernel's, which names the dying caller, stops the caller's sandboxes."""
    from sandbox.api import spawner

    with sandbox.Popen(["sleep", "1000"]) as process:
        server = spawner.current().pid
        # PARENT_GONE, from another process than the caller (the caller itself may end its own sandboxes).
        assert subprocess.run(["kill", f"-{signal.SIGRTMIN + 1}", str(server)]).returncode == 0
        assert sandbox.run(["sh", "-c", "exit 3"]).returncode == 3
        assert spawner.current().pid == server and process.poll() is None
        process.kill()


@pytest.mark.parametrize("signo", [0, -5, 65, 999, 2**31 - 1])
def test_a_signal_number_out_of_range_on_the_wire_is_dropped_by_the_reaper(signo, tmp_path, no_leftovers):
    """A caller's raw channel to its reaper (send_signal with a bad number did the same) sent Signal and Relay with
    a number that is no signal: os.kill raised in PID 1, which died, and the kernel SIGKILLed the job with no stop
    signal and no grace. The reaper drops such a number; the job's later stop is as ever (its trap runs)."""
    from sandboxed_run_helpers.shared import wire

    trap = "trap 'exit 3' TERM; echo ready; sleep 100 & wait"
    with sandbox.Popen(["sh", "-c", trap], stdout=subprocess.PIPE, grace=10) as process:
        assert process.stdout.readline() == b"ready\n"
        assert process.client.send(wire.Signal(signo, "caller")) and process.client.send(wire.Relay(signo))
        process.terminate()
        assert process.wait(timeout=30) == 3

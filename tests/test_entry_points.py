"""One contract, every entry point: the command, run, Popen, Job, run_async, create_process, AsyncJob.

Hooks run exactly once, after the sandbox is gone; the events end with the hooks' and then
`finished`; a stop gives the job its grace period; a Ctrl+C reaches the job once, with no stop signal
on top; and asyncio's cancellations leave no descriptor of ours behind.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess

import pytest

import sandbox
from support import CLI, PYTHON, ctrl_c_on_a_signal_job, log_lines, read_status, signal_job, signal_of

ENTRY_POINTS = ["cli", "run", "Popen", "Job", "run_async", "create_process", "AsyncJob"]
JOB = ["sh", "-c", "exit 3"]


def run_through(entry: str, hook: str, events: list) -> None:
    """Run JOB (exit 3) with one on-exit hook through entry; collect (name, fields) events."""
    def on_event(name: str, fields: dict) -> None:
        events.append((name, fields))

    options = {"on_exit": [hook], "on_event": on_event}
    if entry == "cli":
        status = os.path.join(os.path.dirname(hook.split(">>")[1].strip()), "status.jsonl")
        result = subprocess.run([CLI, "--json-status", status, "--on-exit", hook, "--", *JOB], timeout=60)
        assert result.returncode == 3
        events.extend((e.pop("event"), e) for e in read_status(__import__("pathlib").Path(status)))
    elif entry == "run":
        assert sandbox.run(JOB, **options).returncode == 3
    elif entry == "Popen":
        with sandbox.Popen(JOB, **options) as process:
            assert process.wait() == 3
    elif entry == "Job":
        with sandbox.Job(**options) as job:
            assert job.run(JOB).returncode == 3
    elif entry == "run_async":
        assert asyncio.run(sandbox.run_async(JOB, **options)).returncode == 3
    elif entry == "create_process":
        async def main() -> int:
            process = await sandbox.create_process(JOB, **options)
            return await process.wait()
        assert asyncio.run(main()) == 3
    elif entry == "AsyncJob":
        async def main() -> int:
            async with sandbox.AsyncJob(**options) as job:
                return (await job.run(JOB)).returncode
        assert asyncio.run(main()) == 3
    else:
        raise ValueError(entry)


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_hooks_run_once_and_finished_comes_last(tmp_path, entry, no_leftovers):
    log = tmp_path / "hook.log"
    events: list = []
    run_through(entry, f"echo once >> {log}", events)
    assert log_lines(log) == ["once"]
    names = [name for name, _ in events]
    assert names[-2:] == ["hook", "finished"], names
    assert names.count("hook") == 1 and names.count("finished") == 1
    assert events[-1][1]["status"] == (0 if entry in ("Job", "AsyncJob") else 3)


def test_asyncio_cancellations_leave_no_descriptor_behind(no_leftovers):
    async def one(delay: float) -> None:
        task = asyncio.ensure_future(sandbox.create_process(["sleep", "5"], grace=0))
        await asyncio.sleep(delay)
        task.cancel()
        try:
            process = await task
        except asyncio.CancelledError:
            return
        await process.stop()

    async def main() -> None:
        rng = random.Random(7)
        for _ in range(200):
            await one(rng.choice([0, 0, 0.0005, 0.001, 0.003, 0.01]))

    asyncio.run(sandbox.run_async(["true"]))  # the spawn server and its channel exist before we count
    before = sorted(os.listdir("/proc/self/fd"))
    asyncio.run(main())
    assert sorted(os.listdir("/proc/self/fd")) == before


# One program per entry point: run ARGV (a signal-logging job) with a 5 s grace period. MODE "wait" waits
# for its end (a Ctrl+C may come); "stop" stops it once it is ready, the entry point's own way.
PROGRAMS = {
    "run": """
try:
    sandbox.run(ARGV, grace=5, timeout=1 if MODE == "stop" else None)
except subprocess.TimeoutExpired:
    pass
""",
    "Popen": """
with sandbox.Popen(ARGV, grace=5) as p:
    if MODE == "stop":
        ready()
        p.stop()
    p.wait()
""",
    "Job": """
with sandbox.Job(grace=5) as job:
    p = job.Popen(ARGV)
    if MODE == "stop":
        ready()
    else:
        p.wait()
""",
    "run_async": """
async def main():
    try:
        await sandbox.run_async(ARGV, grace=5, timeout=1 if MODE == "stop" else None)
    except subprocess.TimeoutExpired:
        pass
asyncio.run(main())
""",
    "create_process": """
async def main():
    async with await sandbox.create_process(ARGV, grace=5) as p:
        if MODE == "stop":
            await asyncio.to_thread(ready)
            await p.stop()
        await p.wait()
asyncio.run(main())
""",
    "AsyncJob": """
async def main():
    async with sandbox.AsyncJob(grace=5) as job:
        p = await job.create_process(ARGV)
        if MODE == "stop":
            await asyncio.to_thread(ready)
        else:
            await p.wait()
asyncio.run(main())
""",
}

PRELUDE = """
import asyncio, os, subprocess, sys, time, sandbox
ARGV, LOG, MODE = {argv!r}, {log!r}, {mode!r}
def ready():
    while not os.path.exists(LOG):
        time.sleep(0.02)
"""


def program(entry: str, argv: list[str], log, mode: str) -> list[str]:
    if entry == "cli":
        return [CLI, "--grace", "5", *(["--timeout", "1"] if mode == "stop" else []), "--", *argv]
    return [PYTHON, "-c", PRELUDE.format(argv=argv, log=str(log), mode=mode) + PROGRAMS[entry]]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_stop_gives_the_job_its_grace_period(tmp_path, entry, no_leftovers):
    argv, log = signal_job(tmp_path, cleanup=1.0)
    result = subprocess.run(program(entry, argv, log, "stop"), cwd=tmp_path, timeout=60, capture_output=True)
    assert log_lines(log)[1:] == ["SIGTERM", "cleaned"], result.stderr[-2000:]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_ctrl_c_reaches_the_job_once_and_nothing_comes_on_top(tmp_path, entry, no_leftovers):
    argv, log = signal_job(tmp_path, cleanup=1.0)
    status, lines_at_exit, output = ctrl_c_on_a_signal_job(program(entry, argv, log, "wait"), tmp_path, log)
    assert lines_at_exit[1:] == ["SIGINT", "cleaned"], output[-2000:]
    assert signal_of(status) == signal.SIGINT


IN_A_DELETED_DIRECTORY = """
import asyncio, os, sys, sandbox
entry, gone = sys.argv[1], sys.argv[2]
os.chdir(gone)
os.rmdir(gone)
async def in_async_job(argv, **kw):
    async with sandbox.AsyncJob() as job:
        return await job.run(argv, **kw)
def in_job(argv, **kw):
    with sandbox.Job() as job:
        return job.run(argv, **kw)
def popen(argv, **kw):
    with sandbox.Popen(argv, stdout=sandbox.PIPE, **kw) as p:
        return p.communicate()[0]
async def create_process(argv, **kw):
    p = await sandbox.create_process(argv, stdout=sandbox.PIPE, **kw)
    return (await p.communicate())[0]
run = {"run": lambda *a, **kw: sandbox.run(*a, capture_output=True, **kw), "Popen": popen,
       "Job": lambda *a, **kw: in_job(*a, capture_output=True, **kw),
       "run_async": lambda *a, **kw: asyncio.run(sandbox.run_async(*a, capture_output=True, **kw)),
       "create_process": lambda *a, **kw: asyncio.run(create_process(*a, **kw)),
       "AsyncJob": lambda *a, **kw: asyncio.run(in_async_job(*a, capture_output=True, **kw))}[entry]
try:
    run(["touch", "made-here"])
except sandbox.SandboxError as exc:
    print(type(exc).__name__, exc)
out = run(["pwd"], cwd="/")
print(getattr(out, "stdout", out).decode().strip())
"""


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_deleted_current_directory_is_refused_and_an_absolute_cwd_still_works(entry, tmp_path, no_leftovers):
    """The caller's directory was deleted: its path leads nowhere (or, made again, elsewhere), so the job's
    relative paths would mean other files (they once meant /'s). One line, status 125; an absolute cwd works."""
    gone = tmp_path / "gone"
    gone.mkdir()
    if entry == "cli":
        script = f'cd {gone} && rmdir {gone} && {CLI} touch made-here; echo "status $?"; {CLI} --cwd / pwd'
        result = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60)
        lines, err = result.stdout.splitlines(), result.stderr
        assert lines == ["status 125", "/"] and len(err.splitlines()) == 1, (result.stdout, err)
    else:
        result = subprocess.run([PYTHON, "-c", IN_A_DELETED_DIRECTORY, entry, str(gone)], capture_output=True,
                                text=True, timeout=60)
        lines = result.stdout.splitlines()
        assert result.returncode == 0 and lines[1:] == ["/"] and lines[0].startswith("SandboxError "), result
        err = lines[0]
    assert "the current directory has no path" in err and "was it deleted?" in err, err
    assert not (tmp_path / "made-here").exists() and not os.path.exists("/made-here")

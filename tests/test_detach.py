"""detach(): a job that runs on by itself, as subprocess's children do, until it ends or its caller does.

By default a job belongs to its Popen: leaving `with` or dropping the object stops it. After detach() it
does neither; it still ends with the calling program (its reaper takes that for the caller's death).
"""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import time

import pytest

import sandbox
from support import alive, wait_for

ENTRIES = ["Popen", "Job", "create_process", "AsyncJob"]
# The job's work takes a moment; by then the caller has let go of it.
WORK = "sleep 0.5; echo done > {marker}"


def start(entry: str, argv: list[str], detach: bool, then) -> None:
    """Start argv through entry, detach it (or not), let go of it, then call then(reaper_pid) with no
    reference of ours left (a Job's or AsyncJob's block still open: the job must outlive the object)."""
    if entry == "Popen":
        process = sandbox.Popen(argv)
        reaper = process.reaper_pid
        if detach:
            process.detach()
        del process
        gc.collect()
        then(reaper)
    elif entry == "Job":
        with sandbox.Job() as job:
            process = job.Popen(argv)
            if detach:
                process.detach()
            del process
            gc.collect()
            then(job.pid)
    else:
        async def main() -> None:
            if entry == "create_process":
                process = await sandbox.create_process(argv)
                reaper = process.reaper_pid
                if detach:
                    process.detach()
                del process
                gc.collect()
                await asyncio.to_thread(then, reaper)
            else:
                async with sandbox.AsyncJob() as job:
                    process = await job.create_process(argv)
                    if detach:
                        process.detach()
                    del process
                    gc.collect()
                    await asyncio.to_thread(then, job.pid)
        asyncio.run(main())


@pytest.mark.parametrize("entry", ENTRIES)
def test_a_detached_job_runs_on_after_its_object_is_dropped(tmp_path, entry, no_leftovers):
    marker = tmp_path / "marker"

    def finishes(reaper: int) -> None:
        assert wait_for(marker.exists), "the detached job was stopped when its object was dropped"
        if entry in ("Popen", "create_process"):
            assert wait_for(lambda: not alive(reaper)), "its sandbox did not end with the job"

    start(entry, ["sh", "-c", WORK.format(marker=marker)], True, finishes)
    assert marker.read_text() == "done\n"


# A Job's command belongs to its Job, not to its object: it runs on until the Job's block ends either way.
@pytest.mark.parametrize("entry", ["Popen", "create_process"])
def test_without_detach_dropping_the_object_stops_the_job(tmp_path, entry, no_leftovers):
    marker = tmp_path / "marker"
    stopped = tmp_path / "stopped"
    script = f"trap 'echo stopped > {stopped}; exit 0' TERM; sleep 0.5 & wait; echo done > {marker}"

    def ends_early(reaper: int) -> None:
        assert wait_for(stopped.exists), "dropping the object did not stop the job"

    start(entry, ["sh", "-c", script], False, ends_early)
    assert not marker.exists()


def test_leaving_with_leaves_a_detached_job_running(tmp_path, no_leftovers):
    marker = tmp_path / "marker"
    with sandbox.Popen(["sh", "-c", WORK.format(marker=marker)], stdout=sandbox.PIPE) as process:
        process.detach()
        assert process.detached
    assert process.stdout.closed  # as subprocess's `with`, our ends of the pipes are closed
    assert process.poll() is None
    assert process.wait(timeout=30) == 0
    assert marker.read_text() == "done\n"


def test_leaving_async_with_leaves_a_detached_job_running(tmp_path, no_leftovers):
    marker = tmp_path / "marker"

    async def main() -> int:
        async with await sandbox.create_process(["sh", "-c", WORK.format(marker=marker)]) as process:
            process.detach()
        assert process.returncode is None
        return await asyncio.wait_for(process.wait(), 30)

    assert asyncio.run(main()) == 0
    assert marker.read_text() == "done\n"


def test_a_dropped_detached_job_runs_its_on_exit_hooks_when_it_ends(tmp_path, no_leftovers):
    marker, hooked = tmp_path / "marker", tmp_path / "hooked"
    process = sandbox.Popen(["sh", "-c", WORK.format(marker=marker)],
                            on_exit=[f"echo $SANDBOXED_RUN_EXIT_CODE > {hooked}"])
    process.detach()
    del process
    gc.collect()
    assert wait_for(hooked.exists)
    assert hooked.read_text() == "0\n"


def test_detach_after_the_end_changes_nothing(no_leftovers):
    with sandbox.Popen(["true"]) as process:
        process.wait()
        process.detach()
        assert not process.detached
    assert process.returncode == 0


CALLER = """
import sys, sandbox
process = sandbox.Popen(["sh", "-c", sys.argv[1]])
process.detach()
print(process.reaper_pid, flush=True)
if sys.argv[2] == "kill":
    import os, signal
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("how", ["returns", "kill"])
def test_a_detached_job_still_ends_with_its_caller(tmp_path, how, no_leftovers):
    stopped = tmp_path / "stopped"
    script = f"trap 'echo stopped > {stopped}; exit 0' TERM; sleep 100 & wait"
    caller = subprocess.run([sys.executable, "-c", CALLER, script, how], capture_output=True, text=True,
                            timeout=60)
    reaper = int(caller.stdout.split()[0])
    assert wait_for(stopped.exists, timeout=30), "the detached job outlived its caller"
    assert wait_for(lambda: not alive(reaper), timeout=30)



FORKING_CALLER = """
import os, sys, threading, time, sandbox
log, how, entry = sys.argv[1:4]
hook = [f"echo hook >> {log}"]
job = sandbox.Job(on_exit=hook).__enter__() if entry == "Job" else None
starter = job.Popen if job is not None else sandbox.Popen
process = starter(["sleep", "1"], **({} if job is not None else {"on_exit": hook}))
if how == "detached":
    process.detach()
else:
    threading.Thread(target=process.wait, daemon=True).start()
time.sleep(0.2)  # the thread is in its wait, holding the client's descriptors
ours = f"socket:[{os.fstat(process.client.sock.fileno()).st_ino}]"
child = os.fork()
if child == 0:
    held = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            held.add(os.readlink(f"/proc/self/fd/{fd}"))
        except FileNotFoundError:
            pass  # the listing's own
    status = process.poll(), process.wait(timeout=30)  # let go of: no hooks, no events here
    if job is not None:
        job.__exit__(None, None, None)
    time.sleep(1.5)  # outlives the job
    os._exit(10 if ours in held else 20 + (status != (0, 0)))
print(process.wait(timeout=30), flush=True)
if job is not None:
    job.__exit__(None, None, None)
_, child_status = os.waitpid(child, 0)
print(os.waitstatus_to_exitcode(child_status), flush=True)
"""


# A forked copy of the caller (multiprocessing's fork) holds copies of everything; a thread waiting in the parent
# must not keep the child's copy of the reaper's socket open, nor may the child run the parent's hooks.
@pytest.mark.parametrize("entry", ["Popen", "Job"])
@pytest.mark.parametrize("how", ["detached", "waited in a thread"])
def test_a_forked_child_lets_go_of_its_parents_job(tmp_path, entry, how, no_leftovers):
    log = tmp_path / "hooks"
    caller = subprocess.run([sys.executable, "-c", FORKING_CALLER, str(log), how, entry], capture_output=True,
                            text=True, timeout=60)
    assert caller.returncode == 0, caller.stderr
    job_status, child_status = caller.stdout.split()
    assert job_status == "0"
    assert child_status != "10", "the forked child kept the parent's socket to the reaper"
    assert child_status == "20", caller.stderr
    assert log.read_text() == "hook\n", "the parent's hooks ran in its forked child too"


EXITING_CALLER = """
import os, sys, time, sandbox
log, job = sys.argv[1], sys.argv[2:]
process = sandbox.Popen(job, on_exit=[f"echo start >> {log}; sleep 1; echo end >> {log}", f"echo second >> {log}"])
process.detach()
if job == ["true"]:
    while not os.path.exists(log):  # the detached job's thread is running its first hook
        time.sleep(0.01)
"""


# Hooks run once and whole, whenever the program exits: the detached thread's wrap-up is finished at exit, or
# left to the spawn server when the program exits before the job's end.
@pytest.mark.parametrize("when", ["during the hooks", "before the end"])
def test_a_program_exiting_leaves_a_detached_jobs_hooks_whole(tmp_path, when, no_leftovers):
    log = tmp_path / "hooks"
    job = ["true"] if when == "during the hooks" else ["sleep", "0.5"]
    caller = subprocess.run([sys.executable, "-c", EXITING_CALLER, str(log), *job], capture_output=True, text=True,
                            timeout=60)
    assert caller.returncode == 0, caller.stderr
    assert wait_for(lambda: log.exists() and log.read_text().count("\n") >= 3, timeout=30), \
        f"hooks left unrun: {log.read_text() if log.exists() else ''!r}"
    time.sleep(1.5)  # nothing runs twice
    assert log.read_text() == "start\nend\nsecond\n"

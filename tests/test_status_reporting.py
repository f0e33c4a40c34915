"""What we report is true: a status target gets "finished" however early a run fails, a listing names a job's
PID only when there is one, a core dump is said, and no child of ours is left for someone else to reap."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess

import pytest

import sandbox
from support import CLI, PYTHON, children, launched, read_status, unique_name, wait_for


def state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0].decode()
    except OSError:
        return "gone"


def listed_by(lister: str, name: str) -> dict | None:
    """The sandbox name as --list --json or list_running() shows it (None: not listed)."""
    if lister == "cli":
        result = subprocess.run([CLI, "--list", "--json"], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        shown = [s for s in json.loads(result.stdout) if s["name"] == name]
    else:
        shown = [s.to_json() for s in sandbox.list_running() if s.name == name]
    return shown[0] if shown else None


# -- a listing names the job's PID only when the reaper named one ---------------------------------------

# The main process exits at once; what it left ignores the stop signal, so the sandbox stays "stopping".
LEFT_BEHIND = "trap '' TERM; sleep 1000 & exit 0"


@pytest.mark.parametrize("lister", ["cli", "api"])
def test_no_job_pid_once_the_main_process_has_exited(lister, no_leftovers):
    name = unique_name()
    with launched([CLI, "--name", name, "--grace", "600", "--", "sh", "-c", LEFT_BEHIND]):
        try:
            shown: dict = {}
            assert wait_for(lambda: shown.update(listed_by(lister, name) or {}) or shown.get("state") == "stopping")
            assert shown["stop_reason"] == "main process exited"
            # Not the reaper's PID, which a `kill -9 $JOB_PID` would end without a grace period.
            assert shown["job_pid"] is None, (shown["job_pid"], shown["reaper_pid"])
        finally:
            assert subprocess.run([CLI, "--stop", name, "--grace", "0"], timeout=60).returncode == 0


@pytest.mark.parametrize("lister", ["cli", "api"])
def test_no_job_pid_for_a_job_of_many_commands(lister, no_leftovers):
    name = unique_name()
    with sandbox.Job(name=name) as job:
        process = job.Popen(["sleep", "1000"])
        shown: dict = {}
        assert wait_for(lambda: shown.update(listed_by(lister, name) or {}) or shown.get("state") == "running")
        assert shown["job_pid"] is None, (shown["job_pid"], shown["reaper_pid"])
        process.kill()
        process.wait()


# -- a run that fails before its sandbox exists still ends with "finished" ------------------------------

ENTRY_POINTS = ["cli", "cli-fd", "run", "Popen", "Job", "run_async", "create_process", "AsyncJob"]


def nr_open() -> int:
    with open("/proc/sys/fs/nr_open") as f:
        return int(f.read())


def memory_limits_refused() -> bool:
    from sandboxed_run_helpers.shared.cgroups import unavailable

    return bool(unavailable({"memory_max": "100M"}))


# Each found by us before anything starts: (API options, the command's words, a word of the error).
EARLY_FAILURES = {
    "bind source": ({"bind": [("/nonexistent-source", "/mnt")]}, ["--bind", "/nonexistent-source:/mnt"],
                    "/nonexistent-source"),
    "mount point": ({"bind": [("/tmp", "/nonexistent-dir/x")]}, ["--bind", "/tmp:/nonexistent-dir/x"],
                    "/nonexistent-dir/x"),
    "memory-max": ({"memory_max": "100M"}, ["--memory-max", "100M"], "memory"),
    "NOFILE": ({"rlimit": {"NOFILE": nr_open() + 1}}, ["--rlimit", f"NOFILE={nr_open() + 1}"], "nr_open"),
    "netns": ({"net": "netns:t-missing"}, ["--net", "netns:t-missing"], "t-missing"),
}


def fail_early(entry: str, options: dict, words: list[str], tmp_path) -> list[dict]:
    """Start `true` through entry with options the host refuses; the events its status target got."""
    if entry in ("cli", "cli-fd"):
        target = tmp_path / "status.jsonl"
        if entry == "cli":
            target.write_text('{"event": "finished", "status": 0}\n')  # a previous run's
            result = subprocess.run([CLI, "--json-status", str(target), *words, "--", "true"],
                                    capture_output=True, text=True, timeout=60)
        else:
            with open(target, "w") as f:
                result = subprocess.run([CLI, "--json-status-fd", str(f.fileno()), *words, "--", "true"],
                                        pass_fds=(f.fileno(),), capture_output=True, text=True, timeout=60)
        assert result.returncode == 125 and len(result.stderr.splitlines()) == 1, result.stderr
        return read_status(target)
    events: list[dict] = []
    options = {**options, "on_event": lambda name, fields: events.append({"event": name, **fields})}
    with pytest.raises(sandbox.SandboxError):
        if entry == "run":
            sandbox.run(["true"], **options)
        elif entry == "Popen":
            sandbox.Popen(["true"], **options)
        elif entry == "Job":
            with sandbox.Job(**options):
                pass
        elif entry == "run_async":
            asyncio.run(sandbox.run_async(["true"], **options))
        elif entry == "create_process":
            asyncio.run(sandbox.create_process(["true"], **options))
        elif entry == "AsyncJob":
            async def in_job() -> None:
                async with sandbox.AsyncJob(**options):
                    pass
            asyncio.run(in_job())
    return events


@pytest.mark.parametrize("failure", EARLY_FAILURES)
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_run_that_fails_before_it_starts_ends_with_finished(tmp_path, entry, failure, no_leftovers):
    options, words, named = EARLY_FAILURES[failure]
    if failure == "memory-max" and not memory_limits_refused():
        pytest.skip("this machine has cgroup v2 limits: nothing to refuse")
    events = fail_early(entry, options, words, tmp_path)
    assert [e["event"] for e in events] == ["finished"], events
    assert events[0]["status"] == 125 and named in events[0]["error"] and events[0]["usage"] is None


def test_a_usage_error_of_the_command_ends_with_finished(tmp_path, no_leftovers):
    target = tmp_path / "status.jsonl"
    for words, named in ((["--tmpfs", "relative"], "--tmpfs"), ([], "no command")):
        target.write_text('{"event": "finished", "status": 0}\n')
        result = subprocess.run([CLI, "--json-status", str(target), *words], capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
        events = read_status(target)
        assert [e["event"] for e in events] == ["finished"] and events[0]["status"] == 2, events
        assert named in events[0]["error"] and named in result.stderr


def test_verbose_shows_the_finished_line_of_an_early_failure(no_leftovers):
    result = subprocess.run([CLI, "-v", "--bind", "/nonexistent-source:/mnt", "--", "true"], capture_output=True,
                            text=True, timeout=60)
    lines = result.stderr.splitlines()
    assert result.returncode == 125 and len(lines) == 2, lines
    assert "/nonexistent-source" in lines[0] and lines[1].startswith("sandboxed-run: finished status=125 error=")


# -- a core dump is said, as the shell says "(core dumped)" ----------------------------------------------

DUMPS_CORE = ["sh", "-c", "ulimit -c unlimited; kill -SEGV $$"]


def run_to_its_end(entry: str, argv: list[str], tmp_path) -> tuple[list[dict], str]:
    """Run argv through entry in tmp_path; its events (the command's --json-status) and, for the command, -v's
    lines on stderr."""
    if entry == "cli":
        target = tmp_path / "status.jsonl"
        result = subprocess.run([CLI, "-v", "--json-status", str(target), "--", *argv], cwd=tmp_path,
                                capture_output=True, text=True, timeout=60)
        return read_status(target), result.stderr
    events: list[dict] = []
    options = {"cwd": str(tmp_path), "on_event": lambda name, fields: events.append({"event": name, **fields})}
    if entry == "run":
        sandbox.run(argv, **options)
    elif entry == "Popen":
        with sandbox.Popen(argv, **options) as process:
            process.wait()
    elif entry == "Job":
        with sandbox.Job() as job:
            job.run(argv, **options)
    elif entry == "run_async":
        asyncio.run(sandbox.run_async(argv, **options))
    elif entry == "create_process":
        async def started() -> None:
            await (await sandbox.create_process(argv, **options)).wait()
        asyncio.run(started())
    elif entry == "AsyncJob":
        async def in_job() -> None:
            async with sandbox.AsyncJob() as job:
                await job.run(argv, **options)
        asyncio.run(in_job())
    return events, ""


def dumps_core_outside(argv: list[str], directory) -> bool:
    """Whether argv, run here without a sandbox, dies of a signal that leaves a core dump (as the shell sees it)."""
    pid = os.fork()
    if pid == 0:
        try:
            os.chdir(directory)
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    status = os.waitpid(pid, 0)[1]
    for core in directory.glob("core*"):
        core.unlink()
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSEGV and os.WCOREDUMP(status)


@pytest.mark.parametrize("entry", ["cli", "run", "Popen", "Job", "run_async", "create_process", "AsyncJob"])
def test_a_core_dump_is_reported(tmp_path, entry, no_leftovers):
    if not dumps_core_outside(DUMPS_CORE, tmp_path):
        pytest.skip("this machine writes no core dump (kernel.core_pattern)")
    events, verbose = run_to_its_end(entry, DUMPS_CORE, tmp_path)
    exited = [e for e in events if e["event"] == "exited"]
    assert exited and exited[0]["signal"] == "SIGSEGV" and exited[0]["core_dumped"] is True, events
    assert events[-1]["event"] == "finished" and events[-1]["status"] == 139, events
    assert events[-1]["signal"] == "SIGSEGV" and events[-1]["core_dumped"] is True, events
    if entry == "cli":
        assert "exited signal=SIGSEGV (core dumped)" in verbose
        assert "finished status=139 signal=SIGSEGV (core dumped)" in verbose


def test_no_core_dump_is_reported_when_none_was_written(tmp_path, no_leftovers):
    events, verbose = run_to_its_end("cli", ["sh", "-c", "ulimit -c 0; kill -SEGV $$"], tmp_path)
    assert [(e["signal"], e["core_dumped"]) for e in events if e["event"] in ("exited", "finished")] == [
        ("SIGSEGV", False), ("SIGSEGV", False)], events
    assert "core dumped" not in verbose and "signal=SIGSEGV" in verbose


# -- no child of ours is left for someone else to reap ----------------------------------------------------

# A caller that reaps orphans (PR_SET_CHILD_SUBREAPER, as a container's init or a service manager does): it
# runs the command, then says which processes were left to it once the command had exited, and reaps them.
SUBREAPER = r"""
import ctypes, os, subprocess, sys, time
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
def left():
    found = []
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as f:
            found += [int(p) for p in f.read().split()]
    return found
deadline = time.monotonic() + 15  # the good case ends at once; only a leftover waits this long
while left() and time.monotonic() < deadline:
    time.sleep(0.02)
names = []
for pid in left():
    with open(f"/proc/{pid}/comm") as f:
        names.append(f.read().strip())
    os.waitpid(pid, 0)
print(" ".join(names))
"""

ENDINGS = {
    "exit": ["--", "true"],
    "status": ["--", "sh", "-c", "exit 3"],
    "signal": ["--", "sh", "-c", "kill -TERM $$"],
    "timeout": ["--timeout", "0.3", "--", "sleep", "30"],
    "not found": ["--", "/nonexistent-command"],
}


@pytest.mark.parametrize("userns", [False, True], ids=["", "userns"])
@pytest.mark.parametrize("ending", ENDINGS)
def test_the_command_reaps_its_children_on_every_ending(ending, userns, no_leftovers):
    argv = [CLI, *(["--userns"] if userns else []), *ENDINGS[ending]]
    result = subprocess.run([PYTHON, "-c", SUBREAPER, *argv], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout.strip()) == (0, ""), (result.stdout, result.stderr)


def test_the_spawn_server_reaps_its_children(no_leftovers):
    from sandbox.api import spawner

    for options in ({}, {"userns": True}):
        for argv in (["true"], ["sh", "-c", "kill -TERM $$"], ["/nonexistent-command"]):
            try:
                sandbox.run(argv, **options)
            except sandbox.SandboxError:
                pass
    server = spawner.current().pid

    def zombies() -> list[int]:
        return [pid for pid in children(server) if state(pid) == "Z"]

    assert wait_for(lambda: not zombies()), [(pid, state(pid)) for pid in children(server)]

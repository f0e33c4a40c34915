"""What we report is true: a status target gets "finished" however early a run fails, a listing names a job's
PID only when there is one, a core dump is said, and no child of ours is left for someone else to reap."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid

import pytest

import sandbox
from support import CLI, launched, read_status, wait_for


def unique_name() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


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
        shown = listed_by(lister, name)
        assert shown is not None and shown["state"] == "running"
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

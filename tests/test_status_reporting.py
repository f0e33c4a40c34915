"""What we report is true: a status target gets "finished" however early a run fails, a listing names a job's
PID only when there is one, a core dump is said, and no child of ours is left for someone else to reap."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest

import sandbox
from support import CLI, launched, wait_for


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

"""sandbox-mount-image and sandbox-open-luks are on the job's PATH (last, shadowing nothing), through every
entry point, and also for a job given no PATH at all."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

import sandbox
from support import CLI

ENTRY_POINTS = ["cli", "run", "Popen", "Job", "run_async", "create_process", "AsyncJob"]
BIN = os.path.dirname(sys.executable)
SHOW = ["sh", "-c", 'command -v sandbox-mount-image; command -v sandbox-open-luks; echo "$PATH"']


def run_through(entry: str, env: dict[str, str]) -> str:
    if entry == "cli":
        return subprocess.run([CLI, "--", *SHOW], env=env, capture_output=True, text=True, timeout=60).stdout
    if entry == "run":
        return sandbox.run(SHOW, env=env, capture_output=True, text=True).stdout
    if entry == "Popen":
        with sandbox.Popen(SHOW, env=env, stdout=sandbox.PIPE, text=True) as process:
            return process.communicate()[0]
    if entry == "Job":
        with sandbox.Job() as job:
            return job.run(SHOW, env=env, capture_output=True, text=True).stdout

    async def main() -> str:
        if entry == "run_async":
            return (await sandbox.run_async(SHOW, env=env, capture_output=True)).stdout.decode()
        if entry == "create_process":
            process = await sandbox.create_process(SHOW, env=env, stdout=sandbox.PIPE)
            return (await process.communicate())[0].decode()
        async with sandbox.AsyncJob() as job:
            return (await job.run(SHOW, env=env, capture_output=True)).stdout.decode()
    return asyncio.run(main())


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_the_helpers_are_on_the_jobs_path(entry):
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    out = run_through(entry, env).splitlines()
    assert out == [f"{BIN}/sandbox-mount-image", f"{BIN}/sandbox-open-luks", f"/usr/bin:/bin:{BIN}"]


def test_a_path_that_has_them_already_stays_as_it_is():
    env = {**os.environ, "PATH": f"{BIN}:/usr/bin:/bin"}
    assert run_through("run", env).splitlines()[-1] == f"{BIN}:/usr/bin:/bin"


def test_a_job_without_path_gets_the_default_one_and_ours():
    out = sandbox.run(["/bin/sh", "-c", 'echo "$PATH"'], env={}, capture_output=True, text=True).stdout
    assert out == f"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:{BIN}\n"


def test_a_helper_runs_by_its_name(tmp_path):
    result = subprocess.run([CLI, "--", "sandbox-mount-image", "--help"], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0 and "IMAGE DIR" in result.stdout, result.stderr

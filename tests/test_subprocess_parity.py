"""What a subprocess user expects of the API, with CPython's own test suite as the yardstick: no wait deaf to its
own timeout, the module functions of subprocess, and its exceptions."""

from __future__ import annotations

import asyncio
import subprocess

import pytest

import sandbox

API_ENTRY_POINTS = ["run", "Popen", "Job", "run_async", "create_process", "AsyncJob"]

# CPython's test_communicate_pipe_buf: the job reads a little of its input, writes more than a pipe holds to
# stderr, then reads the rest. A writer that puts more into the job's stdin than a poll promised room for blocks
# in write() while the job, blocked on its full stderr, never reads: both wait for ever.
PIPE_BUF_JOB = ["python3", "-c", "import sys; sys.stdin.read(47); sys.stderr.write('x' * (4 << 20)); "
                "sys.stdout.write(sys.stdin.read())"]
INPUT = b"a" * (1 << 20)


def communicate_through(entry: str) -> tuple[bytes, bytes]:
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    if entry == "run":
        result = sandbox.run(PIPE_BUF_JOB, input=INPUT, capture_output=True, timeout=60)
        return result.stdout, result.stderr
    if entry == "Popen":
        with sandbox.Popen(PIPE_BUF_JOB, **pipes) as process:
            return process.communicate(INPUT, timeout=60)
    if entry == "Job":
        with sandbox.Job() as job:
            result = job.run(PIPE_BUF_JOB, input=INPUT, capture_output=True, timeout=60)
            return result.stdout, result.stderr
    if entry == "run_async":
        result = asyncio.run(sandbox.run_async(PIPE_BUF_JOB, input=INPUT, capture_output=True, timeout=60))
        return result.stdout, result.stderr

    async def main() -> tuple[bytes, bytes]:
        if entry == "create_process":
            process = await sandbox.create_process(PIPE_BUF_JOB, **pipes)
            return await asyncio.wait_for(process.communicate(INPUT), 60)
        async with sandbox.AsyncJob() as job:
            result = await job.run(PIPE_BUF_JOB, input=INPUT, capture_output=True, timeout=60)
            return result.stdout, result.stderr
    return asyncio.run(main())


@pytest.mark.parametrize("entry", API_ENTRY_POINTS)
def test_input_larger_than_a_pipe_to_a_job_that_first_fills_its_stderr(entry, no_leftovers):
    out, err = communicate_through(entry)
    assert (len(out), len(err)) == (len(INPUT) - 47, 4 << 20)

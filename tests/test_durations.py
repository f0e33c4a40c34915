"""Durations as people write them (30, 1.5, 500ms, 10m, 1h30m), in every place that takes one, through every
entry point; --timeout 0 is no timeout, as for coreutils' timeout and systemd."""

from __future__ import annotations

import asyncio
import math
import subprocess

import pytest

import sandbox
from sandboxed_run_helpers.shared.durations import parse
from support import CLI

ENTRY_POINTS = ["cli", "run", "Popen", "Job", "run_async", "create_process", "AsyncJob"]


@pytest.mark.parametrize(("text", "seconds"), [
    ("30", 30), ("1.5", 1.5), (".5", 0.5), ("1e3", 1000), ("500ms", 0.5), ("10m", 600), ("1h30m", 5400),
    ("1h 30m", 5400), ("2 min", 120), ("1.5h", 5400), ("3s 250ms", 3.25), ("1d", 86400), ("1w", 604800),
    ("100us", 1e-4), ("inf", math.inf), ("infinity", math.inf), ("1e309", math.inf), (" 7s ", 7),
])
def test_spans_read_as_systemd_reads_them(text, seconds):
    assert parse(text, "x") == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "-1", "-1s", "1x", "nan", "1h30", "10m x", "1..5s", "m", "s10",
                                  "\u00b2"])
def test_what_is_not_a_duration_is_refused_naming_the_option(text):
    with pytest.raises(ValueError, match="--grace"):
        parse(text, "--grace")


def expire(entry: str) -> str:
    """Run `sleep 30` with a timeout of "300ms" (or, where the entry point has no timeout, wait that long and
    stop it with a grace written as a span); return how it ended."""
    job = ["sleep", "30"]
    if entry == "cli":
        result = subprocess.run([CLI, "--timeout", "300ms", "--grace", "1s", "--", *job], timeout=60)
        return "timeout" if result.returncode == 124 else f"status {result.returncode}"
    try:
        if entry == "run":
            sandbox.run(job, timeout="300ms", grace="1s")
        elif entry == "Popen":
            with sandbox.Popen(job, grace="0.5s") as process:
                process.wait(timeout="300ms")
        elif entry == "Job":
            with sandbox.Job(grace="1s") as sandbox_job:
                sandbox_job.run(job, timeout="0.3s")
        elif entry == "run_async":
            asyncio.run(sandbox.run_async(job, timeout="300ms", grace="1s"))
        elif entry == "create_process":
            async def main() -> str:
                process = await sandbox.create_process(job)
                await asyncio.sleep(0.3)
                return f"stopped {await process.stop(grace='100ms')}"
            return asyncio.run(main())
        elif entry == "AsyncJob":
            async def main() -> None:
                async with sandbox.AsyncJob(grace="1s") as async_job:
                    await async_job.run(job, timeout="300ms")
            asyncio.run(main())
    except subprocess.TimeoutExpired as exc:
        assert exc.timeout == pytest.approx(0.3)
        return "timeout"
    return "no timeout"


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_every_entry_point_takes_spans(entry, no_leftovers):
    assert expire(entry) == ("stopped -15" if entry == "create_process" else "timeout")


def test_timeout_0_means_no_timeout_on_the_command_line():
    result = subprocess.run([CLI, "--timeout", "0", "--", "sh", "-c", "sleep 0.5; exit 3"], timeout=60)
    assert result.returncode == 3
    result = subprocess.run([CLI, "--timeout", "0s", "--", "sh", "-c", "exit 4"], timeout=60)
    assert result.returncode == 4


def test_an_int_past_any_float_is_an_endless_duration(no_leftovers):
    assert sandbox.run(["sh", "-c", "exit 3"], timeout=2**1100, grace=2**1100).returncode == 3


def test_the_api_keeps_subprocess_meaning_of_a_zero_timeout():
    # subprocess.run(timeout=0) expires at once; so does ours (a drop-in replacement must not wait forever).
    with pytest.raises(subprocess.TimeoutExpired):
        sandbox.run(["sleep", "30"], timeout=0, grace=0)


@pytest.mark.parametrize("entry", ["run", "call", "Popen.wait", "Popen.communicate", "Job.run", "run_async"])
def test_a_negative_timeout_expires_at_once_as_subprocesss(entry, no_leftovers):
    # A deadline computed once it passed (deadline - time.monotonic()) is subprocess's TimeoutExpired, not a
    # ValueError that code written for subprocess does not catch.
    with subprocess.Popen(["sleep", "30"]) as plain, pytest.raises(subprocess.TimeoutExpired):
        try:
            plain.wait(timeout=-1)
        finally:
            plain.kill()
    argv = ["sleep", "30"]
    with pytest.raises(subprocess.TimeoutExpired):
        if entry == "run":
            sandbox.run(argv, timeout=-1, grace=0)
        elif entry == "call":
            sandbox.call(argv, timeout=-0.5, grace=0)
        elif entry.startswith("Popen"):
            with sandbox.Popen(argv, grace=0) as process:
                process.wait(timeout=-1) if entry == "Popen.wait" else process.communicate(timeout=-2**70)
        elif entry == "Job.run":
            with sandbox.Job(grace=0) as job:
                job.run(argv, timeout=float("-inf"))
        else:
            asyncio.run(sandbox.run_async(argv, timeout=-1, grace=0))


@pytest.mark.parametrize(("argv", "words"), [
    (["--timeout", "10 parsecs"], "--timeout: unknown unit 'parsecs'"), (["--grace", "soon"], "--grace: 'soon'"),
    (["--grace", "-5s"], "--grace must be a duration >= 0"),
])
def test_a_bad_duration_gets_one_line_and_status_2(argv, words):
    result = subprocess.run([CLI, *argv, "--", "true"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and words in result.stderr, result.stderr


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"timeout": "10 parsecs"}, ValueError), ({"grace": "soon"}, ValueError), ({"grace": b"1"}, TypeError),
    ({"timeout": "-1s"}, ValueError), ({"timeout": "\u00b2"}, ValueError), ({"grace": -2**1100}, ValueError),
])
def test_a_bad_duration_in_the_api_names_the_keyword(kwargs, error):
    with pytest.raises(error, match=next(iter(kwargs))):
        sandbox.run(["true"], **kwargs)

"""pass_fds (--pass-fd N) through every entry point, with subprocess's meaning: the job reads and writes the passed
descriptors under their own numbers; every other descriptor above 2, inheritable or not, is closed for it. Bad
values: TypeError and ValueError in the API, OSError EBADF for one not open (as subprocess), exit 2 and one line
on the command line."""

from __future__ import annotations

import asyncio
import os
import subprocess

import pytest

import sandbox
from sandbox.api import spawner
from support import CLI

ENTRY_POINTS = ["cli", "run", "Popen", "Job", "run_async", "create_process", "AsyncJob"]


def through(entry: str, argv: list[str], passed: tuple[int, ...]) -> tuple[int, str]:
    """Run argv with these descriptors passed through one entry point: (returncode, stdout)."""
    if entry == "cli":
        words = [w for fd in passed for w in ("--pass-fd", str(fd))]
        result = subprocess.run([CLI, *words, "--", *argv], pass_fds=passed, capture_output=True, text=True,
                                timeout=60)
        assert result.stderr == ""
        return result.returncode, result.stdout
    if entry == "run":
        result = sandbox.run(argv, pass_fds=passed, capture_output=True, text=True)
        return result.returncode, result.stdout
    if entry == "Popen":
        with sandbox.Popen(argv, pass_fds=passed, stdout=subprocess.PIPE, text=True) as process:
            out, _ = process.communicate()
        return process.returncode, out
    if entry == "Job":
        with sandbox.Job() as job:
            result = job.run(argv, pass_fds=passed, capture_output=True, text=True)
        return result.returncode, result.stdout
    if entry == "run_async":
        result = asyncio.run(sandbox.run_async(argv, pass_fds=passed, stdout=subprocess.PIPE))
        return result.returncode, result.stdout.decode()
    if entry == "create_process":
        async def main() -> tuple:
            process = await sandbox.create_process(argv, pass_fds=passed, stdout=subprocess.PIPE)
            out, _ = await process.communicate()
            return process.returncode, out.decode()
        return asyncio.run(main())
    if entry == "AsyncJob":
        async def main() -> tuple:
            async with sandbox.AsyncJob() as job:
                result = await job.run(argv, pass_fds=passed, stdout=subprocess.PIPE)
            return result.returncode, result.stdout.decode()
        return asyncio.run(main())
    raise ValueError(entry)


@pytest.fixture
def descriptors():
    """Two pipes placed at high numbers (to the job: one to write to, one to read from) and a descriptor that is
    inheritable but not passed; all closed afterwards."""
    made: list[int] = []

    def at(fd: int, number: int) -> int:
        os.dup2(fd, number)  # inheritable, so only our closing can keep it from the job
        os.close(fd)
        made.append(number)
        return number

    out_r, out_w = os.pipe()
    in_r, in_w = os.pipe()
    other = os.open("/dev/null", os.O_RDONLY)
    fds = {"out_r": at(out_r, 60), "out_w": at(out_w, 47), "in_r": at(in_r, 52), "in_w": at(in_w, 61),
           "other": at(other, 55)}
    try:
        yield fds
    finally:
        for fd in made:
            os.close(fd)


# The job writes what it reads from one passed descriptor to the other, and lists what it has open (bash: dash
# takes descriptors up to 9 only).
COPY = 'read line <&52; echo "got $line" >&47; for fd in /proc/self/fd/*; do echo "${fd##*/}"; done'


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_the_job_uses_passed_descriptors_by_number_and_has_no_other(entry, descriptors, no_leftovers):
    os.write(descriptors["in_w"], b"hello\n")
    code, out = through(entry, ["bash", "-c", COPY], (52, 47))
    assert code == 0
    assert os.read(descriptors["out_r"], 100) == b"got hello\n"
    open_in_job = {int(fd) for fd in out.split()}
    # 0, 1, 2, the passed ones, and the one the listing itself holds open (the glob's directory, if any).
    assert {0, 1, 2, 47, 52} <= open_in_job and len(open_in_job - {0, 1, 2, 47, 52}) <= 1, open_in_job
    assert not open_in_job & {55, 60, 61}, open_in_job


def test_a_job_call_still_gets_its_channel(no_leftovers):
    with sandbox.Job() as job:
        assert job.call(os.getpid) > 1


@pytest.mark.parametrize(("value", "error", "message"), [
    ((-1,), ValueError, "-1 is not a file descriptor number"),
    ((2**31,), ValueError, "is not a file descriptor number"),
    (("5",), TypeError, "takes file descriptor numbers"),
    ((True,), TypeError, "takes file descriptor numbers"),
    (5, TypeError, "takes a list"),
])
def test_bad_values_in_the_api(value, error, message):
    with pytest.raises(error, match=message):
        sandbox.run(["true"], pass_fds=value)


def test_a_descriptor_not_open_is_ebadf_in_the_api_as_in_subprocess(no_leftovers):
    with pytest.raises(OSError) as raised:
        subprocess.run(["true"], pass_fds=(999,))
    with pytest.raises(OSError) as ours:
        sandbox.run(["true"], pass_fds=(999,))
    assert ours.value.errno == raised.value.errno
    with sandbox.Job() as job, pytest.raises(OSError):
        job.run(["true"], pass_fds=(999,))


def test_stdio_numbers_are_taken_as_subprocess_takes_them(no_leftovers):
    result = sandbox.run(["sh", "-c", "echo out"], pass_fds=(0, 1, 2), capture_output=True, text=True)
    assert result.stdout == "out\n"


@pytest.mark.parametrize(("word", "message"), [
    ("999", "--pass-fd 999: not an open file descriptor"),
    ("-1", "--pass-fd: -1 is not a file descriptor number"),
    ("x", "--pass-fd: 'x' is not a number"),
])
def test_bad_values_on_the_command_line(word, message):
    result = subprocess.run([CLI, "--pass-fd", word, "--", "true"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and message in result.stderr


def _api_entry(entry: str, passed: tuple[int, ...]) -> None:
    """Start `true` through an API entry point with these descriptors passed (the command line has no socket of
    ours to pass)."""
    through(entry, ["true"], passed)


@pytest.mark.parametrize("entry", [e for e in ENTRY_POINTS if e != "cli"])
def test_the_api_refuses_to_pass_its_own_sockets_to_a_job(entry, no_leftovers):
    # A job holding the caller's channel to the spawn server reads the replies meant for the caller: the next
    # sandbox's reaper socket and pidfd; one holding a reaper's socket orders that sandbox about as its caller.
    sandbox.run(["true"])
    channel = spawner.current().channel.fileno()
    copy = os.dup(channel)  # another number, the same socket
    try:
        for fd in (channel, copy):
            with pytest.raises(ValueError, match=f"pass_fds: {fd} is the sandbox API's own socket"):
                _api_entry(entry, (fd,))
        with sandbox.Job() as job:
            with pytest.raises(ValueError, match="the sandbox API's own socket"):
                job.run(["true"], pass_fds=(job.client.sock.fileno(),))
            assert job.run(["true"]).returncode == 0
    finally:
        os.close(copy)


@pytest.mark.parametrize("entry", [e for e in ENTRY_POINTS if e != "cli"])
def test_the_api_refuses_to_pass_a_pidfd_of_its_own_processes_to_a_job(entry, no_leftovers):
    """A pidfd of a spawn server or of a sandbox's PID 1, however the caller came by it, lets a job signal it
    (pidfd_send_signal works across PID namespaces): a root job SIGKILLs another sandbox at once."""
    sandbox.run(["true"])
    server = os.pidfd_open(spawner.current().pid)
    try:
        with pytest.raises(ValueError, match=f"pass_fds: {server} is a pidfd of the sandbox API's own processes"):
            _api_entry(entry, (server,))
        with sandbox.Job() as job:
            reaper = os.pidfd_open(job.reaper_pid)
            try:
                with pytest.raises(ValueError, match="a pidfd of the sandbox API's own processes"):
                    job.run(["true"], pass_fds=(reaper,))
            finally:
                os.close(reaper)
            own = os.pidfd_open(os.getpid())  # the caller's own processes are its to pass
            try:
                assert job.run(["true"], pass_fds=(own,)).returncode == 0
            finally:
                os.close(own)
    finally:
        os.close(server)

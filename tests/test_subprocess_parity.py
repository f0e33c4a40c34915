"""What a subprocess user expects of the API, with CPython's own test suite as the yardstick: no wait deaf to its
own timeout, the module functions of subprocess, and its exceptions."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import pathlib
import signal
import subprocess

import pytest

import sandbox
from support import CLI, timed_out_through

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


# subprocess's module functions: the same answers as subprocess's, from a job in a sandbox of its own (it is
# PID 2 there, its PID 1 our reaper).
SHORTCUT_CASES = [
    ("call", (["sh", "-c", "exit 3"],), {}),
    ("call", (["sh", "-c", "kill -TERM $$"],), {}),
    ("check_call", (["true"],), {}),
    ("check_output", (["sh", "-c", "echo out; echo err >&2"],), {"stderr": subprocess.DEVNULL}),
    ("check_output", (["cat"],), {"input": None}),
    ("check_output", (["cat"],), {"input": "text in", "text": True}),
    ("check_output", (["sh", "-c", "echo x; exit 4"],), {}),
    ("getoutput", ("echo out; echo err >&2; exit 5",), {}),
    ("getstatusoutput", ("printf 'a\\n\\n'; exit 6",), {}),
    ("getstatusoutput", ("kill -KILL $$",), {}),
    ("check_output", (["true"],), {"stdout": subprocess.PIPE}),
]


def outcome_of(function, args, kwargs) -> tuple[str, object]:
    try:
        return "returned", function(*args, **kwargs)
    except subprocess.CalledProcessError as exc:
        return type(exc).__name__, (exc.returncode, exc.output)
    except ValueError as exc:
        return type(exc).__name__, str(exc)


@pytest.mark.parametrize(("name", "args", "kwargs"), SHORTCUT_CASES,
                         ids=[f"{name}-{i}" for i, (name, _, _) in enumerate(SHORTCUT_CASES)])
def test_subprocess_module_functions_answer_as_subprocesss(name, args, kwargs, no_leftovers):
    assert outcome_of(getattr(sandbox, name), args, kwargs) == outcome_of(getattr(subprocess, name), args, kwargs)


def test_subprocess_module_functions_run_in_a_sandbox_with_its_options(no_leftovers):
    assert sandbox.getoutput("echo $$; hostname", hostname="parity") == "2\nparity"
    assert sandbox.check_output(["sh", "-c", "echo $$"], text=True) == "2\n"
    assert sandbox.call(["sh", "-c", "exit 3"], timeout=60, net="none") == 3
    with pytest.raises(subprocess.TimeoutExpired):
        sandbox.check_call(["sleep", "60"], timeout=0.5, grace=1)


def test_a_repl_completes_the_api():
    names = dir(sandbox)
    for name in ("run", "Popen", "Job", "run_async", "create_process", "AsyncJob", "check_output", "getoutput",
                 "SandboxError", "list_running", "__version__"):
        assert name in names
    assert "TYPE_CHECKING" not in names and "annotations" not in names


# -- asyncio: what asyncio.create_subprocess_exec does, through create_process and an AsyncJob's -----------------

async def create_through(entry: str, argv: list[str], **kwargs) -> tuple[sandbox.AsyncProcess, sandbox.AsyncJob | None]:
    if entry == "create_process":
        return await sandbox.create_process(argv, **kwargs), None
    job = sandbox.AsyncJob()
    await job.__aenter__()
    try:
        return await job.create_process(argv, **kwargs), job
    except BaseException:
        await job.__aexit__(None, None, None)
        raise


def asyncio_refusal(**kwargs) -> str:
    async def main() -> None:
        await asyncio.create_subprocess_exec("true", **kwargs)
    with pytest.raises(ValueError) as refused:
        asyncio.run(main())
    return str(refused.value)


@pytest.mark.parametrize("entry", ["create_process", "AsyncJob"])
@pytest.mark.parametrize("keyword", [{"text": True}, {"encoding": "utf-8"}, {"errors": "strict"},
                                     {"universal_newlines": True}], ids=lambda k: next(iter(k)))
def test_asyncio_speaks_bytes_alone(entry, keyword, no_leftovers):
    async def main() -> None:
        process, job = await create_through(entry, ["true"], **keyword)
        await process.wait()  # not reached when refused
        if job is not None:
            await job.__aexit__(None, None, None)
    with pytest.raises(ValueError) as refused:
        asyncio.run(main())
    assert str(refused.value) == asyncio_refusal(**keyword)


LONG_LINE = ["python3", "-c", "print('x' * (200 << 10))"]


@pytest.mark.parametrize("entry", ["create_process", "AsyncJob"])
def test_asyncio_limit_is_the_stream_readers(entry, no_leftovers):
    async def read_line(**kwargs) -> int | str:
        process, job = await create_through(entry, LONG_LINE, stdout=subprocess.PIPE, **kwargs)
        try:
            return len(await process.stdout.readline())
        except ValueError as exc:
            return type(exc).__name__
        finally:
            await process.stop()
            if job is not None:
                await job.__aexit__(None, None, None)
    assert asyncio.run(read_line(limit=1 << 20)) == (200 << 10) + 1
    assert asyncio.run(read_line()) == "ValueError"  # asyncio's own 64 KiB


@pytest.mark.parametrize("entry", ["create_process", "AsyncJob"])
def test_an_async_process_names_its_reaper(entry, no_leftovers):
    async def main() -> tuple[int, int, int | None]:
        process, job = await create_through(entry, ["sleep", "60"])
        try:
            with open(f"/proc/{process.pid}/status") as status:
                parent = int(next(line for line in status if line.startswith("PPid:")).split()[1])
            return process.reaper_pid, parent, None if job is None else job.pid
        finally:
            await process.stop(grace=0)
            if job is not None:
                await job.__aexit__(None, None, None)
    reaper, parent, job_pid = asyncio.run(main())
    assert reaper == parent and job_pid in (None, reaper)


# A timeout after the job wrote: subprocess's TimeoutExpired carries what was read (output and stderr, bytes).
PARTIAL = ["sh", "-c", "echo partial; echo oops >&2; exec sleep 60"]


def timeout_through(entry: str) -> subprocess.TimeoutExpired:
    return timed_out_through(entry, PARTIAL, 1, capture_output=True, timeout=2)


@pytest.mark.parametrize("entry", ["run", "Job", "run_async", "AsyncJob"])
def test_a_timeout_carries_the_partial_output_and_the_events(entry, no_leftovers):
    expired = timeout_through(entry)
    assert (expired.output, expired.stderr) == (b"partial\n", b"oops\n")
    names = [name for name, _ in expired.events]
    assert "stopping" in names and names[-1] == "finished", names


# -- subprocess's exceptions: a missing program or working directory, a timeout in text mode --------------------

def start_error_through(entry: str, argv: list[str], **kwargs) -> OSError:
    async def in_asyncio() -> None:
        if entry == "run_async":
            await sandbox.run_async(argv, **kwargs)
        elif entry == "create_process":
            await sandbox.create_process(argv, **kwargs)
        else:
            async with sandbox.AsyncJob() as job:
                await job.create_process(argv, **kwargs)

    with pytest.raises(OSError) as raised:
        if entry == "run":
            sandbox.run(argv, **kwargs)
        elif entry == "Popen":
            sandbox.Popen(argv, **kwargs)
        elif entry == "Job":
            with sandbox.Job() as job:
                job.run(argv, **kwargs)
        else:
            asyncio.run(in_asyncio())
    return raised.value


def subprocess_error(argv: list[str], **kwargs) -> OSError:
    with pytest.raises(OSError) as raised:
        subprocess.run(argv, **kwargs)
    return raised.value


@pytest.mark.parametrize("entry", API_ENTRY_POINTS)
@pytest.mark.parametrize("case", ["program", "cwd", "not executable"])
def test_a_start_failure_is_subprocesss_oserror(entry, case, tmp_path, no_leftovers):
    argv, kwargs = {"program": (["no-such-program-here"], {}),
                    "cwd": (["true"], {"cwd": str(tmp_path / "missing")}),
                    "not executable": ([str(tmp_path)], {})}[case]
    ours, theirs = start_error_through(entry, argv, **kwargs), subprocess_error(argv, **kwargs)
    assert isinstance(ours, type(theirs)) and isinstance(ours, sandbox.SandboxError)
    assert (ours.errno, ours.strerror, ours.filename) == (theirs.errno, theirs.strerror, theirs.filename)


@pytest.mark.parametrize(("case", "status", "line"), [
    ("program", 127, "no-such-program-here: command not found"),
    ("cwd", 125, "cannot change to directory {missing}: No such file or directory"),
    ("not executable", 126, "{tmp}: cannot execute: is a directory")])
def test_the_command_reports_a_start_failure_in_one_line_and_the_shells_status(case, status, line, tmp_path):
    missing = tmp_path / "missing"
    words = {"program": ["--", "no-such-program-here"], "cwd": ["--cwd", str(missing), "--", "true"],
             "not executable": ["--", str(tmp_path)]}[case]
    result = subprocess.run([CLI, *words], capture_output=True, text=True, timeout=60)
    shown = line.format(missing=missing, tmp=tmp_path)
    assert (result.returncode, result.stderr) == (status, f"sandboxed-run: {shown}\n")


def text_timeout_through(entry: str) -> subprocess.TimeoutExpired:
    with pytest.raises(subprocess.TimeoutExpired) as expired:
        if entry == "subprocess":
            subprocess.run(PARTIAL, capture_output=True, text=True, timeout=2)
        elif entry == "run":
            sandbox.run(PARTIAL, capture_output=True, text=True, timeout=2, grace=1)
        elif entry == "Popen":
            with sandbox.Popen(PARTIAL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, grace=1) as p:
                try:
                    p.communicate(timeout=2)
                finally:
                    p.stop()
        else:
            with sandbox.Job(grace=1) as job:
                job.run(PARTIAL, capture_output=True, text=True, timeout=2)
    return expired.value


@pytest.mark.parametrize("entry", ["run", "Popen", "Job"])
def test_a_timeouts_output_stays_bytes_in_text_mode(entry, no_leftovers):
    ours, theirs = text_timeout_through(entry), text_timeout_through("subprocess")
    assert (ours.output, ours.stderr) == (theirs.output, theirs.stderr) == (b"partial\n", b"oops\n")


@pytest.mark.parametrize("entry", ["Popen", "Job"])
@pytest.mark.parametrize("stdout", [None, subprocess.PIPE])
def test_communicate_after_the_job_ended_with_its_input_unwritten(entry, stdout, no_leftovers):
    def communicate(factory) -> tuple:
        process = factory(["true"], stdin=subprocess.PIPE, stdout=stdout)
        process.wait()
        return process.communicate(b"x" * (1 << 20))
    expected = communicate(subprocess.Popen)
    if entry == "Popen":
        assert communicate(sandbox.Popen) == expected
    else:
        with sandbox.Job() as job:
            assert communicate(job.Popen) == expected


@pytest.mark.parametrize("entry", ["Popen", "Job", "create_process"])
@pytest.mark.parametrize("number", [999, -5, 65])
def test_a_number_that_is_no_signal_is_refused_as_os_kill_refuses_it(entry, number, no_leftovers):
    """It reached the reaper, whose os.kill raised: PID 1 died, and the job with it, without its grace period."""
    with subprocess.Popen(["sleep", "60"]) as plain:
        with pytest.raises(OSError) as expected:
            plain.send_signal(number)
        plain.kill()
    argv = ["sh", "-c", "trap 'exit 3' TERM; echo ready; sleep 60 & wait"]

    def refused(process) -> None:
        with pytest.raises(OSError) as raised:
            process.send_signal(number)
        assert raised.value.errno == expected.value.errno
        process.send_signal(0)  # nothing, as os.kill(pid, 0)
        process.terminate()  # and the job still ends by its trap: its PID 1 lives

    if entry == "Popen":
        with sandbox.Popen(argv, stdout=subprocess.PIPE) as process:
            assert process.stdout.readline() == b"ready\n"
            refused(process)
            assert process.wait(60) == 3
    elif entry == "Job":
        with sandbox.Job() as job, job.Popen(argv, stdout=subprocess.PIPE) as process:
            assert process.stdout.readline() == b"ready\n"
            refused(process)
            assert process.wait(60) == 3
    else:
        async def main() -> int:
            process = await sandbox.create_process(argv, stdout=subprocess.PIPE)
            assert await asyncio.wait_for(process.stdout.readline(), 60) == b"ready\n"
            refused(process)
            return await asyncio.wait_for(process.wait(), 60)
        assert asyncio.run(main()) == 3


# -- subprocess.Popen's keywords, through every entry point: subprocess's meaning, or a refusal that says why -------

KEYWORD_ENTRIES = ["run", "Popen", "Job.run", "Job.Popen", "run_async", "create_process", "AsyncJob.run"]


def output_through(entry: str, args, **kwargs) -> bytes:
    """The job's standard output, through one entry point (exit status 0 checked)."""
    if entry == "run":
        return sandbox.run(args, capture_output=True, check=True, timeout=60, **kwargs).stdout
    if entry in ("Popen", "Job.Popen"):
        with contextlib.ExitStack() as stack:
            factory = sandbox.Popen if entry == "Popen" else stack.enter_context(sandbox.Job()).Popen
            process = stack.enter_context(factory(args, stdout=subprocess.PIPE, **kwargs))
            out, _ = process.communicate(timeout=60)
            assert process.returncode == 0
            return out
    if entry == "Job.run":
        with sandbox.Job() as job:
            return job.run(args, capture_output=True, check=True, timeout=60, **kwargs).stdout

    async def main() -> bytes:
        if entry == "run_async":
            return (await sandbox.run_async(args, capture_output=True, check=True, timeout=60, **kwargs)).stdout
        if entry == "create_process":
            process = await sandbox.create_process(args, stdout=subprocess.PIPE, **kwargs)
            out, _ = await asyncio.wait_for(process.communicate(), 60)
            assert process.returncode == 0
            return out
        async with sandbox.AsyncJob() as job:
            return (await job.run(args, capture_output=True, check=True, timeout=60, **kwargs)).stdout
    return asyncio.run(main())


IDS = "import os; print(os.getpgid(0) == os.getpid(), os.getsid(0) == os.getpid())"
PIPE_SIZE = "import fcntl; print(fcntl.fcntl(1, fcntl.F_GETPIPE_SZ))"
ACCEPTED = {
    "executable": (["named-so", "-c", "echo $0"], {"executable": "sh"}),
    "executable with shell": ("echo $0", {"shell": True, "executable": "/bin/bash"}),
    "start_new_session": (["python3", "-c", IDS], {"start_new_session": True}),
    "process_group": (["python3", "-c", IDS], {"process_group": 0}),
    "neither": (["python3", "-c", IDS], {}),
    "pipesize": (["python3", "-c", PIPE_SIZE], {"pipesize": 1 << 20}),
    "defaults": (["echo", "ok"], {"close_fds": True, "restore_signals": True, "preexec_fn": None, "startupinfo": None,
                                  "creationflags": 0, "bufsize": 0, "process_group": None, "pipesize": -1}),
}


@pytest.mark.parametrize("entry", KEYWORD_ENTRIES)
@pytest.mark.parametrize("case", ACCEPTED)
def test_subprocess_keywords_mean_what_they_mean_to_subprocess(entry, case, no_leftovers):
    args, kwargs = ACCEPTED[case]
    expected = subprocess.run(args, capture_output=True, check=True, timeout=60, **kwargs).stdout
    assert output_through(entry, args, **kwargs) == expected


def not_a_hook() -> None:
    pass


VARIES = "subprocess's answer depends on the Python version"
REFUSED = {
    "close_fds": ({"close_fds": False}, TypeError, "pass_fds"),
    "preexec_fn": ({"preexec_fn": not_a_hook}, TypeError, "reaper"),
    "restore_signals": ({"restore_signals": False}, TypeError, "default action"),
    "startupinfo": ({"startupinfo": object()}, ValueError, None),
    "creationflags": ({"creationflags": 0x200}, ValueError, None),
    "path-like with shell": ({"shell": True}, TypeError, None),
    # Beyond a pid_t, libc took only the low bits: 2**32 made a new group, 2**32 + 2 joined group 2.
    # subprocess refuses it on 3.11 and 3.13 (in other words) but 3.12's takes the low bits: we
    # refuse on every version, with 3.11's words.
    "process_group beyond a pid_t": ({"process_group": 2**32}, OverflowError, VARIES),
}


@pytest.mark.parametrize("entry", KEYWORD_ENTRIES)
@pytest.mark.parametrize("case", REFUSED)
def test_subprocess_keywords_that_cannot_apply_are_refused_saying_why(entry, case, no_leftovers):
    kwargs, kind, reason = REFUSED[case]
    args = pathlib.Path("/bin/true") if case == "path-like with shell" else ["true"]
    with pytest.raises(kind) as ours:
        output_through(entry, args, **kwargs)
    if reason is None:  # subprocess refuses it too: the same words
        with pytest.raises(kind) as theirs:
            subprocess.run(args, **kwargs)
        assert str(ours.value) == str(theirs.value)
    elif reason is VARIES:
        assert str(ours.value) == "signed integer is greater than maximum"
    else:
        assert "not supported" in str(ours.value) and reason in str(ours.value)


@pytest.mark.parametrize("entry", KEYWORD_ENTRIES)
@pytest.mark.parametrize("modes", [{"text": True, "universal_newlines": False},
                                   {"text": False, "universal_newlines": True}])
def test_text_and_universal_newlines_that_disagree_are_refused_as_subprocess_refuses_them(entry, modes, no_leftovers):
    if entry in ("run_async", "create_process", "AsyncJob.run"):
        async def theirs() -> None:
            await asyncio.create_subprocess_exec("true", **modes)
        with pytest.raises(ValueError) as expected:
            asyncio.run(theirs())
    else:
        with pytest.raises(subprocess.SubprocessError) as expected:
            subprocess.run(["true"], **modes)
    with pytest.raises(expected.type) as ours:
        output_through(entry, ["true"], **modes)
    assert type(ours.value) is expected.type and str(ours.value) == str(expected.value)


@pytest.mark.parametrize("entry", ["run", "Popen", "Job", "run_async", "create_process", "AsyncJob"])
def test_umask_minus_one_is_subprocesss_leave_it(entry, no_leftovers):
    old = os.umask(0o027)
    try:
        if entry in ("Job", "AsyncJob"):
            async def in_async_job() -> bytes:
                async with sandbox.AsyncJob(umask=-1) as job:
                    return (await job.run(["sh", "-c", "umask"], capture_output=True)).stdout
            if entry == "AsyncJob":
                out = asyncio.run(in_async_job())
            else:
                with sandbox.Job(umask=-1) as job:
                    out = job.run(["sh", "-c", "umask"], capture_output=True).stdout
        else:
            out = output_through(entry, ["sh", "-c", "umask"], umask=-1)
    finally:
        os.umask(old)
    assert out == b"0027\n"


@pytest.mark.parametrize("entry", ["Popen", "Job.Popen"])
def test_bufsize_shapes_our_pipes_file_objects_as_subprocesss(entry, no_leftovers):
    with contextlib.ExitStack() as stack:
        factory = sandbox.Popen if entry == "Popen" else stack.enter_context(sandbox.Job()).Popen
        pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE}
        if entry == "Popen":
            unbuffered = stack.enter_context(factory(["cat"], 0, **pipes))  # Popen's second positional argument
        else:
            unbuffered = stack.enter_context(factory(["cat"], bufsize=0, **pipes))
        lines = stack.enter_context(factory(["cat"], bufsize=1, text=True, **pipes))
        default = stack.enter_context(factory(["cat"], **pipes))
        plain_text = stack.enter_context(factory(["cat"], text=True, **pipes))
        assert isinstance(unbuffered.stdout, io.FileIO) and isinstance(unbuffered.stdin, io.FileIO)
        assert lines.stdin.line_buffering and not plain_text.stdin.line_buffering
        assert isinstance(default.stdout, io.BufferedReader)
        assert [p.communicate("x")[0] if p is lines else p.communicate(b"x")[0]
                for p in (unbuffered, lines, default)] == [b"x", "x", b"x"]
        plain_text.communicate("")


@pytest.mark.parametrize("entry", ["create_process", "AsyncJob"])
def test_asyncio_takes_bufsize_0_alone_as_asyncio_does(entry, no_leftovers):
    async def main() -> None:
        process, job = await create_through(entry, ["true"], bufsize=-1)
        await process.wait()  # not reached when refused
        if job is not None:
            await job.__aexit__(None, None, None)
    with pytest.raises(ValueError) as refused:
        asyncio.run(main())
    assert str(refused.value) == asyncio_refusal(bufsize=-1)


def test_a_new_session_is_a_group_the_caller_signals_with_killpg(no_leftovers):
    """The job's main process leads its own group (and session): os.killpg(process.pid, ...) from outside reaches it
    and its children, as with subprocess; our own process group's signals no longer do."""
    argv = ["sh", "-c", "sleep 60 & echo $!; wait"]
    with sandbox.Popen(argv, stdout=subprocess.PIPE, start_new_session=True, grace=5) as process:
        assert process.stdout.readline().strip() == b"3"  # the sleep, in the job's PID namespace
        assert os.getpgid(process.pid) == os.getsid(process.pid) == process.pid
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(60) == -signal.SIGTERM


def test_popen_is_subscriptable_as_subprocesss():
    assert sandbox.Popen[bytes].__origin__ is sandbox.Popen
    with sandbox.Job() as job:
        assert type(job.Popen(["true"]))[str].__args__ == (str,)


@pytest.mark.parametrize("pgroup", [2**32, 2**32 + 2])
def test_the_reaper_refuses_a_process_group_beyond_a_pid_t_sent_on_the_raw_wire(pgroup, no_leftovers):
    """A Spawn written on the server's channel, past the API's checks: the job does not start in the group libc's
    cut of the number names (a new one, or group 2), the sandbox says why in one line."""
    from sandbox.api import spawner
    from sandboxed_run_helpers.shared import command, wire
    from sandboxed_run_helpers.shared.options import SandboxSpec

    cmd = command.command([b"true"], dict(os.environb), b"/", pgroup=pgroup)
    order = wire.Order(cmd, SandboxSpec.build({}), os.getpgrp(), "socket", (False, False, False), None)
    client = spawner.new_client(wire.Spawn(order, ()), [])
    try:
        with pytest.raises(sandbox.SandboxError, match=f"process_group={pgroup}: not a process group ID"):
            client.wait_started()
        client.wait()
    finally:
        client.close()


@pytest.mark.parametrize("refused", [{"bufsize": 2**70}, {"encoding": "no-such-codec"}])
@pytest.mark.parametrize("entry", ["Popen", "Job.Popen"])
def test_pipes_whose_file_objects_cannot_be_made_are_all_closed(entry, refused, no_leftovers):
    with contextlib.ExitStack() as stack:
        factory = sandbox.Popen if entry == "Popen" else stack.enter_context(sandbox.Job()).Popen
        before = set(os.listdir("/proc/self/fd"))
        with pytest.raises((OverflowError, LookupError)):
            factory(["true"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **refused)
        assert set(os.listdir("/proc/self/fd")) == before

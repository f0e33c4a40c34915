"""asyncio for sandboxes: run_async, create_process, AsyncProcess and AsyncJob.

We wait on the reaper's socket and pidfd with loop.add_reader, never with asyncio's subprocess
transport (which SIGKILLs the child when it closes). Cancellation follows trio's run_process: a
shielded escalation (deliver_cancel) runs until every process of the job is gone, and only then
does the cancellation go on. The default escalation asks the reaper to stop the job, which sends
the stop signal unless a Ctrl+C from the terminal already reached the job: then the job's own
cleanup gets the grace period with nothing on top.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import subprocess
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from sandboxed_run_helpers.shared import linux, wire
from sandboxed_run_helpers.shared.options import check_grace
from sandboxed_run_helpers.shared.usage import Usage

from ..client import ReaperClient
from . import spawner
from .calling import call_argv, call_outcome, channel, payload
from .holding import HoldsASandbox
from .job import Job, JobProcess
from .keywords import COMMAND_KEYWORDS, SANDBOX_KEYWORDS, with_options
from .popen import DEADLINE, CompletedProcess, Popen, run_streams

if TYPE_CHECKING:
    from typing import Unpack

    from .typed import (
        Args,
        Duration,
        JobPopenKeywords,
        JobRunKeywords,
        PopenKeywords,
        RunKeywords,
        SandboxOptions,
    )

_P = ParamSpec("_P")
_R = TypeVar("_R")

DeliverCancel = Callable[["AsyncProcess"], Awaitable[None]]
STREAM_LIMIT = 2**16  # asyncio.streams' _DEFAULT_LIMIT: the most a StreamReader holds unless limit= says


async def _readable(fd: int, deadline: float | None = None) -> bool:
    """Until fd is readable (True) or the deadline (the loop's time.monotonic()) passed (False)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[bool] = loop.create_future()
    loop.add_reader(fd, _settle, ready, True)
    timer = loop.call_at(deadline, _settle, ready, False) if deadline is not None else None
    try:
        return await ready
    finally:
        loop.remove_reader(fd)
        if timer is not None:
            timer.cancel()


def _settle(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)


async def _wait_client(client: ReaperClient) -> None:
    """Until every process of the sandbox is gone: the client's own state machine, driven by the loop (and
    woken at the client's kill_at, for a reaper that does not end a stop in time). A thread may wait on the
    same client (a detached job's): the descriptors the loop watches stay open until we are done."""
    client.hold()
    try:
        while (fd := client.waiting_on()) is not None:
            if await _readable(fd, client.kill_at):
                client.advance()
            client.watch()
    finally:
        client.release()


class AsyncProcess(HoldsASandbox):
    """A sandboxed command for asyncio, shaped like asyncio.subprocess.Process."""

    def __init__(self, popen: Popen) -> None:
        self._popen = popen
        self.pid: int = popen.pid
        self.stdin: asyncio.StreamWriter | None = None
        self.stdout: asyncio.StreamReader | None = None
        self.stderr: asyncio.StreamReader | None = None

    @classmethod
    async def _wrap(cls, popen: Popen, limit: int = STREAM_LIMIT) -> AsyncProcess:
        self = cls(popen)
        loop = asyncio.get_running_loop()
        if popen.stdin is not None:
            protocol = asyncio.StreamReaderProtocol(asyncio.StreamReader(limit))
            transport, _ = await loop.connect_write_pipe(lambda: protocol, popen.stdin)
            self.stdin = asyncio.StreamWriter(transport, protocol, None, loop)
        for name in ("stdout", "stderr"):
            pipe = getattr(popen, name)
            if pipe is not None:
                reader = asyncio.StreamReader(limit)
                await loop.connect_read_pipe(functools.partial(asyncio.StreamReaderProtocol, reader), pipe)
                setattr(self, name, reader)
        return self

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    @property
    def client(self) -> ReaperClient:
        return self._popen.client

    @property
    def usage(self) -> Usage | None:
        """As Popen.usage: what the sandbox (or this command of a job) used, once it is over."""
        return self._popen.usage

    async def wait(self) -> int:
        await _wait_client(self._popen.client)
        return self._popen.wait()

    async def communicate(self, input: bytes | None = None) -> tuple[bytes | None, bytes | None]:
        out: list[bytes] = []
        err: list[bytes] = []
        await self._communicate(input, out, err)
        return (None if self.stdout is None else b"".join(out)), (None if self.stderr is None else b"".join(err))

    async def _communicate(self, input: bytes | None, out: list[bytes], err: list[bytes]) -> None:
        """communicate(), keeping what it read in out and err as it comes: a timeout's TimeoutExpired has it."""
        async def feed() -> None:
            if self.stdin is None:
                return
            try:
                if input:
                    self.stdin.write(input)
                    await self.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                pass
            self.stdin.close()

        await asyncio.gather(feed(), self._drain(out, err))
        await self.wait()

    async def _drain(self, out: list[bytes], err: list[bytes]) -> None:
        async def read(stream: asyncio.StreamReader | None, chunks: list[bytes]) -> None:
            while stream is not None and (chunk := await stream.read(1 << 16)):
                chunks.append(chunk)

        await asyncio.gather(read(self.stdout, out), read(self.stderr, err))

    def send_signal(self, sig: int) -> None:
        self._popen.send_signal(sig)

    def terminate(self) -> None:
        self._popen.terminate()

    def kill(self) -> None:
        self._popen.kill()

    async def stop(self, grace: Duration | None = None) -> int:
        """Stop every process of the sandbox (stop signal, grace, SIGKILL) and wait for the end."""
        grace = check_grace(grace)
        if self._popen.returncode is None:
            self._popen.stop_for(wire.StopReason.REQUESTED, grace)
        return await self.wait()

    def stop_for(self, reason: wire.StopReason, after_interrupt: bool = False) -> None:
        """Ask for the stop without waiting (for a deliver_cancel of your own: then await wait())."""
        self._popen.stop_for(reason, after_interrupt=after_interrupt)

    async def __aenter__(self) -> AsyncProcess:
        return self

    def detach(self) -> None:
        """As Popen.detach(): the job runs on by itself (until it ends, or this program does); leaving
        `async with` or dropping this object no longer stops it. wait() still works."""
        self._popen.detach()

    @property
    def detached(self) -> bool:
        """Whether detach() let the job run on by itself."""
        return self._popen.detached

    async def __aexit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        """As Popen's `with`: stop the job if it still runs (after a Ctrl+C or a cancellation, with no stop
        signal on top of one that reached it), and wait until every process is gone, shielded; after
        detach(), only close our end of its stdin."""
        if self._popen.detached:
            if self.stdin is not None:
                self.stdin.close()
            return
        if self._popen.poll() is None:
            if exc_type in (KeyboardInterrupt, asyncio.CancelledError):
                self.stop_for(wire.StopReason.CANCELLED, after_interrupt=True)
            else:
                self.stop_for(wire.StopReason.CONTEXT_EXITED)
        await _to_the_end(self.wait())


async def default_deliver_cancel(process: AsyncProcess) -> None:
    """Stop the job as its stop signal and grace say; no signal if a terminal's Ctrl+C reached it already."""
    process.stop_for(wire.StopReason.CANCELLED, after_interrupt=True)


async def _to_the_end(work: Awaitable[Any]) -> Any:
    """Await work to its end, whatever cancellations arrive meanwhile (they are the caller's to raise)."""
    task = asyncio.ensure_future(work)
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            continue
    return task.result()


async def _start(start: Callable[[], Popen], limit: int = STREAM_LIMIT) -> AsyncProcess:
    """Start a process in a worker thread (the start blocks). A cancellation meanwhile waits for the start
    to end, stops whatever started (as a cancelled wait would) and then goes on: nothing is left running
    and no descriptor of ours stays open."""
    # For the loop's thread, whose nice its jobs get, as asyncio's subprocesses would.
    started = asyncio.get_running_loop().run_in_executor(None, spawner.on_behalf_of(threading.get_native_id(), start))
    try:
        popen = await asyncio.shield(started)
    except asyncio.CancelledError:
        try:
            popen = await _to_the_end(started)
        except Exception:  # noqa: BLE001 - the start failed; the cancellation is what the caller gets
            raise asyncio.CancelledError from None
        await _shielded(AsyncProcess(popen), default_deliver_cancel)
        raise
    try:
        return await AsyncProcess._wrap(popen, limit)
    except BaseException:
        await _shielded(AsyncProcess(popen), default_deliver_cancel)
        popen.close_pipes()
        raise


async def _shielded(process: AsyncProcess, deliver_cancel: DeliverCancel) -> None:
    """Run the escalation, then wait until every process of the job is gone, shielded."""

    async def escalate() -> None:
        await deliver_cancel(process)
        await process.wait()

    await _to_the_end(escalate())


@with_options(*SANDBOX_KEYWORDS, passes_to=Popen.__init__)
async def create_process(args: Args, *, limit: int = STREAM_LIMIT, **options: Unpack[PopenKeywords]) -> AsyncProcess:
    """Start a command in its own sandbox; same arguments as sandbox.Popen, and asyncio's limit (the most its
    StreamReaders hold: a longer line is a ValueError for readline()). Bytes only, as asyncio's: text=True,
    universal_newlines=True, encoding= or errors= is a ValueError."""
    _bytes_only(options)
    return await _start(lambda: Popen(args, **options), limit)


def _bytes_only(options: Mapping[str, Any]) -> None:
    """asyncio's subprocesses speak bytes alone, unbuffered: its ValueErrors, in its order."""
    if options.get("universal_newlines"):
        raise ValueError("universal_newlines must be False")
    if options.get("bufsize", 0) != 0:
        raise ValueError("bufsize must be 0")
    if options.get("text"):
        raise ValueError("text must be False")
    for name in ("encoding", "errors"):
        if options.get(name) is not None:
            raise ValueError(f"{name} must be None")


async def _run(start: Callable[..., Awaitable[AsyncProcess]], args: Any, stdin: Any, input: bytes | None,
               stdout: Any, stderr: Any, capture_output: bool, check: bool, timeout: object,
               deliver_cancel: DeliverCancel | None, options: Mapping[str, Any]) -> CompletedProcess[Any]:
    stdin, stdout, stderr, timeout = run_streams(stdin, input, stdout, stderr, capture_output, timeout)
    _bytes_only(options)
    deadline = linux.deadline_after(timeout)
    if start is create_process and deadline is not None:
        options = {**options, DEADLINE: deadline}  # the reaper enforces it too
    process = await start(args, stdin=stdin, stdout=stdout, stderr=stderr, **options)
    chunks: tuple[list[bytes], list[bytes]] = ([], [])
    try:
        try:
            await asyncio.wait_for(process._communicate(input, *chunks), linux.time_left(deadline))
            if wire.StopReason.TIMEOUT in process._popen.client.stop_reasons:
                raise TimeoutError  # the reaper stopped it at our deadline
        except TimeoutError:
            await _shielded(process, _stop_for_timeout)
            await _to_the_end(process._drain(*chunks))  # the rest, up to the end its last process left
            out, err = _joined(process, chunks)
            expired = subprocess.TimeoutExpired(args, timeout, out, err)  # type: ignore[arg-type]
            expired.events = process.events  # type: ignore[attr-defined]
            expired.usage = process.usage  # type: ignore[attr-defined]  # what it used until it was stopped
            raise expired from None
    except asyncio.CancelledError:
        await _shielded(process, deliver_cancel or default_deliver_cancel)
        raise
    code = process.returncode
    assert code is not None  # _communicate() waited for the end
    out, err = _joined(process, chunks)
    if check and code:
        error = subprocess.CalledProcessError(code, args, out, err)
        error.events = process.events  # type: ignore[attr-defined]
        error.usage = process.usage  # type: ignore[attr-defined]
        raise error
    return CompletedProcess(args, code, out, err, process.events, process.usage)


def _joined(process: AsyncProcess, chunks: tuple[list[bytes], list[bytes]]) -> tuple[bytes | None, bytes | None]:
    out, err = chunks
    return (None if process.stdout is None else b"".join(out)), (None if process.stderr is None else b"".join(err))


async def _stop_for_timeout(process: AsyncProcess) -> None:
    process.stop_for(wire.StopReason.TIMEOUT)


@with_options(*SANDBOX_KEYWORDS, passes_to=Popen.__init__)
async def run_async(args: Args, *, stdin: Any = None, input: bytes | None = None, stdout: Any = None,
                    stderr: Any = None, capture_output: bool = False, check: bool = False,
                    timeout: Duration | None = None, deliver_cancel: DeliverCancel | None = None,
                    **options: Unpack[RunKeywords]) -> CompletedProcess[Any]:
    """sandbox.run for asyncio. On cancellation deliver_cancel(process) runs shielded (default: the
    stop signal unless a Ctrl+C already reached the job, grace, SIGKILL), then the job is waited for,
    then the cancellation goes on."""
    return await _run(create_process, args, stdin, input, stdout, stderr, capture_output, check, timeout,
                      deliver_cancel, options)


class AsyncJob(HoldsASandbox):
    """sandbox.Job for asyncio: `async with sandbox.AsyncJob(tmpfs=["/mnt"]) as job: await job.run([...])`."""

    @with_options(*SANDBOX_KEYWORDS)
    def __init__(self, **options: Unpack[SandboxOptions]) -> None:
        self.job = Job(**options)

    async def __aenter__(self) -> AsyncJob:
        await asyncio.get_running_loop().run_in_executor(
            None, spawner.on_behalf_of(threading.get_native_id(), self.job.start))
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is asyncio.CancelledError:
            await self._stop(None, wire.StopReason.CANCELLED, after_interrupt=True)
        elif exc_type is KeyboardInterrupt:
            await self._stop(None, wire.StopReason.INTERRUPTED, after_interrupt=True)
        else:
            await self._stop(None, wire.StopReason.CONTEXT_EXITED)

    @property
    def client(self) -> ReaperClient:
        return self.job.client

    @property
    def pid(self) -> int:
        """As Job.pid: the reaper's PID."""
        return self.reaper_pid

    @property
    def usage(self) -> Usage | None:
        """As Job.usage: what the whole job used, once it is over."""
        return self.job.usage

    def namespace_path(self, kind: str = "mnt") -> str:
        return self.job.namespace_path(kind)

    async def stop(self, grace: Duration | None = None) -> None:
        await self._stop(check_grace(grace), wire.StopReason.REQUESTED)

    async def _stop(self, grace: float | None, reason: wire.StopReason, after_interrupt: bool = False) -> None:
        if not self.job.started:
            return
        self.job.stop_for(reason, grace, after_interrupt)
        try:
            await _to_the_end(_wait_client(self.job.client))
        finally:
            self.job.wrap_up()

    @with_options(*COMMAND_KEYWORDS, passes_to=JobProcess.__init__)
    async def create_process(self, args: Args, *, limit: int = STREAM_LIMIT,
                             **options: Unpack[JobPopenKeywords]) -> AsyncProcess:
        """Start a command in the job; as sandbox.create_process, minus the sandbox's own options."""
        _bytes_only(options)
        return await _start(lambda: self.job.Popen(args, **options), limit)

    @with_options(*COMMAND_KEYWORDS, passes_to=JobProcess.__init__)
    async def run(self, args: Args, *, stdin: Any = None, input: bytes | None = None, stdout: Any = None,
                  stderr: Any = None, capture_output: bool = False, check: bool = False,
                  timeout: Duration | None = None, deliver_cancel: DeliverCancel | None = None,
                  **options: Unpack[JobRunKeywords]) -> CompletedProcess[Any]:
        return await _run(self.create_process, args, stdin, input, stdout, stderr, capture_output, check, timeout,
                          deliver_cancel, options)

    async def call(self, func: Callable[_P, _R], /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """job.call for asyncio: func runs in a fresh Python process inside the job."""
        loop = asyncio.get_running_loop()
        data, script = payload(func, args, kwargs)
        ours, theirs = channel()
        try:
            process = await _start(lambda: self.job.Popen(call_argv(script, theirs.fileno()),
                                                            pass_fds=(theirs.fileno(),)))
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        with ours:
            try:
                await loop.sock_sendall(ours, data)
                ours.shutdown(socket.SHUT_WR)
                chunks = []
                while chunk := await loop.sock_recv(ours, 1 << 16):
                    chunks.append(chunk)
                await process.wait()
            except asyncio.CancelledError:
                await _shielded(process, default_deliver_cancel)
                raise
            except ConnectionResetError:
                chunks = []
                await process.wait()
        return call_outcome(func, chunks, process.returncode)

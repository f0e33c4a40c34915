"""sandbox.Popen and sandbox.run: subprocess's interface, with a sandbox's guarantees.

The shape follows trio's run_process: start, wait; on Ctrl+C or a timeout, an escalation that is
shielded from further interrupts and runs until every process of the sandbox is gone; then the
original exception. Unlike trio we never add a signal on top of a Ctrl+C: the terminal has
already given it to the job (same process group), and a second signal would cut its cleanup.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import io
import operator
import os
import select
import selectors
import signal
import subprocess
import threading
import time
import types
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any, Generic, TypeVar

from sandboxed_run_helpers.shared import linux, wire
from sandboxed_run_helpers.shared.errors import CHDIR_FAILED, CommandNotFound, NotExecutable, SandboxError
from sandboxed_run_helpers.shared.options import MAX_FD, check_grace, check_timeout, pass_fds
from sandboxed_run_helpers.shared.usage import Usage

from ..client import ReaperClient
from . import spawner
from .collect import not_started, wrap_up
from .holding import HoldsASandbox
from .keywords import SANDBOX_KEYWORDS, choose, with_options
from .process_keywords import ProcessSettings, command_of, text_mode

if TYPE_CHECKING:
    from typing import Unpack

    from .typed import Args, Duration, Events, RunKeywords, SandboxOptions, StrOrBytesPath

PIPE = subprocess.PIPE
# A keyword of run()'s own for Popen, not in its signature: the timeout's deadline (time.monotonic()).
DEADLINE = "_deadline"
STDOUT = subprocess.STDOUT
DEVNULL = subprocess.DEVNULL
_T = TypeVar("_T")
if TYPE_CHECKING:
    from typing_extensions import TypeVar as DefaultingTypeVar

    # Popen[bytes] and Popen[str] in annotations, as subprocess's; an unannotated Popen is Popen[Any].
    _Out = DefaultingTypeVar("_Out", default=Any)
else:
    _Out = TypeVar("_Out")
DEFAULT_SETTINGS = ProcessSettings(b"", False, -1, -1, False, -1)


class CompletedProcess(subprocess.CompletedProcess[_T]):
    """subprocess.CompletedProcess (an instance of it, for existing code), with what the sandbox adds:
    events, the run's lifecycle events ((name, fields), "finished" last), and usage, what it used
    (sandbox.Usage; None if its reaper could not say)."""

    events: Events
    usage: Usage | None

    def __init__(self, args: Any, returncode: int, stdout: _T | None = None, stderr: _T | None = None,
                 events: Events | None = None, usage: Usage | None = None) -> None:
        super().__init__(args, returncode, stdout, stderr)
        self.events = [] if events is None else events
        self.usage = usage


def _name_the_file(exc: SandboxError, args: Any, cwd: object) -> None:
    """The filename subprocess's OSError carries: the program it could not find or run, or the directory it
    could not enter."""
    if isinstance(exc, (CommandNotFound, NotExecutable)):
        exc.filename = args if isinstance(args, (str, bytes, os.PathLike)) else args[0]
    elif exc.message.startswith(CHDIR_FAILED):
        exc.filename = cwd


def passing(stdio: Sequence[int | None], passed: Sequence[int]) -> tuple[int | None, ...]:
    """The job's descriptors by number: stdio as 0, 1, 2, and each passed one under its own number (None: not
    given). OSError EBADF, as subprocess's, for a passed one that is not open."""
    if not passed:
        return tuple(stdio)
    slots: list[int | None] = [*stdio, *[None] * (max(passed) + 1 - len(stdio))]
    ours, our_pids = spawner.machinery(), spawner.machinery_pids()
    for fd in passed:
        try:
            st = os.fstat(fd)
        except OSError:
            raise OSError(errno.EBADF, f"pass_fds: {fd} is not an open file descriptor") from None
        if (st.st_dev, st.st_ino) in ours:
            raise ValueError(f"pass_fds: {fd} is the sandbox API's own socket (to its spawn server or a sandbox's "
                             "reaper): a job holding it could act as your program; pass your own descriptors")
        if linux.pidfd_target(fd) in our_pids:
            raise ValueError(f"pass_fds: {fd} is a pidfd of the sandbox API's own processes (a spawn server or a "
                             "sandbox's PID 1): a job holding it could signal them; pass your own descriptors")
        slots[fd] = fd
    return tuple(slots)


def present(stdio: Sequence[int | None]) -> tuple[tuple[bool, ...], list[int]]:
    """Which of the job's descriptors (0, 1, 2, ...) are given, and those given, in order."""
    return tuple(fd is not None for fd in stdio), [fd for fd in stdio if fd is not None]


def pass_fds_of(value: object) -> tuple[int, ...]:
    """pass_fds checked as subprocess takes it (a list of numbers; 0, 1, 2 are the job's stdio anyway)."""
    return () if value == () else pass_fds(value, "pass_fds")


class Popen(HoldsASandbox, Generic[_Out]):
    """A command running in its own sandbox, with subprocess.Popen's interface (Popen[bytes] and Popen[str] too).

    pid is the job's PID as the caller sees it. Leaving a `with` block stops the job (stop signal,
    grace, SIGKILL) if it still runs, and always waits until every process of the sandbox is gone;
    so does dropping the last reference to a Popen whose job still runs (its reaper takes the closed
    socket for its caller's death). detach() lets a job run on by itself instead, as subprocess's
    children do. Once the sandbox is gone (wait, poll, communicate, or leaving the block found it so),
    the on_exit hooks run, once, and the finished event comes last.

    Example::

        with sandbox.Popen(["rsync", "-a", "/data/", "/backup/"], tmpfs=["/tmp"]) as backup:
            ...  # leaving the block (an exception, a return) stops the backup: its EXIT trap runs
    """

    @with_options(*SANDBOX_KEYWORDS)
    def __init__(
        self,
        args: Args,
        bufsize: int = -1,
        executable: StrOrBytesPath | None = None,
        *,
        stdin: int | IO[Any] | None = None,
        stdout: int | IO[Any] | None = None,
        stderr: int | IO[Any] | None = None,
        env: Mapping[str, Any] | Mapping[bytes, Any] | None = None,
        cwd: str | bytes | os.PathLike[str] | os.PathLike[bytes] | None = None,
        shell: bool = False,
        text: bool | None = None,
        encoding: str | None = None,
        errors: str | None = None,
        universal_newlines: bool | None = None,
        pass_fds: Sequence[int] = (),
        close_fds: bool = True,
        preexec_fn: None = None,
        restore_signals: bool = True,
        start_new_session: bool = False,
        process_group: int | None = None,
        pipesize: int = -1,
        startupinfo: None = None,
        creationflags: int = 0,
        **options: Unpack[SandboxOptions],
    ) -> None:
        deadline = options.pop(DEADLINE, None)  # type: ignore[misc]  # run()'s timeout, the reaper's too
        passed = pass_fds_of(pass_fds)
        text = text_mode(text, universal_newlines, encoding, errors)
        chosen = choose(options)
        with not_started(chosen.on_event):
            cmd, settings = command_of(args, shell, env, cwd, text, bool(passed), dict(
                executable=executable, bufsize=bufsize, close_fds=close_fds, preexec_fn=preexec_fn,
                restore_signals=restore_signals, startupinfo=startupinfo, creationflags=creationflags,
                start_new_session=start_new_session, process_group=process_group, pipesize=pipesize),
                chosen.spec.root is not None)
        self.spec = chosen.spec

        def launch(stdio: tuple[int | None, ...]) -> ReaperClient:
            # lifeline "socket": we hold the reaper's socket; the spawn server is only its parent.
            flags, fds = present(stdio)
            order = wire.Order(cmd, chosen.spec, os.getpgrp(), "socket", flags, chosen.registry, deadline=deadline)
            with not_started(chosen.on_event):
                return spawner.new_client(wire.Spawn(order, chosen.on_exit), fds, chosen.on_event)

        self._start(args, (stdin, stdout, stderr), text, encoding, errors, launch, passed,
                    on_exit=chosen.on_exit, cwd=cwd, settings=settings, executable=executable)

    def _start(self, args: Any, stdio: tuple[int | IO[Any] | None, ...], text: bool | None, encoding: str | None,
               errors: str | None,
               launch: Callable[[tuple[int | None, ...]], ReaperClient], passed: Sequence[int] = (),
               on_exit: Sequence[str] = (), cwd: object = None, settings: ProcessSettings | None = None,
               executable: object = None) -> None:
        """Start the process through launch(descriptors) and wait until it runs (or raise why it does not)."""
        self.args = args
        self._on_exit = tuple(on_exit)
        self._wrapped_up = False
        self._detached = False
        self._settling = threading.RLock()
        self.returncode: int | None = None
        self.stdin: IO[Any] | None = None
        self.stdout: IO[Any] | None = None
        self.stderr: IO[Any] | None = None
        self._text = bool(text or encoding or errors)
        self._encoding = encoding
        self._errors = errors
        self._outputs: dict[int, list[bytes]] = {}
        self._input_view: memoryview | None = None
        self._settings = settings or DEFAULT_SETTINGS
        child_fds, to_close = self._stdio(*stdio)
        try:
            self.client: ReaperClient = launch(passing(child_fds, passed))
        except BaseException:
            self.close_pipes()
            raise
        finally:
            for fd in to_close:
                os.close(fd)
        try:
            self.client.wait_started()
        except KeyboardInterrupt:
            # Start-up interrupted: the job, if it started meanwhile, gets the SIGINT the terminal could
            # not give it yet; we wait for its end as after any Ctrl+C, then go on with the interrupt.
            self.client.relay(signal.SIGINT)
            self.client.stop(None, wire.StopReason.INTERRUPTED, after_interrupt=True)
            self.close_pipes()
            try:
                self.client.through_interrupts(self.client.wait)
            finally:
                self.client.close()
            raise
        except SandboxError as exc:
            # It could not start (127, 126, a mount refused): the sandbox ends at once; its hooks still run,
            # once, and the finished event comes, as the command does it.
            self.close_pipes()
            self.client.wait()
            self.client.close()
            self._wrapped_up = True
            wrap_up(self.client, self._on_exit, exc.exit_code, str(exc))
            _name_the_file(exc, args if executable is None else executable, cwd)
            raise
        except BaseException:
            self.close_pipes()
            self.client.close()
            raise
        self.pid: int = self.client.job_pid  # type: ignore[assignment]

    # -- plumbing ----------------------------------------------------------------------------------

    def _stdio(self, stdin: int | IO[Any] | None, stdout: int | IO[Any] | None, stderr: int | IO[Any] | None
               ) -> tuple[tuple[int | None, int | None, int | None], list[int]]:
        """The descriptors the job gets as 0, 1, 2, and the ones of ours to close once they are sent."""
        to_close: list[int] = []
        parent_ends: list[tuple[int, str, int]] = []

        def resolve(spec: int | IO[Any] | None, index: int) -> int | None:
            if spec is None:
                return index if linux.fd_is_open(index) else None
            if spec == PIPE:
                r, w = os.pipe()
                if self._settings.pipesize > 0:
                    try:
                        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, self._settings.pipesize)
                    except BaseException:
                        os.close(r)
                        os.close(w)
                        raise
                parent, child = (w, r) if index == 0 else (r, w)
                parent_ends.append((index, "wb" if index == 0 else "rb", parent))
                to_close.append(child)
                return child
            if spec == DEVNULL:
                fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
                to_close.append(fd)
                return fd
            if isinstance(spec, int):
                if spec < 0:
                    raise ValueError(f"invalid file descriptor {spec}")
                if spec > MAX_FD:
                    raise OSError(errno.EBADF, f"invalid file descriptor {spec}")
                return spec
            return spec.fileno()

        try:
            fds = [resolve(stdin, 0), resolve(stdout, 1)]
            fds.append(fds[1] if stderr == STDOUT else resolve(stderr, 2))
        except BaseException:
            for fd in to_close + [fd for _, _, fd in parent_ends]:
                os.close(fd)  # a bad argument after a good one: nothing of ours may stay open
            raise
        wrapped = 0
        try:
            for index, mode, fd in parent_ends:
                raw = open(fd, mode, buffering=self._settings.bufsize)
                wrapped += 1  # fd is the file object's now: closed with it
                setattr(self, ("stdin", "stdout", "stderr")[index], raw)
                if self._text:
                    raw = io.TextIOWrapper(raw, encoding=self._encoding, errors=self._errors,
                                           write_through=(index == 0),
                                           line_buffering=(index == 0 and self._settings.line_buffering))
                    setattr(self, ("stdin", "stdout", "stderr")[index], raw)
        except BaseException:
            # A bufsize open() refuses (2**70: OverflowError), an unknown encoding: no pipe end may stay open.
            self.close_pipes()
            self.stdin = self.stdout = self.stderr = None
            for fd in to_close + [fd for _, _, fd in parent_ends[wrapped:]]:
                os.close(fd)
            raise
        return (fds[0], fds[1], fds[2]), to_close

    def close_pipes(self) -> None:
        for stream in (self.stdin, self.stdout, self.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass

    @property
    def usage(self) -> Usage | None:
        """What the sandbox used (wall time, CPU, memory, ...: sandbox.Usage), once every process of it is gone;
        None before, or if its reaper could not say (it was killed)."""
        self.client.pump(0)
        return self.client.usage if self.returncode is not None or self.client.gone else None

    def _settle(self) -> int | None:
        client = self.client
        if client.forked_away:
            # A forked copy of the caller cannot learn the parent's job's status (nor take a lock a thread of the
            # parent held at the fork): 0, as subprocess's Popen says in a forked child (ECHILD).
            if self.returncode is None:
                self.returncode = 0
            return self.returncode
        with self._settling:  # poll and wait may race from several threads: the end is taken once
            if self.returncode is None and client.gone:
                returncode = _returncode_of(client)
                client.close()
                self._wrap_up()
                self.returncode = returncode
        return self.returncode

    def _wrap_up(self) -> None:
        """Once every process of the sandbox is gone: the on_exit hooks, then the finished event, once."""
        if self._wrapped_up:
            return
        self._wrapped_up = True
        wrap_up(self.client, self._on_exit, _returncode_of(self.client))

    # -- subprocess.Popen's interface ----------------------------------------------------------------

    def poll(self) -> int | None:
        if self.returncode is None and self.client.finished:
            self._settle()
        return self.returncode

    def wait(self, timeout: Duration | None = None) -> int:
        timeout = check_timeout(timeout)
        if self.returncode is None:
            if not self.client.wait(timeout):
                assert timeout is not None  # only a timeout ends the wait early
                raise subprocess.TimeoutExpired(self.args, timeout)
            self._settle()
        return self.returncode  # type: ignore[return-value]

    def send_signal(self, sig: int) -> None:
        """Send sig to the job's main process, if it still runs (never to a recycled PID). As os.kill: a number
        that is no signal is an OSError (EINVAL), 0 sends nothing."""
        sig = operator.index(sig)
        if not 0 <= sig <= signal.SIGRTMAX:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        if self.returncode is None and sig:
            self.client.signal(sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def stop(self, grace: Duration | None = None) -> int:
        """Stop every process of the sandbox: stop signal, grace seconds (default: the sandbox's), SIGKILL."""
        grace = check_grace(grace)
        if self.returncode is None:
            self.stop_for(wire.StopReason.REQUESTED, grace)
        return self._wait_shielded()

    def stop_for(self, reason: wire.StopReason, grace: float | None = None, after_interrupt: bool = False) -> None:
        """Ask for the stop, without waiting (for the sync and asyncio faces alike)."""
        self.client.stop(grace, reason, after_interrupt)

    def detach(self) -> None:
        """Let the job run on by itself, as subprocess's children do: leaving the `with` block no longer stops
        it or waits for it (the block closes our ends of its pipes, as subprocess's does), and neither does
        dropping this Popen. A thread of ours waits for the end meanwhile: the on_exit hooks run and the
        finished event comes when the job ends, and poll(), wait() and returncode keep working.

        The job still ends with this program: when our process exits, however it exits, its reaper takes
        that for its caller's death (stop signal, grace, SIGKILL). A job that must outlive its caller
        belongs to the command (``systemd-run sandboxed-run ...``), not to a Python object. A pipe of ours
        that nobody reads blocks the job once it is full, as with subprocess; a dropped Popen's pipes close.

        Example::

            sandbox.Popen(["sh", "-c", "sleep 60; touch /srv/done"]).detach()  # fire and forget
        """
        if self.client.forked_away:
            return  # the job is the parent's (see _settle)
        with self._settling:
            if self._detached or self.returncode is not None:
                return
            self._detached = True
        _DetachedEnds.watch_the_exit()
        # The thread holds the client, not this Popen: dropping the Popen then closes its pipes, as
        # subprocess's would, while the socket that keeps the job alive stays open.
        threading.Thread(target=_wait_detached, args=(self.client, weakref.ref(self), self._on_exit),
                         name=f"sandbox job {self.pid} (detached)", daemon=True).start()

    @property
    def detached(self) -> bool:
        """Whether detach() let the job run on by itself."""
        return self._detached

    def _wait_shielded(self) -> int:
        """Wait to the end even through Ctrl+C (each passed on as the terminal would); then re-raise it."""
        self.client.through_interrupts(self.wait)
        return self.returncode  # type: ignore[return-value]

    def communicate(self, input: bytes | str | None = None, timeout: Duration | None = None) -> tuple[Any, Any]:
        timeout = check_timeout(timeout)
        deadline = linux.deadline_after(timeout)
        if input is not None and self._input_view is None:
            if self.stdin is None:
                raise ValueError("communicate() with input needs stdin=PIPE")
            data = input.encode(self._encoding or "utf-8", self._errors or "strict") if isinstance(input, str) \
                else input
            self._input_view = memoryview(data)
        streams = [s for s in (self.stdin, self.stdout, self.stderr) if s is not None and not s.closed]
        if streams:
            self._pump_streams(deadline, timeout)
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            self.wait(remaining)
        except subprocess.TimeoutExpired:
            assert timeout is not None  # remaining is None without one: then wait() waits to the end
            raise subprocess.TimeoutExpired(self.args, timeout, *self._collected(raw=True)) from None
        return self._collected(final=True)

    def _pump_streams(self, deadline: float | None, timeout: float | None) -> None:
        with selectors.PollSelector() as selector:
            if self.stdin is not None and not self.stdin.closed:
                if self._input_view is None or not len(self._input_view):
                    self.stdin.close()
                else:
                    self.stdin.flush()
                    selector.register(self.stdin.fileno(), selectors.EVENT_WRITE, self.stdin)
            for stream in (self.stdout, self.stderr):
                if stream is not None and not stream.closed:
                    self._outputs.setdefault(id(stream), [])
                    selector.register(stream.fileno(), selectors.EVENT_READ, stream)
            while selector.get_map():
                if deadline is not None and deadline <= time.monotonic():
                    assert timeout is not None  # the deadline is the timeout's
                    raise subprocess.TimeoutExpired(self.args, timeout, *self._collected(raw=True))
                self.client.watch()  # a reaper that does not end a stop in time: its pipes end with it
                kill_at = self.client.kill_at
                wake = deadline if kill_at is None else min(kill_at, deadline or kill_at)
                for key, _ in selector.select(linux.wait_seconds(wake)):
                    stream = key.data
                    if stream is self.stdin:
                        view = self._input_view
                        assert stream is not None and view is not None  # registered with input left to send
                        try:
                            # No more than a poll's POLLOUT promises room for: a larger write to a blocking pipe
                            # waits for the job to read, and a job that first fills its stdout or stderr never does.
                            sent = os.write(key.fd, view[:select.PIPE_BUF])
                            self._input_view = view[sent:]
                        except BrokenPipeError:
                            self._input_view = memoryview(b"")
                        if not len(self._input_view):
                            selector.unregister(key.fd)
                            stream.close()
                    else:
                        # subprocess's size: 64 KiB reads measured 20% slower on 200 MiB (each read's buffer is
                        # malloc'd and shrunk, and at that size glibc gives back and takes again the heap's top).
                        chunk = os.read(key.fd, 32768)
                        if chunk:
                            self._outputs[id(stream)].append(chunk)
                        else:
                            selector.unregister(key.fd)

    def _collected(self, final: bool = False, raw: bool = False) -> tuple[Any, Any]:
        """What the job wrote to our pipes so far: decoded in text mode, unless raw (a TimeoutExpired keeps
        bytes, as subprocess's does)."""
        out: list[Any] = []
        for stream in (self.stdout, self.stderr):
            if stream is None:
                out.append(None)
                continue
            data = b"".join(self._outputs.get(id(stream), []))
            if final:
                stream.close()
            if self._text and not raw:
                out.append(io.TextIOWrapper(io.BytesIO(data), encoding=self._encoding, errors=self._errors).read())
            else:
                out.append(data)
        return out[0], out[1]

    if not TYPE_CHECKING:  # at run time, subprocess's kind of alias (types.GenericAlias), for subclasses too
        __class_getitem__ = classmethod(types.GenericAlias)

    def __enter__(self) -> Popen:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._detached:
            self.close_pipes()
            return
        try:
            if self.stdin is not None and not self.stdin.closed:
                self.stdin.close()  # flushing it may fail (EPIPE): raised once the job is waited for, as subprocess
        finally:
            if self.returncode is None and not self.client.finished:
                if exc_info[0] is KeyboardInterrupt:
                    self.stop_for(wire.StopReason.INTERRUPTED, after_interrupt=True)
                else:
                    self.stop_for(wire.StopReason.CONTEXT_EXITED)
            try:
                self._wait_shielded()
            finally:
                for stream in (self.stdout, self.stderr):
                    if stream is not None:
                        stream.close()

    def __repr__(self) -> str:
        return f"<sandbox.Popen: returncode: {self.returncode} args: {self.args!r}>"


class _DetachedEnds:
    """The program's exit and the detached jobs' ends, which daemon threads take: the interpreter stops those
    threads where they stand, so one in the middle of a job's on_exit hooks would leave the rest unrun (it
    claimed them from the spawn server, which would otherwise run them). At exit we wait for the wrap-ups under
    way (a Ctrl+C ends that wait), and no thread begins one after: the spawn server runs those hooks once it sees
    this program gone."""

    changes = threading.Condition()
    exiting = False
    under_way = 0
    registered = False

    @classmethod
    def watch_the_exit(cls) -> None:
        with cls.changes:
            if not cls.registered:  # at the first detach(): nothing for a program that never detaches
                cls.registered = True
                atexit.register(cls.finish)

    @classmethod
    def begin(cls) -> bool:
        """A thread may wrap its job up (False: the program is exiting)."""
        with cls.changes:
            if cls.exiting:
                return False
            cls.under_way += 1
            return True

    @classmethod
    def end(cls) -> None:
        with cls.changes:
            cls.under_way -= 1
            cls.changes.notify_all()

    @classmethod
    def finish(cls) -> None:
        try:
            with cls.changes:
                cls.exiting = True
                cls.changes.wait_for(lambda: not cls.under_way)
        except KeyboardInterrupt:
            pass  # the hooks, in our process group, had the terminal's Ctrl+C too


def _returncode_of(client: ReaperClient) -> int:
    """The job's end as subprocess gives it; -SIGKILL if its reaper died (the kernel killed the job with it)."""
    return os.waitstatus_to_exitcode(client.status) if client.status is not None else -signal.SIGKILL


def _wait_detached(client: ReaperClient, popen: weakref.ref[Popen], on_exit: Sequence[str]) -> None:
    """A detached job's end, taken in a thread of ours: through its Popen if the caller still holds one."""
    try:
        client.wait(None)
        if not _DetachedEnds.begin():
            return
        try:
            process = popen()
            if process is not None:
                process._settle()
                return
            returncode = _returncode_of(client)
            client.close()
            wrap_up(client, on_exit, returncode)
        finally:
            _DetachedEnds.end()
    except Exception:  # noqa: BLE001 - a hook's failure has been said on stderr; nobody waits for this thread
        pass


@with_options(*SANDBOX_KEYWORDS, passes_to=Popen.__init__)
def run(
    args: Args,
    *,
    stdin: int | IO[Any] | None = None,
    input: bytes | str | None = None,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
    capture_output: bool = False,
    check: bool = False,
    timeout: Duration | None = None,
    **options: Unpack[RunKeywords],
) -> CompletedProcess[Any]:
    """subprocess.run in a sandbox. Returns a CompletedProcess (sandbox's, a subprocess.CompletedProcess);
    raises CalledProcessError / TimeoutExpired.

    On Ctrl+C the job (in our process group) gets SIGINT from the terminal once; we wait, shielded,
    until its cleanup ends, then raise KeyboardInterrupt. On a timeout the sandbox is stopped with
    its stop signal and grace period, and TimeoutExpired is raised once every process is gone. The
    result (and a CalledProcessError) carries the lifecycle events, "finished" last, as .events.
    """
    return complete(Popen, args, stdin, input, stdout, stderr, capture_output, check, timeout, options)


def run_streams(stdin: Any, input: Any, stdout: Any, stderr: Any, capture_output: bool,
                timeout: object) -> tuple[Any, Any, Any, float | None]:
    """run()'s arguments checked as subprocess.run checks them: the stdin, stdout, stderr to start with, and
    the timeout in seconds (None: none; infinity is none too)."""
    if input is not None:
        if stdin is not None:
            raise ValueError("stdin and input arguments may not both be used")
        stdin = PIPE
    if capture_output:
        if stdout is not None or stderr is not None:
            raise ValueError("stdout and stderr arguments may not be used with capture_output")
        stdout = stderr = PIPE
    return stdin, stdout, stderr, check_timeout(timeout)


def complete(factory: Callable[..., Popen], args: Any, stdin: Any, input: bytes | str | None, stdout: Any,
             stderr: Any, capture_output: bool, check: bool, timeout: object,
             options: Mapping[str, Any]) -> CompletedProcess[Any]:
    """run() for any factory of Popen-like processes (sandbox.Popen, a Job's Popen): start, communicate, and
    on a timeout or Ctrl+C the shielded end (stop, or relay the Ctrl+C; wait until all is gone), then raise."""
    stdin, stdout, stderr, seconds = run_streams(stdin, input, stdout, stderr, capture_output, timeout)
    deadline = linux.deadline_after(seconds)
    if factory is Popen and deadline is not None:
        options = {**options, DEADLINE: deadline}
    with factory(args, stdin=stdin, stdout=stdout, stderr=stderr, **options) as process:
        try:
            out, err = process.communicate(input, timeout=linux.time_left(deadline))
            if wire.StopReason.TIMEOUT in process.client.stop_reasons:
                assert seconds is not None  # the reaper stops for a timeout only at our deadline
                raise subprocess.TimeoutExpired(process.args, seconds)  # the reaper stopped it at our deadline
        except subprocess.TimeoutExpired:
            process.stop_for(wire.StopReason.TIMEOUT)
            process.client.through_interrupts(process.communicate)
            out, err = process._collected(raw=True)
            assert seconds is not None  # communicate() has a timeout only then; the reaper a deadline
            expired = subprocess.TimeoutExpired(process.args, seconds, out, err)
            expired.events = process.events  # type: ignore[attr-defined]
            expired.usage = process.usage  # type: ignore[attr-defined]  # what it used until it was stopped
            raise expired from None
        except KeyboardInterrupt:
            process.client.relay(signal.SIGINT)
            process.client.through_interrupts(process.communicate)
            raise
        retcode = process.poll()
        if retcode is None:
            retcode = process.wait()
    if check and retcode:
        error = subprocess.CalledProcessError(retcode, process.args, out, err)
        error.events = process.events  # type: ignore[attr-defined]
        error.usage = process.usage  # type: ignore[attr-defined]
        raise error
    return CompletedProcess(process.args, retcode, out, err, process.events, process.usage)

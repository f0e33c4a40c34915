"""sandbox.Popen and sandbox.run: subprocess's interface, with a sandbox's guarantees.

The shape follows trio's run_process: start, wait; on Ctrl+C or a timeout, an escalation that is
shielded from further interrupts and runs until every process of the sandbox is gone; then the
original exception. Unlike trio we never add a signal on top of a Ctrl+C: the terminal has
already given it to the job (same process group), and a second signal would cut its cleanup.
"""

from __future__ import annotations

import io
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import IO, Any

from . import command, hooks, linux, spawner
from .client import ReaperClient
from .signals import inherited_ignores
from .spec import DEFAULT_GRACE, SandboxSpec, duration

PIPE = subprocess.PIPE
STDOUT = subprocess.STDOUT
DEVNULL = subprocess.DEVNULL


class Popen:
    """A command running in its own sandbox, with subprocess.Popen's interface.

    pid is the job's PID as the caller sees it. Leaving a `with` block stops the job (stop signal,
    grace, SIGKILL) if it still runs, and always waits until every process of the sandbox is gone.
    """

    def __init__(
        self,
        args: str | bytes | os.PathLike | Sequence[str | bytes | os.PathLike],
        *,
        stdin: int | IO | None = None,
        stdout: int | IO | None = None,
        stderr: int | IO | None = None,
        env: Mapping | None = None,
        cwd: str | bytes | os.PathLike | None = None,
        shell: bool = False,
        text: bool | None = None,
        encoding: str | None = None,
        errors: str | None = None,
        universal_newlines: bool | None = None,
        grace: float = DEFAULT_GRACE,
        stop_signal: int | str = signal.SIGTERM,
        tmpfs: Iterable[str] = (),
        binds: Iterable[str | tuple[str, str]] = (),
        ro_binds: Iterable[str | tuple[str, str]] = (),
        propagation: str = "slave",
        on_event: Callable[[str, dict], None] | None = None,
        net: str = "host",
        userns: bool | None = None,
        uid: int | None = None,
        gid: int | None = None,
        read_only: Iterable[str] = (),
        hostname: str | None = None,
        proc: bool = True,
        on_exit: Iterable[str] | None = None,
    ) -> None:
        on_exit_commands = hooks.check_commands(on_exit)
        argv = command.argv_of(args, shell)
        self.spec = SandboxSpec.build(grace=grace, stop_signal=stop_signal, tmpfs=tmpfs, binds=binds,
                                      ro_binds=ro_binds, propagation=propagation,
                                      ignored_signals=inherited_ignores(), net=net, userns=userns, uid=uid,
                                      gid=gid, read_only=read_only, hostname=hostname, proc=proc)
        request = command.request(argv, command.environment_of(env), command.directory_of(cwd))
        self.spec.check_host()
        request["spec"] = self.spec.to_wire()
        request["pgid"] = os.getpgrp()
        request["lifeline"] = "socket"  # we hold the reaper's socket; the spawn server is only its parent
        request["on_exit"] = on_exit_commands  # the spawn server runs them if we die first
        self._start(args, request, (stdin, stdout, stderr), text or universal_newlines, encoding, errors,
                    lambda fds: spawner.new_client(request, fds, on_event), on_exit=on_exit_commands,
                    on_event=on_event)

    def _start(self, args: Any, request: dict, stdio: tuple, text: bool | None, encoding: str | None,
               errors: str | None, launch: Callable[[tuple], ReaperClient], extra_fds: Sequence[int] = (),
               on_exit: list[str] | tuple[str, ...] = (), on_event: Callable[[str, dict], None] | None = None) -> None:
        """Start the process through launch(descriptors) and wait until it runs (or raise why it does not)."""
        self.args = args
        self._on_exit = list(on_exit)
        self._on_event = on_event
        self._wrapped_up = False
        self.returncode: int | None = None
        self.stdin: IO | None = None
        self.stdout: IO | None = None
        self.stderr: IO | None = None
        self._text = bool(text or encoding or errors)
        self._encoding = encoding
        self._errors = errors
        self._outputs: dict[int, list[bytes]] = {}
        self._input_view: memoryview | None = None
        child_fds, to_close = self._stdio(*stdio)
        try:
            self._client: ReaperClient = launch((*child_fds, *extra_fds))
        except BaseException:
            self._close_parent_ends()
            raise
        finally:
            for fd in to_close:
                os.close(fd)
        try:
            self._client.wait_started()
        except KeyboardInterrupt:
            # Start-up interrupted: the job, if it started meanwhile, gets the SIGINT the terminal could
            # not give it yet; we wait for its end as after any Ctrl+C, then go on with the interrupt.
            self._client.relay(signal.SIGINT)
            self._client.stop(None, "interrupted", after_interrupt=True)
            self._close_parent_ends()
            try:
                _wait_through_interrupts(self._client.wait, self._client)
            finally:
                self._client.close()
            raise
        except BaseException:
            self._close_parent_ends()
            self._client.close()
            raise
        self.pid: int = self._client.job_pid  # type: ignore[assignment]

    # -- plumbing ----------------------------------------------------------------------------------

    def _stdio(self, stdin, stdout, stderr) -> tuple[tuple[int | None, int | None, int | None], list[int]]:
        """The descriptors the job gets as 0, 1, 2, and the ones of ours to close once they are sent."""
        to_close: list[int] = []
        parent_ends: list[tuple[int, str, int]] = []

        def resolve(spec, index: int) -> int | None:
            if spec is None:
                return index if linux.fd_is_open(index) else None
            if spec == PIPE:
                r, w = os.pipe()
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
                return spec
            return spec.fileno()

        try:
            fds = [resolve(stdin, 0), resolve(stdout, 1)]
            fds.append(fds[1] if stderr == STDOUT else resolve(stderr, 2))
        except BaseException:
            for fd in to_close + [fd for _, _, fd in parent_ends]:
                os.close(fd)  # a bad argument after a good one: nothing of ours may stay open
            raise
        for index, mode, fd in parent_ends:
            raw = open(fd, mode, buffering=-1)
            if self._text:
                raw = io.TextIOWrapper(raw, encoding=self._encoding, errors=self._errors,
                                       write_through=(index == 0), line_buffering=False)
            setattr(self, ("stdin", "stdout", "stderr")[index], raw)
        return (fds[0], fds[1], fds[2]), to_close

    def _close_parent_ends(self) -> None:
        for stream in (self.stdin, self.stdout, self.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass

    @property
    def reaper_pid(self) -> int:
        """The PID (as the caller sees it) of the sandbox's PID 1."""
        return self._client.reaper_pid

    @property
    def events(self) -> list[tuple[str, dict]]:
        """The lifecycle events so far: (name, fields), in order."""
        self._client.pump(0)
        return list(self._client.events)

    def _settle(self) -> int | None:
        client = self._client
        if self.returncode is None and client.gone:
            if client.status is not None:
                self.returncode = os.waitstatus_to_exitcode(client.status)
            else:
                self.returncode = -signal.SIGKILL  # the reaper died and the kernel killed the job with it
            client.close()
            self._wrap_up()
        return self.returncode

    def _wrap_up(self) -> None:
        """Once every process of the sandbox is gone: the on_exit hooks, then the finished event."""
        if self._wrapped_up:
            return
        self._wrapped_up = True
        client = self._client

        def emit(name: str, fields: dict) -> None:
            client.events.append((name, fields))
            if self._on_event is not None:
                self._on_event(name, fields)

        rc = self.returncode if self.returncode is not None else 0
        status, sig = (rc, None) if rc >= 0 else (128 - rc, -rc)
        try:
            if self._on_exit:
                spawner.claim_hooks(client)
                env = hooks.environment(client.status, status, hooks.stop_reason(client.events))
                hooks.run_hooks(self._on_exit, env, emit, prog="sandbox")
        finally:
            hooks.finished(emit, status, sig)

    # -- subprocess.Popen's interface ----------------------------------------------------------------

    def poll(self) -> int | None:
        if self.returncode is None and self._client.finished:
            self._settle()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if timeout is not None:
            timeout = duration(timeout, "timeout")
        if self.returncode is None:
            if not self._client.wait(timeout):
                raise subprocess.TimeoutExpired(self.args, timeout)
            self._settle()
        return self.returncode  # type: ignore[return-value]

    def send_signal(self, sig: int) -> None:
        """Send sig to the job's main process, if it still runs (never to a recycled PID)."""
        if self.returncode is None:
            self._client.signal(sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def stop(self, grace: float | None = None) -> int:
        """Stop every process of the sandbox: stop signal, grace seconds (default: the sandbox's), SIGKILL."""
        if grace is not None:
            grace = duration(grace, "grace")
        if self.returncode is None:
            self._stop_for("requested", grace)
        return self._wait_shielded()

    def _stop_for(self, reason: str, grace: float | None = None, after_interrupt: bool = False) -> None:
        self._client.stop(grace, reason, after_interrupt)

    def _wait_shielded(self) -> int:
        """Wait to the end even through Ctrl+C (each passed on as the terminal would); then re-raise it."""
        _wait_through_interrupts(self.wait, self._client)
        return self.returncode  # type: ignore[return-value]

    def communicate(self, input: bytes | str | None = None, timeout: float | None = None) -> tuple[Any, Any]:
        if timeout is not None:
            timeout = duration(timeout, "timeout")
        deadline = linux.deadline_after(timeout)
        if input is not None and self._input_view is None:
            if self.stdin is None:
                raise ValueError("communicate() with input needs stdin=PIPE")
            data = input
            if isinstance(input, str):
                data = input.encode(self._encoding or "utf-8", self._errors or "strict")
            self._input_view = memoryview(data)
        streams = [s for s in (self.stdin, self.stdout, self.stderr) if s is not None and not s.closed]
        if streams:
            self._pump_streams(deadline, timeout)
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            self.wait(remaining)
        except subprocess.TimeoutExpired:
            raise subprocess.TimeoutExpired(self.args, timeout, *self._collected()) from None
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
                    raise subprocess.TimeoutExpired(self.args, timeout, *self._collected())
                for key, _ in selector.select(linux.wait_seconds(deadline)):
                    stream = key.data
                    if stream is self.stdin:
                        try:
                            sent = os.write(key.fd, self._input_view[:65536])
                            self._input_view = self._input_view[sent:]
                        except BrokenPipeError:
                            self._input_view = memoryview(b"")
                        if not len(self._input_view):
                            selector.unregister(key.fd)
                            stream.close()
                    else:
                        chunk = os.read(key.fd, 65536)
                        if chunk:
                            self._outputs[id(stream)].append(chunk)
                        else:
                            selector.unregister(key.fd)

    def _collected(self, final: bool = False) -> tuple[Any, Any]:
        out = []
        for stream in (self.stdout, self.stderr):
            if stream is None:
                out.append(None)
                continue
            data = b"".join(self._outputs.get(id(stream), []))
            if final:
                stream.close()
            if self._text:
                out.append(io.TextIOWrapper(io.BytesIO(data), encoding=self._encoding, errors=self._errors).read())
            else:
                out.append(data)
        return out[0], out[1]

    def __enter__(self) -> Popen:
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            if self.stdin is not None and not self.stdin.closed:
                try:
                    self.stdin.close()
                except BrokenPipeError:
                    pass
        finally:
            if self.returncode is None and not self._client.finished:
                if exc_info[0] is KeyboardInterrupt:
                    self._stop_for("interrupted", after_interrupt=True)
                else:
                    self._stop_for("context exited")
            try:
                self._wait_shielded()
            finally:
                for stream in (self.stdout, self.stderr):
                    if stream is not None:
                        stream.close()

    def __repr__(self) -> str:
        return f"<sandbox.Popen: returncode: {self.returncode} args: {self.args!r}>"


def run(
    args: str | bytes | os.PathLike | Sequence[str | bytes | os.PathLike],
    *,
    stdin: int | IO | None = None,
    input: bytes | str | None = None,
    stdout: int | IO | None = None,
    stderr: int | IO | None = None,
    capture_output: bool = False,
    check: bool = False,
    timeout: float | None = None,
    **options: Any,
) -> subprocess.CompletedProcess:
    """subprocess.run in a sandbox. Returns CompletedProcess; raises CalledProcessError / TimeoutExpired.

    On Ctrl+C the job (in our process group) gets SIGINT from the terminal once; we wait, shielded,
    until its cleanup ends, then raise KeyboardInterrupt. On a timeout the sandbox is stopped with
    its stop signal and grace period, and TimeoutExpired is raised once every process is gone.
    """
    return _run(Popen, args, stdin, input, stdout, stderr, capture_output, check, timeout, options)


def _run_streams(stdin: Any, input: Any, stdout: Any, stderr: Any, capture_output: bool,
                 timeout: float | None) -> tuple[Any, Any, Any]:
    """run()'s arguments checked as subprocess.run checks them; the stdin, stdout, stderr to start with."""
    if input is not None:
        if stdin is not None:
            raise ValueError("stdin and input arguments may not both be used")
        stdin = PIPE
    if capture_output:
        if stdout is not None or stderr is not None:
            raise ValueError("stdout and stderr arguments may not be used with capture_output")
        stdout = stderr = PIPE
    if timeout is not None:
        timeout = duration(timeout, "timeout")
    return stdin, stdout, stderr


def _run(factory: Callable[..., Popen], args: Any, stdin: Any, input: bytes | str | None, stdout: Any, stderr: Any,
         capture_output: bool, check: bool, timeout: float | None, options: dict) -> subprocess.CompletedProcess:
    stdin, stdout, stderr = _run_streams(stdin, input, stdout, stderr, capture_output, timeout)
    if timeout is not None and timeout == float("inf"):
        timeout = None
    with factory(args, stdin=stdin, stdout=stdout, stderr=stderr, **options) as process:
        try:
            out, err = process.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            process._stop_for("timeout")
            out, err = _finish(process)
            raise subprocess.TimeoutExpired(process.args, timeout, out, err) from None
        except KeyboardInterrupt:
            process._client.relay(signal.SIGINT)
            _finish(process)
            raise
        retcode = process.poll()
        if retcode is None:
            retcode = process.wait()
    if check and retcode:
        error = subprocess.CalledProcessError(retcode, process.args, out, err)
        error.events = process.events  # type: ignore[attr-defined]
        raise error
    completed = subprocess.CompletedProcess(process.args, retcode, out, err)
    completed.events = process.events  # type: ignore[attr-defined]  # lifecycle events, "finished" last
    return completed


def _finish(process: Popen) -> tuple[Any, Any]:
    """Collect the rest of the output and wait for the end, passing on each further Ctrl+C."""
    return _wait_through_interrupts(process.communicate, process._client)


def _wait_through_interrupts(wait: Callable[[], Any], client: ReaperClient) -> Any:
    """wait() to its end even through Ctrl+C, each relayed to the job (the reaper drops those the terminal
    gave it already); then raise KeyboardInterrupt if there was one. The one "wait through Ctrl+C"."""
    interrupted = False
    while True:
        try:
            result = wait()
            break
        except KeyboardInterrupt:
            interrupted = True
            client.relay(signal.SIGINT)
    if interrupted:
        raise KeyboardInterrupt
    return result

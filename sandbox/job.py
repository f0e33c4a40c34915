"""sandbox.Job: one sandbox (mount and PID namespace, reaper as PID 1) for several commands and Python calls.

Commands run in the same namespaces, so a mount made by one is seen by the next and never by
the host. Leaving the block stops every process of the job (stop signal, grace, SIGKILL) and
waits until the reaper, and with it the namespaces, is gone.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import IO, Any

from . import command, hooks, protocol, spawner
from .client import ReaperClient
from .errors import SandboxError
from .popen import Popen, _run, _wait_through_interrupts
from .signals import inherited_ignores
from .spec import DEFAULT_GRACE, SandboxSpec, duration

NAMESPACES = ("mnt", "pid", "net", "uts", "ipc", "user", "cgroup", "time")

# Runs inside the job: reads (func, args, kwargs) from descriptor 3, sends back the outcome.
_CALL_BOOT = """\
import pickle, socket, sys, traceback
sys.path[:0] = {paths!r}
if {main!r}:
    # Functions of the caller's script pickle as __main__.name: load the script as multiprocessing does.
    import runpy, types
    main = types.ModuleType("__mp_main__")
    main.__dict__.update(runpy.run_path({main!r}, run_name="__mp_main__"))
    sys.modules["__main__"] = sys.modules["__mp_main__"] = main
channel = socket.socket(fileno=3)
chunks = []
while True:
    chunk = channel.recv(1 << 16)
    if not chunk:
        break
    chunks.append(chunk)
try:
    func, args, kwargs = pickle.loads(b"".join(chunks))
    outcome = ("ok", func(*args, **kwargs))
except BaseException as exc:
    outcome = ("error", exc, traceback.format_exc())
try:
    data = pickle.dumps(outcome)
except Exception as exc:
    data = pickle.dumps(("error", TypeError(f"cannot send the outcome back: {{exc}}"), traceback.format_exc()))
channel.sendall(data)
"""


class RemoteTraceback(Exception):
    """The traceback of an exception raised by job.call() inside the sandbox (set as __cause__)."""

    def __str__(self) -> str:
        return self.args[0]


class JobProcess(Popen):
    """A command of a Job: Popen's interface; stop() stops this command alone."""

    def __init__(self, job: Job, args: Any, *, stdin: int | IO | None = None, stdout: int | IO | None = None,
                 stderr: int | IO | None = None, env: Mapping | None = None,
                 cwd: str | bytes | os.PathLike | None = None, shell: bool = False, text: bool | None = None,
                 encoding: str | None = None, errors: str | None = None, universal_newlines: bool | None = None,
                 on_event: Callable[[str, dict], None] | None = None, _extra_fds: Sequence[int] = ()) -> None:
        request = command.request(command.argv_of(args, shell), command.environment_of(env),
                                  command.directory_of(cwd))
        self.job = job
        self._start(args, request, (stdin, stdout, stderr), text or universal_newlines, encoding, errors,
                    lambda fds: job._command(request, fds, on_event), _extra_fds)
        self.pid = self._client.job_pid  # type: ignore[assignment]

    @property
    def reaper_pid(self) -> int:
        return self.job.pid


class Job:
    """A sandbox that stays up for several commands: `with sandbox.Job(tmpfs=["/mnt"]) as job: job.run(...)`."""

    def __init__(self, *, grace: float = DEFAULT_GRACE, stop_signal: int | str = signal.SIGTERM,
                 tmpfs: Iterable[str] = (), binds: Iterable[str | tuple[str, str]] = (),
                 ro_binds: Iterable[str | tuple[str, str]] = (), propagation: str = "slave",
                 net: str = "host", userns: bool | None = None, uid: int | None = None, gid: int | None = None,
                 read_only: Iterable[str] = (), hostname: str | None = None, proc: bool = True,
                 on_event: Callable[[str, dict], None] | None = None, on_exit: Iterable[str] | None = None) -> None:
        self.spec = SandboxSpec.build(grace=grace, stop_signal=stop_signal, tmpfs=tmpfs, binds=binds,
                                      ro_binds=ro_binds, propagation=propagation,
                                      ignored_signals=inherited_ignores(), net=net, userns=userns, uid=uid,
                                      gid=gid, read_only=read_only, hostname=hostname, proc=proc)
        self._on_exit = hooks.check_commands(on_exit)
        self.spec.check_host()
        self._on_event = on_event
        self._client: ReaperClient | None = None
        self._wrapped_up = False
        self._processes: weakref.WeakSet[JobProcess] = weakref.WeakSet()

    # -- the sandbox ---------------------------------------------------------------------------------

    def start(self) -> Job:
        if self._client is not None:
            raise RuntimeError("this Job has already been started")
        # on_exit goes along so that the spawn server runs the hooks if we die first.
        request = {"session": True, "spec": self.spec.to_wire(), "pgid": os.getpgrp(), "on_exit": self._on_exit,
                   "lifeline": "socket"}
        client = spawner.new_client(request, (), self._on_event)
        try:
            client.wait_started()
        except BaseException:
            client.close()
            raise
        self._client = client
        return self

    def __enter__(self) -> Job:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is KeyboardInterrupt:
            self._stop(None, "interrupted", after_interrupt=True)
        else:
            self._stop(None, "context exited")

    @property
    def client(self) -> ReaperClient:
        if self._client is None:
            raise RuntimeError("the Job is not running: use `with Job(...) as job:` or job.start()")
        return self._client

    @property
    def pid(self) -> int:
        """The reaper's PID (PID 1 of the job) as the caller sees it."""
        return self.client.reaper_pid

    def namespace_path(self, kind: str = "mnt") -> str:
        """/proc/PID/ns/KIND of the job, for nsenter and the like; holding it open keeps the namespace alive."""
        if kind not in NAMESPACES:
            raise ValueError(f"unknown namespace kind {kind!r}; one of {', '.join(NAMESPACES)}")
        return f"/proc/{self.pid}/ns/{kind}"

    @property
    def running(self) -> bool:
        return self._client is not None and not self._client.finished

    def stop(self, grace: float | None = None) -> None:
        """Stop every process of the job (stop signal, grace, SIGKILL) and wait until the namespaces are gone."""
        if grace is not None:
            grace = duration(grace, "grace")
        self._stop(grace, "requested")

    def _stop(self, grace: float | None, reason: str, after_interrupt: bool = False) -> None:
        client = self._client
        if client is None:
            return
        client.stop(grace, reason, after_interrupt)
        try:
            _wait_through_interrupts(client.wait, client)
        finally:
            self.wrap_up()

    def wrap_up(self) -> None:
        """Once every process of the job is gone: its commands learn their end, then the on_exit hooks
        run and the finished event comes, once, whoever waited (the sync or the asyncio side)."""
        client = self._client
        if client is None or self._wrapped_up:
            return
        self._wrapped_up = True
        client.close()
        for process in list(self._processes):
            process.poll()  # each learnt how it ended before the reaper exited
        try:
            if self._on_exit:
                spawner.claim_hooks(client)
                hooks.run_hooks(self._on_exit, hooks.environment(None, None, hooks.stop_reason(client.events)),
                                self._emit, prog="sandbox")
        finally:
            hooks.finished(self._emit, 0)

    def _emit(self, name: str, fields: dict) -> None:
        if self._client is not None:
            self._client.events.append((name, fields))
        if self._on_event is not None:
            self._on_event(name, fields)

    @property
    def events(self) -> list[tuple[str, dict]]:
        self.client.pump(0)
        return list(self.client.events)

    # -- commands ------------------------------------------------------------------------------------

    def _command(self, request: dict, fds: tuple, on_event: Callable[[str, dict], None] | None) -> ReaperClient:
        client = self.client
        ours, theirs = protocol.pair()
        present = [fd is not None for fd in fds]
        try:
            protocol.send(client.sock, ("command", request, present), fds=[*(fd for fd in fds if fd is not None),
                                                                          theirs.fileno()])
        except OSError:
            ours.close()
            raise SandboxError("the job is no longer running") from None
        finally:
            theirs.close()
        return ReaperClient(client.reaper_pid, None, ours, on_event)

    def Popen(self, args: Any, **options: Any) -> JobProcess:  # noqa: N802 - mirrors subprocess.Popen
        """Start a command in the job; same arguments as sandbox.Popen, minus the sandbox's own options."""
        process = JobProcess(self, args, **options)
        self._processes.add(process)
        return process

    def run(self, args: Any, *, stdin: Any = None, input: bytes | str | None = None, stdout: Any = None,
            stderr: Any = None, capture_output: bool = False, check: bool = False, timeout: float | None = None,
            **options: Any) -> subprocess.CompletedProcess:
        """Run a command in the job and wait for it, like sandbox.run; the job's namespaces stay."""
        return _run(self.Popen, args, stdin, input, stdout, stderr, capture_output, check, timeout, options)

    def call(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run func(*args, **kwargs) in a fresh Python process inside the job; return its result or re-raise."""
        payload = pickle.dumps((func, args, kwargs))
        ours, theirs = socket.socketpair()
        try:
            process = JobProcess(self, call_argv(), _extra_fds=(theirs.fileno(),))
        finally:
            theirs.close()
        with ours, process:
            ours.sendall(payload)
            ours.shutdown(socket.SHUT_WR)
            chunks = []
            try:
                while chunk := ours.recv(1 << 16):
                    chunks.append(chunk)
            except ConnectionResetError:
                chunks = []  # it died before answering; its exit status says more
            process.wait()
        return call_outcome(func, chunks, process.returncode)


def call_argv() -> list[str]:
    """A fresh interpreter that imports what we can (our sys.path, our script) and runs one call from fd 3."""
    paths = [p for p in sys.path if p and os.path.isabs(p)]
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    main = os.path.abspath(main_file) if main_file and main_file.endswith(".py") else ""
    return [sys.executable, "-c", _CALL_BOOT.format(paths=paths, main=main)]


def call_outcome(func: Callable[..., Any], chunks: list[bytes], returncode: int | None) -> Any:
    """The result a call sent back, or its exception raised here with the remote traceback as cause."""
    if not chunks:
        raise SandboxError(f"the call of {func!r} ended without a result (exit status {returncode})")
    outcome = pickle.loads(b"".join(chunks))
    if outcome[0] == "ok":
        return outcome[1]
    _, exc, remote = outcome
    raise exc from RemoteTraceback(f"\n\"\"\"\n{remote}\"\"\"")


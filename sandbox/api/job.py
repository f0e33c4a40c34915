"""sandbox.Job: one sandbox (mount and PID namespace, reaper as PID 1) for several commands and Python calls.

Commands run in the same namespaces, so a mount made by one is seen by the next and never by
the host. Leaving the block stops every process of the job (stop signal, grace, SIGKILL) and
waits until the reaper, and with it the namespaces, is gone; then its on_exit hooks run, once.
"""

from __future__ import annotations

import errno
import os
import socket
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any, ParamSpec, TypeVar

from sandboxed_run_helpers.shared import command, credentials, wire
from sandboxed_run_helpers.shared.errors import SandboxError
from sandboxed_run_helpers.shared.options import check_api_options, check_grace
from sandboxed_run_helpers.shared.usage import Usage

from ..client import ReaperClient
from . import calling, spawner
from .collect import not_started, wrap_up
from .holding import HoldsASandbox
from .keywords import COMMAND_KEYWORDS, SANDBOX_KEYWORDS, choose, with_options
from .popen import CompletedProcess, Popen, complete, pass_fds_of, present
from .process_keywords import command_of, text_mode

if TYPE_CHECKING:
    from typing import Unpack

    from .typed import (
        Args,
        CommandOptions,
        Duration,
        JobPopenKeywords,
        JobRunKeywords,
        SandboxOptions,
        StrOrBytesPath,
    )

_P = ParamSpec("_P")
_R = TypeVar("_R")

NAMESPACES = ("mnt", "pid", "net", "uts", "ipc", "user", "cgroup", "time")


class JobProcess(Popen):
    """A command of a Job: Popen's interface; stop() stops this command alone."""

    @with_options(*COMMAND_KEYWORDS)
    def __init__(self, job: Job, args: Args, *, stdin: int | IO[Any] | None = None,
                 stdout: int | IO[Any] | None = None, stderr: int | IO[Any] | None = None,
                 env: Mapping[str, Any] | Mapping[bytes, Any] | None = None,
                 cwd: str | bytes | os.PathLike[str] | os.PathLike[bytes] | None = None, shell: bool = False,
                 text: bool | None = None, encoding: str | None = None, errors: str | None = None,
                 universal_newlines: bool | None = None, pass_fds: Sequence[int] = (),
                 executable: StrOrBytesPath | None = None, bufsize: int = -1, close_fds: bool = True,
                 preexec_fn: None = None, restore_signals: bool = True, start_new_session: bool = False,
                 process_group: int | None = None, pipesize: int = -1, startupinfo: None = None,
                 creationflags: int = 0, **options: Unpack[CommandOptions]) -> None:
        passed = pass_fds_of(pass_fds)
        text = text_mode(text, universal_newlines, encoding, errors)
        on_event = check_api_options(options, COMMAND_KEYWORDS)["on_event"]
        with not_started(on_event):
            cmd, settings = command_of(args, shell, env, cwd, text, bool(passed), dict(
                executable=executable, bufsize=bufsize, close_fds=close_fds, preexec_fn=preexec_fn,
                restore_signals=restore_signals, startupinfo=startupinfo, creationflags=creationflags,
                start_new_session=start_new_session, process_group=process_group, pipesize=pipesize),
                job.spec.root is not None)
        self.job = job

        def launch(stdio: tuple[int | None, ...]) -> ReaperClient:
            with not_started(on_event):
                return job.send_command(cmd, stdio, on_event)

        self._start(args, (stdin, stdout, stderr), text, encoding, errors, launch, passed, cwd=cwd,
                    settings=settings, executable=executable)

    @property
    def reaper_pid(self) -> int:
        return self.job.pid

    @property
    def name(self) -> str | None:
        return self.job.name


class Job(HoldsASandbox):
    """A sandbox that stays up for several commands: `with sandbox.Job(tmpfs=["/mnt"]) as job: job.run(...)`.

    Leaving the block, normally or by an exception (KeyboardInterrupt included: then no stop signal on
    top of the terminal's SIGINT), stops every process of the job with the stop signal and grace, waits
    until the namespaces are gone, runs the on_exit hooks once and emits `finished`.
    """

    @with_options(*SANDBOX_KEYWORDS)
    def __init__(self, **options: Unpack[SandboxOptions]) -> None:
        chosen = choose(options)
        self.spec = chosen.spec
        self._registry = chosen.registry
        self._on_exit = chosen.on_exit
        self._on_event = chosen.on_event
        self._client: ReaperClient | None = None
        self._wrapped_up = False
        self._processes: weakref.WeakSet[JobProcess] = weakref.WeakSet()
        self._namespace_fds: dict[str, int] = {}  # held for namespace_path() where /proc/PID/ns is not ours to open
        self._securebits = 0  # ours when the job started: its reaper cannot read them (no /proc file shows them)
        self._server: spawner.SpawnServer | None = None

    # -- the sandbox ---------------------------------------------------------------------------------

    def start(self) -> Job:
        if self._client is not None:
            raise RuntimeError("this Job has already been started")
        # on_exit goes along so that the spawn server runs the hooks if we die first.
        order = wire.Session(self.spec, os.getpgrp(), "socket", self._registry)
        self._securebits = spawner.calling_securebits()
        with not_started(self._on_event):
            client = spawner.new_client(wire.Spawn(order, self._on_exit), [], self._on_event)
        try:
            client.wait_started()
        except SandboxError as exc:
            # The sandbox could not be set up: it ends at once; its hooks still run, once.
            client.wait()
            client.close()
            wrap_up(client, self._on_exit, exc.exit_code, str(exc))
            raise
        except BaseException:
            client.close()
            raise
        self._client = client
        self._server = spawner.current()  # the one that started it: it lives as long as the job
        return self

    def __enter__(self) -> Job:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is KeyboardInterrupt:
            self._end(wire.StopReason.INTERRUPTED, None, after_interrupt=True)
        else:
            self._end(wire.StopReason.CONTEXT_EXITED, None)

    @property
    def client(self) -> ReaperClient:
        if self._client is None:
            raise RuntimeError("the Job is not running: use `with Job(...) as job:` or job.start()")
        return self._client

    @property
    def pid(self) -> int:
        """The reaper's PID (PID 1 of the job) as the caller sees it: reaper_pid."""
        return self.reaper_pid

    def namespace_path(self, kind: str = "mnt") -> str:
        """/proc/PID/ns/KIND of the job, for nsenter and the like; holding it open keeps the namespace alive.

        The reaper is not dumpable (so that its job cannot trace it), and only root may open its /proc/PID/ns:
        for anyone else this is /proc/OURPID/fd/N, a descriptor of the namespace that the reaper handed us and
        that the Job holds until it ends."""
        if kind not in NAMESPACES:
            raise ValueError(f"unknown namespace kind {kind!r}; one of {', '.join(NAMESPACES)}")
        # The reaper's own time namespace is the host's; the job's is the one the reaper's children are born in.
        path = f"/proc/{self.pid}/ns/{'time_for_children' if kind == 'time' else kind}"
        if kind in self._namespace_fds or (os.geteuid() != 0 and not os.access(path, os.R_OK)):
            fd = self._namespace_fd(kind)
            if fd is not None:
                return f"/proc/{os.getpid()}/fd/{fd}"
        return path

    def _namespace_fd(self, kind: str) -> int | None:
        """A descriptor of the job's namespace of this kind, asked of its reaper over the registry once."""
        if not self._namespace_fds and self.name is not None and self.running:
            from .. import running

            try:
                with running.found(self.name, entering=True) as answer:  # the name is ours while the job runs
                    self._namespace_fds, answer.namespace_fds = answer.namespace_fds, {}
            except SandboxError:
                pass
        return self._namespace_fds.get(kind)

    @property
    def started(self) -> bool:
        return self._client is not None

    @property
    def running(self) -> bool:
        return self._client is not None and not self._client.finished

    def stop(self, grace: Duration | None = None) -> None:
        """Stop every process of the job (stop signal, grace, SIGKILL) and wait until the namespaces are gone."""
        self._end(wire.StopReason.REQUESTED, check_grace(grace))

    def _end(self, reason: wire.StopReason, grace: float | None, after_interrupt: bool = False) -> None:
        client = self._client
        if client is None:
            return
        self.stop_for(reason, grace, after_interrupt)
        try:
            client.through_interrupts(client.wait)
        finally:
            self.wrap_up()

    def stop_for(self, reason: wire.StopReason, grace: float | None = None, after_interrupt: bool = False) -> None:
        """Ask for the stop, without waiting (for the sync and asyncio faces alike)."""
        if self._client is not None:
            self._client.stop(grace, reason, after_interrupt)

    def wrap_up(self) -> None:
        """Once every process of the job is gone: its commands learn their end, then the on_exit hooks
        run and the finished event comes, once, whoever waited (the sync or the asyncio side)."""
        client = self._client
        if client is None or self._wrapped_up:
            return
        self._wrapped_up = True
        client.close()
        wire.discard(self._namespace_fds.values(), at_once=True)
        self._namespace_fds = {}
        for process in list(self._processes):
            process.poll()  # each learnt how it ended before the reaper exited
        wrap_up(client, self._on_exit, None)

    @property
    def usage(self) -> Usage | None:
        """What the whole job used (every command, and the cgroup's figures if it has one), once it is over;
        None before. Each command's own is its process's (or CompletedProcess's) .usage."""
        return self._client.usage if self._client is not None and self._wrapped_up else None

    # -- commands ------------------------------------------------------------------------------------

    def send_command(self, cmd: command.Command, stdio: tuple[int | None, ...],
                     on_event: Callable[[str, dict[str, Any]], None] | None) -> ReaperClient:
        """Start cmd in the job with stdio as its 0, 1, 2 (and more); a client for its reports."""
        client = self.client
        if self._wrapped_up:  # its socket is closed: the send would fail with EBADF, as if a descriptor were bad
            raise RuntimeError("the Job has ended (left its block, or stopped): start a new Job for more commands")
        if spawner.calling_securebits() != self._securebits:
            # The reaper compares the rest of our credentials itself (its check_owner).
            raise SandboxError("refused: the caller's securebits changed since this sandbox.Job started, and it "
                               "lends none of its own; start a new sandbox.Job for this command")
        # A change of ids or capabilities refuses our reading too: the reaper says which (check_owner).
        if self._server is not None and spawner.confined_against(self._server) \
                and credentials.own() == self._server.credentials:
            raise SandboxError("refused: the caller entered a confinement (Landlock, an LSM's) since this "
                               "sandbox.Job started, and it lends none of its own; start a new sandbox.Job for "
                               "this command")
        ours, theirs = wire.pair()
        flags, fds = present(stdio)
        try:
            for fd in fds:
                os.fstat(fd)  # OSError(EBADF) here, for this call
            wire.send(client.sock, wire.Run(cmd, flags), fds=[*fds, theirs.fileno()])
        except OSError as exc:
            ours.close()
            if exc.errno == errno.EBADF:
                raise
            raise SandboxError("the job is no longer running") from None
        finally:
            theirs.close()
        return spawner.tracked(ReaperClient(client.reaper_pid, None, ours, on_event, prog="sandbox"))

    @with_options(*COMMAND_KEYWORDS, passes_to=JobProcess.__init__)
    def Popen(self, args: Args, **options: Unpack[JobPopenKeywords]) -> JobProcess:  # noqa: N802 - subprocess's
        """Start a command in the job; same arguments as sandbox.Popen, minus the sandbox's own options."""
        process = JobProcess(self, args, **options)
        self._processes.add(process)
        return process

    @with_options(*COMMAND_KEYWORDS, passes_to=JobProcess.__init__)
    def run(self, args: Args, *, stdin: int | IO[Any] | None = None, input: bytes | str | None = None,
            stdout: int | IO[Any] | None = None, stderr: int | IO[Any] | None = None, capture_output: bool = False,
            check: bool = False, timeout: Duration | None = None,
            **options: Unpack[JobRunKeywords]) -> CompletedProcess[Any]:
        """Run a command in the job and wait for it, like sandbox.run; the job's namespaces stay."""
        return complete(self.Popen, args, stdin, input, stdout, stderr, capture_output, check, timeout, options)

    def call(self, func: Callable[_P, _R], /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """Run func(*args, **kwargs) in a fresh Python process inside the job; return its result or re-raise.
        A function of the caller's script needs the script guarded by `if __name__ == "__main__":` (it is
        run inside to find the function); without the guard, calling raises UnguardedScript (a RuntimeError)
        before anything runs."""
        payload, script = calling.payload(func, args, kwargs)
        ours, theirs = calling.channel()
        try:
            process = self.Popen(calling.call_argv(script, theirs.fileno()), pass_fds=(theirs.fileno(),))
        except BaseException:
            ours.close()
            raise
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
        return calling.call_outcome(func, chunks, process.returncode)

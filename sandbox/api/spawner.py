"""The API's connection to its spawn server (helpers/server.py), started on first use, one per process."""

from __future__ import annotations

import errno
import fcntl
import os
import select
import socket
import subprocess
import sys
import threading
import time
import weakref

from sandboxed_run_helpers.shared import linux, wire
from sandboxed_run_helpers.shared.errors import EXIT_FAILURE, SandboxError, host_error
from sandboxed_run_helpers.shared.signals import signal_name

from ..client import ReaperClient
from .calling import refuse_while_loading_main

# The server runs without site (-S): a smaller interpreter forks and exits faster, and every
# reaper is a fork of it. So it is told where the helpers package is, as a directory on its path:
# installed it is sandboxed_run_helpers/, in an editable install the repository's helpers/ (its
# modules import each other relatively, so either name works), python-prctl's directory, and
# jeepney's (for the systemd scope of a sandbox with limits).
_BOOT = "import sys; sys.path[:0] = {paths!r}; from {package}.server import main; main({fd}, {pidfd})"


def _boot_code(fd: int, pidfd: int) -> str:
    from importlib.util import find_spec

    import prctl

    import sandboxed_run_helpers

    helpers = os.path.dirname(os.path.abspath(sandboxed_run_helpers.__file__))
    paths = [os.path.dirname(helpers), os.path.dirname(os.path.abspath(prctl.__file__))]
    jeepney = find_spec("jeepney")
    if jeepney is not None and jeepney.origin:
        where = os.path.dirname(os.path.dirname(os.path.abspath(jeepney.origin)))
        if where not in paths:
            paths.append(where)
    return _BOOT.format(paths=paths, package=os.path.basename(helpers), fd=fd, pidfd=pidfd)


class SpawnServer:
    def __init__(self) -> None:
        self.owner = os.getpid()
        self.lock = threading.Lock()
        self.channel: socket.socket | None = None
        self.pid: int | None = None
        self.process: subprocess.Popen | None = None
        self.generation = 0

    def _start(self) -> None:
        # Decided before we open anything: a closed 2 would be taken by our first descriptor.
        stderr = None if linux.fd_is_open(2) else subprocess.DEVNULL
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # Above 2, where the server's stdin, stdout and stderr will not overwrite them.
        theirs = socket.socket(fileno=_above_stdio(theirs.detach()))
        caller_pidfd = _above_stdio(os.pidfd_open(os.getpid()))
        boot = _boot_code(theirs.fileno(), caller_pidfd)
        started = threading.Event()
        failure: list[BaseException] = []

        def keeper() -> None:
            # PDEATHSIG follows the thread that forked: this thread lives as long as the server,
            # so a caller's short-lived thread can start jobs that outlive it.
            try:
                process = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-c", boot], pass_fds=(theirs.fileno(), caller_pidfd),
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
                self.process = process
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                failure.append(exc)
                return
            finally:
                started.set()
            _wait_for_exit(process)

        try:
            threading.Thread(target=keeper, name="sandbox-server-keeper", daemon=True).start()
        except RuntimeError:  # "can't start new thread": a thread is a process to RLIMIT_NPROC
            failure.append(OSError(errno.EAGAIN, os.strerror(errno.EAGAIN)))
            started.set()
        started.wait()
        theirs.close()
        os.close(caller_pidfd)
        if failure:
            ours.close()
            if isinstance(failure[0], OSError):
                raise host_error(failure[0], "cannot start the sandbox spawn server")
            raise SandboxError(f"cannot start the sandbox spawn server: {failure[0]}")
        try:
            message, _, _ = wire.recv(ours)
        except (wire.Closed, ConnectionError, ValueError):
            ours.close()
            raise SandboxError(f"the sandbox spawn server {_how_it_ended(self.process)}") from None
        self.channel = ours
        self.pid = message.pid
        self.pidfd = os.pidfd_open(message.pid)  # opened while it runs: readable once it has died
        self.generation += 1  # tickets of an earlier server mean nothing to this one

    def spawn(self, request: wire.Spawn,
              fds: list[int]) -> tuple[int, int, socket.socket, tuple[int, int] | int]:
        """Ask for a new sandbox; returns the reaper's PID, a pidfd for it, our socket to it and the
        ticket of its hooks (this server's generation and the server's number; 0: none). A failure is
        this call's alone: the server and its other sandboxes go on; a server that died is replaced by
        the next call."""
        for fd in fds:
            os.fstat(fd)  # OSError(EBADF) here, for this call, rather than a failed send
        with self.lock:
            for attempt in (1, 2):
                if self.channel is not None and select.select([self.pidfd], [], [], 0)[0]:
                    self._forget()  # it died since the last call: a fresh one takes this request
                if self.channel is None:
                    self._start()
                assert self.channel is not None
                try:
                    wire.send(self.channel, request, fds=fds)
                except OSError as exc:
                    if exc.errno not in _PEER_GONE or attempt == 2:
                        raise
                    self._forget()  # it died before it got the request: a fresh one gets it
                    continue
                try:
                    message, received, _ = wire.recv(self.channel)
                except (wire.Closed, ConnectionError, ValueError):
                    self._forget()
                    raise SandboxError("the sandbox spawn server died while starting the sandbox; try again") from None
                break
        if isinstance(message, wire.Failed):
            raise SandboxError.for_exit_code(message.exit_code, message.message, message.errno)
        if not isinstance(message, wire.Spawned) or len(received) != 2:
            for fd in received:
                os.close(fd)
            raise SandboxError("the sandbox spawn server sent a malformed reply", EXIT_FAILURE)
        sock = socket.socket(fileno=received[0])
        return message.reaper_pid, received[1], sock, message.ticket and (self.generation, message.ticket)

    def claim_hooks(self, ticket: tuple[int, int]) -> None:
        """Tell the server that we run these hooks ourselves (it would run them if we died unclaimed)."""
        generation, number = ticket
        with self.lock:
            if self.channel is None or generation != self.generation:
                return  # the server that holds them is gone, and its claims with it
            try:
                wire.send(self.channel, wire.Claim(number))
            except OSError:
                pass

    def _forget(self) -> None:
        if self.channel is not None:
            self.channel.close()
            os.close(self.pidfd)
        self.channel = None
        self.pid = None

    def shutdown(self, timeout: float | None = None) -> None:
        """Close the channel; the server stops every sandbox it started (with grace) and exits."""
        with self.lock:
            process = self.process
            self._forget()
        if process is not None:
            try:
                process.wait(timeout)
            except ChildProcessError:
                pass


_PEER_GONE = (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ECONNREFUSED)


def _wait_for_exit(process: subprocess.Popen) -> None:
    try:
        process.wait()
    except ChildProcessError:
        # The caller ignores SIGCHLD, so the kernel reaps for it; wait() returned when the server ended.
        pass


def _how_it_ended(process: subprocess.Popen | None) -> str:
    """What a server that closed its channel before saying it was ready died of, in words. The keeper
    thread reaps it; a server that is still there (it closed the channel and lives on) is said to."""
    deadline = time.monotonic() + 0.5
    while process is not None and process.returncode is None and time.monotonic() < deadline:
        time.sleep(0.01)
    status = None if process is None else process.returncode
    if status is None:
        return "ended at start-up"
    if status < 0:
        return f"was killed by {signal_name(-status)} at start-up"
    return f"exited at start-up with status {status} (see its message above)"


def _above_stdio(fd: int) -> int:
    """fd itself if above 2, else a close-on-exec copy that is (and fd closed)."""
    if fd > 2:
        return fd
    copy = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    os.close(fd)
    return copy


_server: SpawnServer | None = None
_server_lock = threading.Lock()
_live_clients: weakref.WeakSet[ReaperClient] = weakref.WeakSet()


def server() -> SpawnServer:
    global _server
    with _server_lock:
        if _server is None or _server.owner != os.getpid():
            _server = SpawnServer()
        return _server


def new_client(request: wire.Spawn, fds: list[int], on_event=None) -> ReaperClient:
    """A new sandbox for request (its job's descriptors: fds), and our client of its reaper."""
    refuse_while_loading_main()
    spawn_server = server()
    reaper_pid, pidfd, sock, ticket = spawn_server.spawn(request, fds)
    client = ReaperClient(reaper_pid, pidfd, sock, on_event, prog="sandbox", grace=request.order.spec.grace)
    client.hooks_ticket = (spawn_server, ticket) if ticket else None
    client.reaper_is_coming = request.order.spec.userns_ids is not None
    _live_clients.add(client)
    return client


def claim_hooks(client: ReaperClient) -> None:
    """We are about to run this sandbox's hooks: the spawn server must not run them too."""
    if client.hooks_ticket is not None:
        spawn_server, ticket = client.hooks_ticket
        client.hooks_ticket = None
        spawn_server.claim_hooks(ticket)


def _after_fork_in_child() -> None:
    # A forked copy of the caller must not keep the parent's sandboxes alive through their lifelines.
    global _server
    if _server is not None and _server.channel is not None:
        _server.channel.close()
        os.close(_server.pidfd)
    _server = None
    for client in list(_live_clients):
        client.close()


os.register_at_fork(after_in_child=_after_fork_in_child)


def current() -> SpawnServer | None:
    """This process's spawn server, if it started one (for tests and benchmarks: its pid)."""
    server_ = _server
    return server_ if server_ is not None and server_.owner == os.getpid() else None


def shut_down(timeout: float | None = None) -> None:
    """Let this process's spawn server go: it stops every sandbox it started (with grace) and exits; the next
    call starts a new one. For tests that must leave nothing behind."""
    global _server
    with _server_lock:
        server_, _server = current(), None
    if server_ is not None:
        server_.shutdown(timeout)

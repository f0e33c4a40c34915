"""The API's connection to its spawn server (helpers/server.py), started on first use, one per process and set of
credentials: when the program's credentials change (it drops privileges, say), the next request goes to a new
server started with the new ones, and the old one is retired (it serves what it started, then exits)."""

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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from sandboxed_run_helpers.shared import credentials, linux, wire
from sandboxed_run_helpers.shared.errors import EXIT_FAILURE, SandboxError, host_error
from sandboxed_run_helpers.shared.signals import signal_name

from ..client import ReaperClient
from .calling import refuse_while_loading_main

if TYPE_CHECKING:
    import _socket

T = TypeVar("T")

# The server runs without site (-S): a smaller interpreter forks and exits faster, and every
# reaper is a fork of it. So it is told where the helpers package is, as a directory on its path:
# installed it is sandboxed_run_helpers/, in an editable install the repository's helpers/ (its
# modules import each other relatively, so either name works), python-prctl's directory, and
# jeepney's (for the systemd scope of a sandbox with limits).
_BOOT = "import sys; sys.path[:0] = {paths!r}; from {package}.server import main; main({fd}, {pidfd}, {pid}, {tid})"


def _boot_code(fd: int, pidfd: int, pid: int, tid: int) -> str:
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
    return _BOOT.format(paths=paths, package=os.path.basename(helpers), fd=fd, pidfd=pidfd, pid=pid, tid=tid)


class SpawnServer:
    """One spawn server: started for the credentials its caller's thread had then (credentials.own(), and the ids
    that tell a change cheaply), which it serves and lends to no other."""

    def __init__(self) -> None:
        self.channel: socket.socket | None = None
        self.pid: int | None = None
        self.pidfd = -1
        self.process: subprocess.Popen[bytes] | None = None
        self.credentials: tuple[object, ...] = ()
        self.ids: tuple[object, ...] = ()
        self.readable: bool | None = None  # whether its starter could read it as ptrace would (confined_against)

    def start(self) -> None:
        # Decided before we open anything: a closed 2 would be taken by our first descriptor.
        stderr = None if linux.fd_is_open(2) else subprocess.DEVNULL
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # Above 2, where the server's stdin, stdout and stderr will not overwrite them, nor will a caller that
        # had one of its own closed and later puts it back (dup2), as subprocess keeps its own pipes above 2.
        ours = socket.socket(fileno=_above_stdio(ours.detach()))
        theirs = socket.socket(fileno=_above_stdio(theirs.detach()))
        caller_pidfd = _above_stdio(os.pidfd_open(os.getpid()))
        started = threading.Event()
        failure: list[BaseException] = []

        def keeper() -> None:
            # PDEATHSIG follows the thread that forked: this thread lives as long as the server,
            # so a caller's short-lived thread can start jobs that outlive it. The server's credentials are
            # this thread's: it is the thread whose credentials the server compares every request with.
            try:
                boot = _boot_code(theirs.fileno(), caller_pidfd, os.getpid(), threading.get_native_id())
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
        assert isinstance(message, wire.Ready)  # the server's first message (helpers/server.py)
        self.channel = ours
        self.pid = message.pid
        self.pidfd = _above_stdio(os.pidfd_open(message.pid))  # opened while it runs: readable once it has died

    def ask(self, request: wire.Spawn, fds: list[int]) -> tuple[wire.Message, list[int]]:
        """Send request, return the reply and its descriptors. OSError from the send (errno in _PEER_GONE: the
        server is gone, it never got the request); SandboxError if it dies before it answers."""
        assert self.channel is not None
        wire.send(self.channel, request, fds=fds)
        try:
            message, received, _ = wire.recv(self.channel)
        except (wire.Closed, ConnectionError, ValueError):
            self.close()
            raise SandboxError("the sandbox spawn server died while starting the sandbox; try again") from None
        return message, received

    def dead(self) -> bool:
        return self.channel is None or bool(select.select([self.pidfd], [], [], 0)[0])

    def claim_hooks(self, number: int) -> None:
        if self.channel is None:
            return  # the server that held them is gone, and its claims with it
        try:
            wire.send(self.channel, wire.TakeHooks(number))
        except OSError:
            pass

    def retire(self) -> None:
        """No more requests for this server: it serves what it started (until that ends, then exits)."""
        if self.channel is not None:
            try:
                wire.send(self.channel, wire.Retire())
            except OSError:
                pass

    def close(self) -> None:
        """Let go of the channel: a server that still runs stops every sandbox it started (with grace) and exits."""
        if self.channel is not None:
            self.channel.close()
            os.close(self.pidfd)
        self.channel = None

    def wait(self, timeout: float | None) -> None:
        if self.process is not None:
            try:
                self.process.wait(timeout)
            except ChildProcessError:
                pass


class SpawnServers:
    """This process's spawn servers: the one that takes its requests, started for the credentials it has now,
    and retired ones (started for credentials it had before) that serve only the sandboxes they started."""

    def __init__(self) -> None:
        self.owner = os.getpid()
        self.lock = threading.Lock()
        self.current: SpawnServer | None = None
        self.retired: list[SpawnServer] = []

    def spawn(self, request: wire.Spawn, fds: list[int]) -> tuple[SpawnServer, int, int, socket.socket, int]:
        """Ask for a new sandbox; returns the server that made it, the reaper's PID, a pidfd for it, our socket to
        it and the number of its hooks at that server (0: none). A failure is this call's alone: the server and
        its other sandboxes go on; a server that died is replaced by the next call."""
        for fd in fds:
            os.fstat(fd)  # OSError(EBADF) here, for this call, rather than a failed send
        request = request.replace(tid=calling_thread())
        if calling_securebits() != linux.securebits() or self.confined_beyond_us():
            # Only a thread can read its own, and only a server its keeper thread starts gets ours.
            raise SandboxError("refused: the event loop's thread has other securebits, or a confinement (Landlock, "
                               "an LSM's), than the worker thread that starts its sandbox, and no server can be "
                               "started with them; set them before the loop's executor starts its threads")
        with self.lock:
            for attempt in (1, 2):
                server = self.for_now()
                try:
                    message, received = server.ask(request, fds)
                except OSError as exc:
                    if exc.errno not in _PEER_GONE or attempt == 2:
                        raise
                    self.drop(server)  # it died before it got the request: a fresh one gets it
                    continue
                if isinstance(message, wire.Failed) and attempt == 1 and credentials.own() != server.credentials:
                    # Our credentials changed after the check above (another thread of ours, say): the server
                    # refused, and a server for the credentials we have now gets the request.
                    wire.discard(received, at_once=True)
                    self.retire(server)
                    continue
                break
        if isinstance(message, wire.Failed):
            raise SandboxError.for_exit_code(message.exit_code, message.message, message.errno)
        if not isinstance(message, wire.Spawned) or len(received) != 2:
            wire.discard(received, at_once=True)
            raise SandboxError("the sandbox spawn server sent a malformed reply", EXIT_FAILURE)
        return (server, message.reaper_pid, _above_stdio(received[1]), socket.socket(fileno=_above_stdio(received[0])),
                message.ticket)

    def confined_beyond_us(self) -> bool:
        """Whether the thread we work for (on_behalf_of) may not read a server of ours that this thread may."""
        readable = getattr(_behalf, "readable", None) or {}
        return any(theirs is False and linux.may_read(pid) for pid, theirs in readable.items())

    def for_now(self) -> SpawnServer:
        """The server for the credentials we have now: the current one, unless it died or they changed (then it
        is retired, and a new one started)."""
        server = self.current
        if server is not None and server.dead():
            self.drop(server)
            server = None
        if server is not None and (_ids() != server.ids or confined_against(server)):
            self.retire(server)
            server = None
        for old in [old for old in self.retired if old.dead()]:
            old.close()
            self.retired.remove(old)
        if server is None:
            server = self.current = _started()
        return server

    def retire(self, server: SpawnServer) -> None:
        server.retire()
        self.retired.append(server)
        if self.current is server:
            self.current = None

    def drop(self, server: SpawnServer) -> None:
        server.close()
        if self.current is server:
            self.current = None

    def claim_hooks(self, server: SpawnServer, number: int) -> None:
        """Tell the server that holds them that we run these hooks ourselves (it would run them if we died)."""
        with self.lock:
            server.claim_hooks(number)

    def every(self) -> list[SpawnServer]:
        return [*self.retired, *([self.current] if self.current is not None else [])]

    def shutdown(self, timeout: float | None = None) -> None:
        """Let every server go: each stops the sandboxes it started (with grace) and exits."""
        with self.lock:
            servers = self.every()
            for server in servers:
                server.close()
            self.current, self.retired = None, []
        for server in servers:
            server.wait(timeout)


def _started() -> SpawnServer:
    """A new server, for the credentials of the calling thread. One whose start a change of them overlapped may
    have them from before, and is let go at once."""
    for _ in range(3):
        before, ids = credentials.own(), _ids()
        server = SpawnServer()
        server.start()
        if credentials.own() == before:
            assert server.pid is not None  # start() returned: its server said Ready
            server.credentials, server.ids, server.readable = before, ids, linux.may_read(server.pid)
            return server
        server.close()
    raise SandboxError("this program's credentials kept changing while its sandbox spawn server started; try again")


def confined_against(server: SpawnServer) -> bool:
    """Whether the calling thread entered a confinement its server is outside of since it started it (a Landlock
    domain, an LSM's): no /proc file shows those, but the kernel then refuses the thread to read the server as
    ptrace would (their ids and capabilities are the same: the server compares those). A server started by this
    thread is inside it, and so are its jobs."""
    if server.pid is None or not server.readable:
        return False  # (one never readable: not dumpable, say)
    readable = getattr(_behalf, "readable", None) or {}
    return (readable[server.pid] if server.pid in readable else linux.may_read(server.pid)) is False


def _ids() -> tuple[object, ...]:
    """The calling thread's ids and groups: what a drop of privileges changes, told at the cost of four system
    calls (the server compares the rest: capabilities, namespaces, and refuses; then we retry, see spawn()). And
    its securebits (SECBIT_NOROOT: an exec of root gets no capabilities), which the server cannot read (no /proc
    file shows them): a new server, started by this thread, has them, and so do its jobs."""
    return os.getresuid(), os.getresgid(), os.getgroups(), linux.securebits()


_behalf = threading.local()


def calling_thread() -> int:
    """The thread a request is for: ours, or the one we work for (on_behalf_of)."""
    return getattr(_behalf, "tid", 0) or threading.get_native_id()


def calling_securebits() -> int:
    """The securebits of the thread a request is for (calling_thread()), as it read them itself."""
    securebits = getattr(_behalf, "securebits", None)
    return linux.securebits() if securebits is None else securebits


def on_behalf_of(tid: int, work: Callable[[], T]) -> Callable[[], T]:
    """work, to be run in a worker thread for thread tid, the calling one (asyncio's loop): its jobs get that
    thread's nice, as subprocess would give them, not the worker's; and its securebits, and whether it may read our
    servers (confined_against), are those compared, read in that thread now."""
    securebits = linux.securebits()
    servers_ = _servers
    readable = {} if servers_ is None or servers_.owner != os.getpid() else {
        server.pid: linux.may_read(server.pid) for server in servers_.every() if server.pid is not None}

    def run() -> T:
        _behalf.tid, _behalf.securebits, _behalf.readable = tid, securebits, readable
        try:
            return work()
        finally:
            _behalf.tid, _behalf.securebits, _behalf.readable = 0, None, None

    return run


_PEER_GONE = (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ECONNREFUSED)


def _wait_for_exit(process: subprocess.Popen[bytes]) -> None:
    try:
        process.wait()
    except ChildProcessError:
        # The caller ignores SIGCHLD, so the kernel reaps for it; wait() returned when the server ended.
        pass


def _how_it_ended(process: subprocess.Popen[bytes] | None) -> str:
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


_servers: SpawnServers | None = None
_servers_lock = threading.Lock()
_live_clients: weakref.WeakSet[ReaperClient] = weakref.WeakSet()


def servers() -> SpawnServers:
    global _servers
    with _servers_lock:
        if _servers is None or _servers.owner != os.getpid():
            _servers = SpawnServers()
        return _servers


def new_client(request: wire.Spawn, fds: list[int],
               on_event: Callable[[str, dict[str, Any]], None] | None = None) -> ReaperClient:
    """A new sandbox for request (its job's descriptors: fds), and our client of its reaper."""
    refuse_while_loading_main()
    spawn_servers = servers()
    server, reaper_pid, pidfd, sock, ticket = spawn_servers.spawn(request, fds)
    client = ReaperClient(reaper_pid, pidfd, sock, on_event, prog="sandbox", grace=request.order.spec.grace)
    client.hooks_ticket = (spawn_servers, server, ticket) if ticket else None
    client.reaper_is_coming = request.order.spec.userns_ids is not None
    return tracked(client)


def tracked(client: ReaperClient) -> ReaperClient:
    """client, among this process's live ones: refused to pass_fds, let go of in a forked child."""
    _live_clients.add(client)
    return client


def machinery() -> set[tuple[int, int]]:
    """The files (st_dev, st_ino) of this process's channels to its spawn servers and sockets to its reapers,
    whatever number a dup gave them: a job handed one could read the replies meant for us (another sandbox's
    reaper socket) or order its own sandbox about as its caller."""
    files = set()
    sockets: list[_socket.socket | None] = [
        server.channel for server in (_servers.every() if _servers is not None else ())]
    sockets += [client.sock for client in list(_live_clients)]
    for sock in sockets:
        if sock is not None and sock.fileno() >= 0:
            st = os.fstat(sock.fileno())
            files.add((st.st_dev, st.st_ino))
    return files


def machinery_pids() -> set[int]:
    """The PIDs of this process's spawn servers and of the reapers of its live sandboxes: a pidfd of one, handed
    to a job, would let it signal our machinery (a root job kills another sandbox's PID 1 at once)."""
    pids = {server.pid for server in (_servers.every() if _servers is not None else ()) if server.pid}
    pids |= {client.reaper_pid for client in list(_live_clients) if client.reaper_pid > 0}
    return pids


def claim_hooks(client: ReaperClient) -> None:
    """We are about to run this sandbox's hooks: the spawn server must not run them too."""
    if client.hooks_ticket is not None:
        spawn_servers, server, ticket = client.hooks_ticket
        client.hooks_ticket = None
        spawn_servers.claim_hooks(server, ticket)


def _after_fork_in_child() -> None:
    # A forked copy of the caller must not keep the parent's sandboxes alive through their lifelines.
    global _servers
    if _servers is not None:
        for server in _servers.every():
            server.close()
    _servers = None
    for client in list(_live_clients):
        client.let_go_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def current() -> SpawnServer | None:
    """This process's spawn server for its current credentials, if it started one (for tests and benchmarks:
    its pid)."""
    servers_ = _servers
    return servers_.current if servers_ is not None and servers_.owner == os.getpid() else None


def shut_down(timeout: float | None = None) -> None:
    """Let this process's spawn servers go: each stops every sandbox it started (with grace) and exits; the next
    call starts a new one. For tests that must leave nothing behind."""
    global _servers
    with _servers_lock:
        servers_, _servers = _servers, None
    if servers_ is not None and servers_.owner == os.getpid():
        servers_.shutdown(timeout)

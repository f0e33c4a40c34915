"""The reaper's entry in the registry of running sandboxes (shared/registry.py): the name it holds, and
the answers it gives, from its main loop, to whoever asks (sandboxed-run --list, --enter, --stop).

Only the sandbox's owner and root get an answer, and only from outside the sandbox, where it was started
from (peers.py: a job never reaches another sandbox, nor its own, whatever its uid). The registry directory
keeps other users from connecting; each connection's peer credentials are checked here as well. Inside a
user namespace the kernel shows every uid but the owner's as the overflow uid, root's included, so there
the directory is the only gate that can tell them apart.

Nothing here blocks the loop: the listening socket and the connections are non-blocking, a
connection lives at most CONNECTION_LIFE seconds, a reply the client does not read drops it, and at
most MAX_CONNECTIONS are open at once (a new one drops the oldest).
"""

from __future__ import annotations

import _socket as socket
import errno
import os
import select
import time
from collections.abc import Callable

from ..shared import linux, registry, wire
from ..shared.errors import EXIT_FAILURE, SandboxError
from ..shared.registry import Claim
from .peers import PROOF_NEEDED, Gate
from .procfs import OwnProc

MAX_CONNECTIONS = 16
CONNECTION_LIFE = 10.0

Describe = Callable[[], tuple[wire.About, int | None]]  # the About, and the PID to name in SCM_CREDENTIALS
StopRequested = Callable[[float | None], None]


def claim(order: wire.Order | wire.Session, dirfd: int | None, launcher_proc: int | None,
          own_proc: OwnProc) -> Listing | None:
    """Take the order's name in its registry (SandboxError if a live sandbox has it); None: not listed.
    dirfd: the registry directory as the launcher opened it, None if it sent none; launcher_proc: the /proc
    we were started under (peers.py). Both taken over. own_proc: our own /proc (mounts.Procs), which stays
    the reaper's."""
    if order.registry is None or dirfd is None:
        wire.discard([fd for fd in (dirfd, launcher_proc) if fd is not None], at_once=True)
        if order.registry is not None:
            # Never by its path: in here that is the empty directory the job sees (mounts.prepare).
            raise SandboxError(f"cannot register the sandbox: the launcher could not open {order.registry}")
        return None
    argv0 = order.command.argv[0] if isinstance(order, wire.Order) else None
    try:
        held = registry.claim(order.registry, order.spec.name, argv0, dirfd)
    except BaseException:
        if launcher_proc is not None:
            os.close(launcher_proc)
        raise
    return Listing(held, order.spec.userns, Gate(launcher_proc, held.sock), own_proc)


class Listing:
    def __init__(self, held: Claim, userns: bool, gate: Gate, proc: OwnProc) -> None:
        self.claim = held
        self.gate = gate
        self.proc = proc  # our own /proc, where our namespaces are opened for --enter
        self.name = held.name
        self.started = time.time()
        # Who may ask: root and the owner (our own uid, mapped or not); in a user namespace also the overflow
        # uid, as which root appears to us (the registry directory keeps other users out).
        self.allowed = {0, os.geteuid()}
        if userns:
            self.allowed.add(_overflow_uid())
        self.connections: dict[int, tuple[socket.socket, float]] = {}  # fd -> (socket, when to drop it)
        self.answered = False  # a client got our pidfd: it may have put a process in here (--enter)
        self.unproven: set[int] = set()  # connections whose first message must prove where they come from

    @property
    def fd(self) -> int:
        return self.claim.sock.fileno()

    def deadline(self) -> float | None:
        return min((until for _, until in self.connections.values()), default=None)

    def accept(self, poller: select.poll) -> None:
        while True:
            try:
                fd = linux.accept4(self.claim.sock)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    return  # the client waits in the backlog, or gives up
                continue  # ECONNABORTED and the like: that client is gone
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_NONBLOCK, fileno=fd)
            pid, uid, _gid = registry.peer_credentials(conn)
            if uid not in self.allowed:
                refusal = f"sandbox {self.name} is not yours: only its owner and root may list, enter or stop it"
            else:
                refusal = self.gate.refusal(conn, pid, self.name)
            if refusal == PROOF_NEEDED:
                self.unproven.add(fd)
            elif refusal is not None:
                self._refuse(conn, refusal)
                continue
            if len(self.connections) >= MAX_CONNECTIONS:
                # The oldest gives way: clients that connect and never ask (or never leave) must not keep
                # a --stop waiting for their CONNECTION_LIFE, let alone have it find the sandbox deaf.
                self.drop(min(self.connections, key=lambda old: self.connections[old][1]), poller)
            self.connections[fd] = (conn, time.monotonic() + CONNECTION_LIFE)
            poller.register(fd, select.POLLIN)

    def serve(self, fd: int, poller: select.poll, answer: Describe, stop: StopRequested) -> None:
        """What a connection asks, answered now."""
        conn = self.connections[fd][0]
        while True:
            # A client that must prove where it lives does so with its packet's descriptors, before a byte of the
            # packet is decoded: until then it may be anyone's, a job's included (peers.py).
            admit = (lambda fds: self.gate.proven(conn, fds)) if fd in self.unproven else None
            try:
                message, fds, _ = wire.recv(conn, socket.MSG_DONTWAIT, admit)
            except BlockingIOError:
                return
            except wire.Refused:
                self._reply(conn, wire.Failed(EXIT_FAILURE, registry.unreachable(self.name), errno.EACCES))
                self.drop(fd, poller)
                return
            except ValueError:
                continue
            except (wire.Closed, ConnectionError):
                self.drop(fd, poller)
                return
            self.unproven.discard(fd)
            wire.discard(fds)  # whoever connects may send anything, a descriptor whose close waits too
            if isinstance(message, wire.Query):
                self.answered = True
                about, creds_pid = answer()
                if not self._reply(conn, about, creds_pid):
                    self.drop(fd, poller)
                    return
            elif isinstance(message, wire.Stop):
                grace = message.grace
                # NaN or negative: the sandbox's own grace (recv() gave a float or None).
                stop(grace if grace is not None and grace >= 0 else None)
                self.drop(fd, poller)  # the client waits on our pidfd from now on
                return

    def _refuse(self, conn: socket.socket, why: str) -> None:
        self._reply(conn, wire.Failed(EXIT_FAILURE, why, errno.EACCES))
        conn.close()

    def _reply(self, conn: socket.socket, message: wire.Message, creds_pid: int | None = None) -> bool:
        fds = []
        if isinstance(message, wire.About):
            try:
                fds.append(os.pidfd_open(os.getpid()))  # our own: the client waits on it, or enters through it
            except OSError:
                pass
            else:
                fds.extend(self.proc.namespace_fds())
                try:
                    fds.append(self.proc.root())
                except OSError:
                    pass
        try:
            try:
                wire.send(conn, message, fds, creds_pid=creds_pid)
            except ProcessLookupError:
                wire.send(conn, message, fds)  # the main process was reaped meanwhile: no PID to name
            return True
        except OSError:
            return False  # not read (EAGAIN), or the client left
        finally:
            for fd in fds:
                os.close(fd)

    def expire(self, now: float, poller: select.poll) -> None:
        for fd, (_, until) in list(self.connections.items()):
            if now >= until:
                self.drop(fd, poller)

    def drop(self, fd: int, poller: select.poll) -> None:
        self.unproven.discard(fd)
        conn, _ = self.connections.pop(fd)
        try:
            poller.unregister(fd)
        except KeyError:
            pass
        conn.close()

    def release(self) -> None:
        """The sandbox is over (or never started): our entry goes, then every connection."""
        self.claim.release()
        self.gate.close()
        for conn, _ in self.connections.values():
            conn.close()
        self.connections.clear()


def _overflow_uid() -> int:
    try:
        with open("/proc/sys/kernel/overflowuid") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 65534

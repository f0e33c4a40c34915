"""Starting a reaper: the launcher's side (the sandboxed-run process, or the API's spawn server).

fork() makes the reaper PID 1 of a new PID namespace; hand_over() gives it its order (an Order or a
Session). Without a user namespace the launcher enters the new PID namespace for one fork() and
goes straight back; with one, a small parent in between makes it (helpers/userns.py: an
unprivileged launcher cannot). No raw clone(): Python's fork handling must stay intact.
"""

from __future__ import annotations

import _socket as socket  # the C module: the command-line tool skips socket.py's enums
import os
import select

from . import forked
from .reaper.main import main as reaper
from .shared import linux, registry, wire
from .shared.errors import namespace_error

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from .scope import Cgroup

_own_pidns: tuple[int, int] | None = None  # (pid of the process that opened it, fd)
_own_pidfd: tuple[int, int] | None = None


def _cached_fd(cache: tuple[int, int] | None, opener) -> tuple[int, int]:
    pid = os.getpid()
    if cache is None or cache[0] != pid:
        cache = (pid, opener())
    return cache


def fork(userns: tuple[int, int] | None = None, pgid: int | None = None,
         held: bool = False) -> tuple[int, int, socket.socket]:
    """Fork a reaper as PID 1 of a new PID namespace; return its PID, a pidfd for it and our socket to it.

    Runs in a single-threaded launcher (the CLI, or the spawn server). The launcher enters the new
    PID namespace only for this one fork and goes straight back, so it can start the next sandbox.
    The reaper prepares its namespaces at once and then waits for its order (hand_over), so a spawn
    server can keep one ready before anybody asks.

    With userns (the uid and gid the caller becomes inside) an unprivileged launcher cannot make a PID
    namespace, so a plain fork() first enters a new user namespace and makes it there; it stays as the
    reaper's parent (userns.py). The pid and pidfd returned are then that parent's, until it names the
    reaper (ReaperIs, with a pidfd of the reaper itself). held: that parent forks the reaper only once
    place() has put it in the sandbox's cgroup (Proceed).
    """
    global _own_pidns, _own_pidfd
    _own_pidns = _cached_fd(_own_pidns, lambda: os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC))
    _own_pidfd = _cached_fd(_own_pidfd, lambda: os.pidfd_open(os.getpid()))
    ours, theirs = wire.pair()
    if userns is not None:
        from . import userns as parent

        if pgid and pgid != os.getpgrp():
            try:
                os.setpgid(0, pgid)  # the reaper is forked out of our reach: it inherits our group
            except OSError:
                pass
        mapping = (userns[0], userns[1], os.geteuid(), os.getegid())
        pid = os.fork()
        if pid == 0:
            forked.life(theirs, lambda: parent.life(mapping, theirs, _own_pidfd[1], held))
        theirs.close()
        return pid, os.pidfd_open(pid), ours
    try:
        linux.unshare(linux.CLONE_NEWPID)
    except OSError as exc:
        ours.close()
        theirs.close()
        raise namespace_error(exc, "a PID namespace") from None
    try:
        pid = os.fork()
    except BaseException:
        linux.setns(_own_pidns[1], linux.CLONE_NEWPID)
        ours.close()
        theirs.close()
        raise
    if pid == 0:
        forked.life(theirs, lambda: reaper(theirs, _own_pidfd[1]))
    linux.setns(_own_pidns[1], linux.CLONE_NEWPID)
    theirs.close()
    return pid, os.pidfd_open(pid), ours


def place(order: wire.Order | wire.Session, pid: int, sock: socket.socket, userns: bool) -> Cgroup | None:
    """Give the sandbox a cgroup of its own if its spec has limits (None otherwise), with the forked process pid
    in it (the reaper, or the user-namespace parent, which then forks the reaper into it): before its order,
    so that every process of the job is born in it. SandboxError if it cannot be had."""
    limits = order.spec.cgroup_limits
    if not limits:
        return None
    from . import scope

    command = getattr(order, "command", None)
    what = " ".join(os.fsdecode(a) for a in command.argv)[:200] if command is not None else "a sandbox.Job"
    group = scope.make(limits, pid, f"sandboxed-run: {what}")
    if userns:
        try:
            wire.send(sock, wire.Proceed())
        except OSError:
            pass  # the parent is gone; the launcher learns it from the socket
    return group


def hand_over(sock: socket.socket, pid: int, order: wire.Order | wire.Session, stdio: tuple[int, ...] = (),
              caller: int | None = None) -> None:
    """Give a forked reaper its order and the descriptors that become the job's 0, 1, 2 (those present), and for
    an order that serves_more, last, caller: the reaper's end of the caller's socket.

    Raises OSError if it cannot be sent (a descriptor that is not open: EBADF); a reaper that died
    already is not an error here: its caller learns that from the socket.
    """
    if order.pgid:
        # The job belongs in the caller's process group, where the terminal's Ctrl+C and Ctrl+Z land.
        try:
            os.setpgid(pid, order.pgid)
        except OSError:
            pass
    # The registry directory, opened here in the caller's mount namespace: the reaper's copy of it may
    # turn read-only (--read-only /), and its entry must still go when it ends. Last of the descriptors.
    dirfd = registry.open_directory(order.registry) if order.registry is not None else None
    try:
        fds = (*stdio, dirfd) if dirfd is not None else stdio
        wire.send(sock, order, fds=fds if caller is None else (*fds, caller))
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        if dirfd is not None:
            os.close(dirfd)


def start(order: wire.Order, stdio: tuple[int, ...], hear: int | None = None,
          forked: Callable[[int, int], None] | None = None) -> tuple[int, int, socket.socket, Cgroup | None]:
    """fork(), place() and hand_over() in one: a reaper for this job, now, and the sandbox's cgroup if it has one
    (remove() it once the sandbox is gone; reap() the pid once the sandbox is gone). forked(pid, pidfd) runs before
    the order goes, so before the job can run (and stop us with its process group: the hook monitor must exist by
    then). If that fails, what was forked is reaped before the error is raised (hear: as reap())."""
    userns = order.spec.userns_ids
    pid, pidfd, sock = fork(userns, order.pgid, held=bool(order.spec.cgroup_limits))
    group = None
    try:
        group = place(order, pid, sock, userns is not None)
        if forked is not None:
            forked(pid, pidfd)
        hand_over(sock, pid, order, stdio)
    except BaseException:
        sock.close()  # the reaper sees its launcher go and exits; nothing of the job ran
        os.close(pidfd)
        if group is not None:
            group.remove()
        reap(pid, hear)
        raise
    return pid, pidfd, sock, group


# How long reap() waits for a forked process that is about to exit: the user-namespace parent exits as soon as it
# has reaped the reaper. Only one that is stopped or stuck takes this long, and then it is left to the kernel.
REAP_WITHIN = 5.0


def reap(pid: int, hear: int | None = None) -> None:
    """Reap the process fork() made (the reaper, or the user-namespace parent), which exits with the sandbox: a
    launcher that left it would leave a zombie to its own caller's subreaper (a container's PID 1, a service
    manager). Waits at most REAP_WITHIN seconds, and no longer once hear (a signalfd of ours) is readable."""
    try:
        pidfd = os.pidfd_open(pid)  # our unreaped child: its PID cannot have been reused
    except OSError:
        return  # reaped already: a caller that ignores SIGCHLD lets the kernel do it
    try:
        select.select([pidfd, *([hear] if hear is not None else [])], [], [], REAP_WITHIN)
    finally:
        os.close(pidfd)
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass

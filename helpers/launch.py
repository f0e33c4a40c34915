"""Starting a reaper: the launcher's side (the sandboxed-run process, or the API's spawn server).

fork() makes the reaper PID 1 of a new PID namespace; send_job() gives it its job. Without a user
namespace the launcher enters the new PID namespace for one fork() and goes straight back; with
one, a small parent in between makes it (an unprivileged launcher cannot). No raw clone(): Python's
fork handling must stay intact.
"""

from __future__ import annotations

import _socket as socket  # the C module: the command-line tool skips socket.py's enums
import os
import select
import signal

import prctl

from sandbox import linux, protocol
from sandbox.errors import EXIT_FAILURE, SandboxError, namespace_error
from sandbox.signals import FORWARDED, reset_for_helper

from .reaper import Reaper

TYPE_CHECKING = False  # typing stays out of the spawn server, whose every reaper is a fork of it
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import NoReturn

_own_pidns: tuple[int, int] | None = None  # (pid of the process that opened it, fd)
_own_pidfd: tuple[int, int] | None = None


def _cached_fd(cache: tuple[int, int] | None, opener) -> tuple[int, int]:
    pid = os.getpid()
    if cache is None or cache[0] != pid:
        cache = (pid, opener())
    return cache


def fork(userns: tuple[int, int] | list[int] | None = None, pgid: int | None = None) -> tuple[int, int, socket.socket]:
    """Fork a reaper as PID 1 of a new PID namespace; return its PID, a pidfd for it and our socket to it.

    Runs in a single-threaded launcher (the CLI, or the spawn server). The launcher enters the new
    PID namespace only for this one fork and goes straight back, so it can start the next sandbox.
    The reaper prepares its namespaces at once and then waits for its job (send_job), so a spawn
    server can keep one ready before anybody asks.

    With userns (the uid and gid the caller becomes inside) an unprivileged launcher cannot make a PID
    namespace, so a plain fork() first enters a new user namespace and makes it there; it stays as the
    reaper's parent (see _userns_parent). The pid and pidfd returned are then that parent's: it exits
    only after the reaper, so its end is the sandbox's end.
    """
    global _own_pidns, _own_pidfd
    _own_pidns = _cached_fd(_own_pidns, lambda: os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC))
    _own_pidfd = _cached_fd(_own_pidfd, lambda: os.pidfd_open(os.getpid()))
    ours, theirs = protocol.pair()
    if userns is not None:
        if pgid and pgid != os.getpgrp():
            try:
                os.setpgid(0, pgid)  # the reaper is forked out of our reach: it inherits our group
            except OSError:
                pass
        mapping = (userns[0], userns[1], os.geteuid(), os.getegid())
        pid = os.fork()
        if pid == 0:
            _child(theirs, lambda: _userns_parent(mapping, theirs, _own_pidfd[1]))
        theirs.close()
        return pid, os.pidfd_open(pid), ours
    else:
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
        _child(theirs, lambda: Reaper(theirs, _own_pidfd[1]).run())
    linux.setns(_own_pidns[1], linux.CLONE_NEWPID)
    theirs.close()
    return pid, os.pidfd_open(pid), ours


def _child(sock: socket.socket, life: Callable[[], int]) -> NoReturn:
    """The whole life of a forked helper: it never returns into the launcher's code, whatever happens."""
    code = EXIT_FAILURE
    try:
        code = life()
    except BaseException as exc:
        try:
            protocol.send(sock, ("error", EXIT_FAILURE, f"sandbox helper failed: {exc!r}", 0))
        except BaseException:
            pass
    finally:
        os._exit(code)


def _userns_parent(mapping: tuple[int, int, int, int], sock: socket.socket, launcher_pidfd: int) -> int:
    """The reaper's parent in a user namespace: enter it, map the caller's ids, make the PID namespace,
    fork the reaper, tell the launcher its PID, then wait for it. SIGKILLed when the launcher dies,
    which the reaper sees as its own PDEATHSIG: the job gets its grace period."""
    def tied() -> None:
        # Armed again after every change of credentials, which clears it; then the launcher must still live.
        prctl.set_pdeathsig(signal.SIGKILL)
        if select.select([launcher_pidfd], [], [], 0)[0]:
            os._exit(EXIT_FAILURE)

    reset_for_helper()
    for sig in (*FORWARDED, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(sig, signal.SIG_IGN)  # we share the caller's terminal; only the launcher's death ends us
    prctl.set_name("sandbox-userns")
    tied()
    linux.close_fds_except({sock.fileno(), launcher_pidfd})
    inside_uid, inside_gid, uid, gid = mapping
    try:
        try:
            linux.unshare(linux.CLONE_NEWUSER)
        except OSError as exc:
            raise namespace_error(exc, "a user namespace") from None
        try:
            for name, text in (("setgroups", "deny"), ("uid_map", f"{inside_uid} {uid} 1"),
                               ("gid_map", f"{inside_gid} {gid} 1")):
                with open(f"/proc/self/{name}", "w") as f:
                    f.write(text)
        except OSError as exc:
            raise SandboxError(f"cannot map uid {uid} and gid {gid} into the user namespace: {exc.strerror}") from None
        tied()
        try:
            linux.unshare(linux.CLONE_NEWPID)
        except OSError as exc:
            raise namespace_error(exc, "a PID namespace") from None
    except SandboxError as exc:
        protocol.send(sock, ("error", exc.exit_code, exc.message, exc.errno or 0))
        return exc.exit_code
    own_pidfd = os.pidfd_open(os.getpid())
    child = os.fork()
    if child == 0:
        _child(sock, lambda: Reaper(sock, own_pidfd).run())
    # Our pidfd, which the launcher holds, would say the sandbox ended if we were killed before the
    # reaper: the launcher gets one of the reaper itself (opened before we could ever reap it).
    reaper_pidfd = os.pidfd_open(child)
    protocol.send(sock, ("reaper", child), fds=[reaper_pidfd])
    os.close(reaper_pidfd)
    sock.close()
    while True:
        try:
            _, status = os.waitpid(child, 0)
            return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else EXIT_FAILURE
        except InterruptedError:
            continue


def send_job(sock: socket.socket, pid: int, request: dict, stdio: tuple[int | None, int | None, int | None]) -> None:
    """Give a forked reaper its job: the request and the descriptors that become the job's 0, 1, 2.

    Raises OSError if the request cannot be sent (a descriptor that is not open: EBADF); a reaper that
    died already is not an error here: its caller learns that from the socket.
    """
    pgid = request.get("pgid")
    if pgid:
        # The job belongs in the caller's process group, where the terminal's Ctrl+C and Ctrl+Z land.
        try:
            os.setpgid(pid, pgid)
        except OSError:
            pass
    kind = "session" if request.get("session") else "job"
    try:
        protocol.send(sock, (kind, request, [fd is not None for fd in stdio]),
                      fds=[fd for fd in stdio if fd is not None])
    except (BrokenPipeError, ConnectionResetError):
        pass


def start(request: dict, stdio: tuple[int | None, int | None, int | None]) -> tuple[int, int, socket.socket]:
    """fork() and send_job() in one: a reaper for this job, now."""
    pid, pidfd, sock = fork(request["spec"].get("userns"), request.get("pgid"))
    try:
        send_job(sock, pid, request, stdio)
    except BaseException:
        sock.close()  # the reaper sees its launcher go and exits; nothing of the job ran
        os.close(pidfd)
        raise
    return pid, pidfd, sock

"""The user-namespace parent: the reaper's parent when the sandbox needs a user namespace.

An unprivileged launcher cannot make a PID or mount namespace. This small process, forked by the
launcher, enters a new user namespace, maps the caller's uid and gid to the requested ones inside,
makes the PID namespace there and forks the reaper into it; then it names the reaper to the
launcher and waits for it. It is SIGKILLed when the launcher dies (PDEATHSIG), which the reaper
sees as its own parent's death: the job gets its grace period.
"""

from __future__ import annotations

import _socket as socket
import os
import select
import signal

import prctl

from . import forked
from .shared import linux, wire
from .shared.errors import EXIT_FAILURE, SandboxError, unshare
from .shared.signals import FORWARDED, reset_for_helper


def life(mapping: tuple[int, int, int, int], sock: socket.socket, launcher_pidfd: int, held: bool = False) -> int:
    """Enter the user namespace, map the ids, make the PID namespace, fork the reaper, wait for it. held: the
    sandbox gets a cgroup; wait until the launcher has put us in it (Proceed), so the reaper is born there."""
    from .reaper.main import main as reaper

    def tied() -> None:
        # Armed again after every change of credentials, which clears it; then the launcher must still live.
        prctl.set_pdeathsig(signal.SIGKILL)
        if select.select([launcher_pidfd], [], [], 0)[0]:
            os._exit(EXIT_FAILURE)

    for sig in (*FORWARDED, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(sig, signal.SIG_IGN)  # we share the caller's terminal; only the launcher's death ends us
    reset_for_helper()
    prctl.set_name("sandbox-userns")
    linux.set_command_line("sandbox-userns")
    tied()
    linux.close_fds_except({sock.fileno(), launcher_pidfd})
    try:
        _enter(mapping)
        tied()
        unshare(linux.CLONE_NEWPID, "a PID namespace")
    except SandboxError as exc:
        wire.send(sock, wire.Failed(exc.exit_code, exc.message, exc.errno or 0))
        return exc.exit_code
    if held and wire.recv_kind(sock, (wire.Proceed,)) is None:
        return EXIT_FAILURE  # the launcher went away, or could not make the cgroup
    own_pidfd = os.pidfd_open(os.getpid())
    child = os.fork()
    if child == 0:
        forked.life(sock, lambda: reaper(sock, own_pidfd, mapping[2]))
    # Our pidfd, which the launcher holds, would say the sandbox ended if we were killed before the
    # reaper: the launcher gets one of the reaper itself (opened before we could ever reap it).
    reaper_pidfd = os.pidfd_open(child)
    wire.send(sock, wire.ReaperIs(child), fds=[reaper_pidfd])
    os.close(reaper_pidfd)
    sock.close()
    while True:
        try:
            _, status = os.waitpid(child, 0)
            return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else EXIT_FAILURE
        except InterruptedError:
            continue


def _enter(mapping: tuple[int, int, int, int]) -> None:
    inside_uid, inside_gid, uid, gid = mapping
    unshare(linux.CLONE_NEWUSER, "a user namespace")
    try:
        for name, text in (("setgroups", "deny"), ("uid_map", f"{inside_uid} {uid} 1"),
                           ("gid_map", f"{inside_gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    except OSError as exc:
        raise SandboxError(f"cannot map uid {uid} and gid {gid} into the user namespace: {exc.strerror}") from None

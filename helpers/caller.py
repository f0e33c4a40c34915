"""The spawn server's caller, as the kernel reports it: who may ask for a sandbox, and what its job inherits.

A sandbox the server forks has the server's credentials, which are the caller's as they were when the
server started; a program may drop privileges since (setuid to nobody, setgroups, a capability, a new
namespace), and a job must never get back what its caller gave up. So every request is checked, whoever
wrote it on the channel (our client, or any code running in the caller): the kernel names the sending
process (SO_PASSCRED), /proc gives the requesting thread's credentials, and a pidfd of the caller says that
the PID we read is still the caller's (a PID is not reused while its process lives). A request from anyone
else, or from a caller whose credentials differ from those the server was started for, is refused; the
API's client then starts a server for the credentials its caller has now.

The attributes a program changes without a change of credentials (nice, resource limits, oom_score_adj)
are read for each request from /proc too, never taken from the request: the job's first process takes
those that differ from the server's own, and the default (nothing differs) costs the job nothing.
"""

from __future__ import annotations

import os
import select

from .shared import credentials


class Refused(Exception):
    """A request the server will not serve; str() is the one line the caller gets."""


class Caller:
    """The process that started us (pid, with a pidfd of it), and the credentials of its thread starter then."""

    def __init__(self, pid: int, pidfd: int, starter: int) -> None:
        self.pid = pid
        self.pidfd = pidfd
        own = credentials.open_own()
        try:
            self.ours = credentials.attributes(own)  # what every reaper and job of ours inherits
        finally:
            os.close(own)
        self.started_for: tuple | None = None
        try:
            task = credentials.open_task(pid, starter)
            try:
                self.started_for = credentials.of_task(task)
                self.started_maps = credentials.id_maps(task)
            finally:
                os.close(task)
        except OSError:
            pass  # nothing to compare with: every request is refused

    def check(self, sender: tuple[int, int, int] | None, tid: int) -> tuple | None:
        """Whether a request the kernel says sender (pid, uid, gid) sent for its thread tid (0: its main thread)
        may be served: raises Refused if not; returns the attributes its job takes (credentials.inherited())."""
        if sender is None or sender[0] != self.pid:
            raise Refused("refused: the sandbox spawn server takes requests only from the program that started it; "
                          "ask through the sandbox API in your own program")
        if self.started_for is None:
            raise Refused("the sandbox spawn server could not read its caller's credentials when it started; "
                          "start a new one (sandbox.api.spawner.shut_down())")
        try:
            task = credentials.open_task(self.pid, tid or self.pid)
        except OSError:
            raise Refused(f"the request names thread {tid}, which is not a thread of the caller") from None
        then = self.started_for
        try:
            now = credentials.of_task(task)
            if credentials.hidden(now) != credentials.hidden(then):
                # The caller became (or ceased to be) non-dumpable: compare by the stand-ins on both sides.
                then, now = credentials.with_maps(then, self.started_maps), credentials.with_maps(
                    now, credentials.id_maps(task))
            theirs = credentials.attributes(task)
        except OSError as exc:
            raise Refused(f"cannot read the credentials of the caller's thread {tid}: {exc.strerror}") from None
        finally:
            os.close(task)
        if select.select([self.pidfd], [], [], 0)[0]:
            raise Refused("refused: the program that started this sandbox spawn server has ended")  # (PID reused?)
        changed = credentials.difference(then, now)
        if changed is None and sender[1:] != (_real(now[0]), _real(now[1])):
            changed = "uid or gid (the request names others than the caller's real ones)"
        if changed is not None:
            raise Refused(refusal(changed))
        return credentials.inherited(theirs, self.ours)

    def owner(self) -> tuple[tuple, int]:
        """For a session (sandbox.Job), whose later commands reach its reaper without us: the caller's credentials
        as its /proc/PID/status says them, and a descriptor of that file for the reaper to read them again with (a
        /proc file shows ids as its opener sees them, whatever namespace the reader is in). Refused if they are
        not those the server was started for (a change since check())."""
        fd = os.open(f"/proc/{self.pid}/status", os.O_RDONLY | os.O_CLOEXEC)
        try:
            fields = credentials.status_fields(credentials.read_file(fd))
            assert self.started_for is not None  # check() came first
            changed = credentials.difference(self.started_for[:len(fields)], fields)
            if changed is not None:
                raise Refused(refusal(changed))
            if select.select([self.pidfd], [], [], 0)[0]:
                raise Refused("the caller has ended")
        except BaseException:
            os.close(fd)
            raise
        return fields, fd


def refusal(changed: str) -> str:
    """The one line for a caller whose credentials are no longer those a server (or a session) was started for."""
    return (f"refused: the calling program's {changed} changed since its sandbox spawn server started, and the "
            "server lends none of its own; ask through the sandbox API, which starts a server for the credentials "
            "the program has now")


def _real(ids: bytes) -> int:
    """The real id of a Uid or Gid line."""
    return int(ids.split()[0])

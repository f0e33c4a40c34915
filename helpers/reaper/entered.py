"""Processes in the sandbox that are not the reaper's children: those sandboxed-run --enter started, whose
parent is outside. No SIGCHLD tells of their end, and the sandbox is not over until they end too: each is
watched through a pidfd, found in our own /proc."""

from __future__ import annotations

import os
import select

from ..shared import linux
from .procfs import OwnProc


class Entered:
    def __init__(self, proc: OwnProc) -> None:
        self.proc = proc
        self.watched: dict[int, int] = {}  # pidfd -> pid

    def fds(self) -> list[int]:
        return list(self.watched)

    def any_ready(self, ready: dict[int, int]) -> bool:
        return bool(self.watched) and any(fd in ready for fd in self.watched)

    def alive(self, poller: select.poll) -> bool:
        """True while such a process lives in here. Those that ended are forgotten, new ones watched (their
        pidfds registered with poller)."""
        for fd in list(self.watched):
            if select.select([fd], [], [], 0)[0]:
                poller.unregister(fd)
                del self.watched[fd]
                os.close(fd)
        watched = set(self.watched.values())
        alive = False
        for pid in self.living():
            alive = True
            if pid not in watched:
                try:
                    fd = os.pidfd_open(pid)
                except OSError:
                    continue
                self.watched[fd] = pid
                poller.register(fd, select.POLLIN)
        return alive

    def living(self) -> list[int]:
        """The processes of our namespace but us, zombies left out (their parents outside reap them): our
        /proc lists them, a pidfd of each says whether it has exited (not a file in /proc, which the job could
        mount over)."""
        found = []
        for pid in self.proc.pids():
            if pid == 1:
                continue
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                continue  # gone already
            try:
                if not linux.readable(fd):
                    found.append(pid)
            finally:
                os.close(fd)
        return found

"""The spawn server: a small single-threaded process that forks reapers for the Python API.

A program using the API may be large and multi-threaded; forking reapers from it would be slow,
and PR_SET_PDEATHSIG would follow whichever of its threads asked. So the API starts this server
once per process (a fresh interpreter, over an inherited socketpair that only the caller holds)
and asks it for each sandbox. The server hands the new reaper's socket and pidfd straight to the
caller, who then talks to the reaper directly.

The server refuses to outlive its caller: it watches a pidfd of the caller's process (and has
PDEATHSIG armed), and when the caller is gone it tells every reaper, waits for them, and exits.
"""

from __future__ import annotations

import gc
import os
import select
import signal
import socket
import sys

import prctl

from sandbox import linux, protocol
from sandbox.errors import EXIT_FAILURE, SandboxError
from sandbox.signals import PARENT_GONE

from . import launch


def main(channel_fd: int, caller_pidfd: int) -> None:
    linux.fill_closed_stdio()  # our signalfd and sockets must not become some reaper's stderr
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):
        # The caller decides what a Ctrl+C means; we only go when the caller goes.
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD, PARENT_GONE})
    sigfd = linux.SignalFd((signal.SIGCHLD, PARENT_GONE))
    prctl.set_pdeathsig(PARENT_GONE)
    prctl.set_name("sandbox-server")
    channel = socket.socket(fileno=channel_fd)
    if select.select([caller_pidfd], [], [], 0)[0]:
        return  # the caller died before PDEATHSIG was armed
    gc.freeze()  # forked reapers then share the heap instead of copying every page a collection touches
    server = Server(channel, caller_pidfd, sigfd)
    protocol.send(channel, ("ready", os.getpid()))
    server.make_spare()
    server.serve()


class Server:
    def __init__(self, channel: socket.socket, caller_pidfd: int, sigfd: linux.SignalFd) -> None:
        self.channel = channel
        self.caller_pidfd = caller_pidfd
        self.sigfd = sigfd
        self.reapers: dict[int, int] = {}  # pid -> pidfd, for the reapers not yet reaped
        self.caller_gone = False
        self.hooks: dict[int, list[str]] = {}  # reaper pid -> its on_exit hooks, run here only if the caller died
        # A reaper forked ahead of the next request, its namespaces ready: the fork and the namespace
        # set-up are then off the caller's path. Its mount table is a copy made when it was forked, so
        # it is only used if ours has not changed since (the mountinfo file polls POLLPRI on a change).
        self.spare: tuple[int, int, socket.socket] | None = None
        self.mountinfo = os.open("/proc/self/mountinfo", os.O_RDONLY | os.O_CLOEXEC)
        self.mount_watch = select.poll()
        self.mount_watch.register(self.mountinfo, select.POLLPRI | select.POLLERR)

    def serve(self) -> None:
        poller = select.poll()
        for fd in (self.channel.fileno(), self.caller_pidfd, self.sigfd.fileno()):
            poller.register(fd, select.POLLIN)
        while not (self.caller_gone and not self.reapers):
            ready = dict(poller.poll())
            for signo, _code, _pid in self.sigfd.read():
                if signo == signal.SIGCHLD:
                    self.reap()
                elif signo == PARENT_GONE:
                    self.caller_died(poller)
            if self.caller_pidfd in ready:
                self.caller_died(poller)
            if not self.caller_gone and self.channel.fileno() in ready:
                self.serve_request(poller)

    def serve_request(self, poller: select.poll) -> None:
        try:
            message, fds, _ = protocol.recv(self.channel)
        except (protocol.Closed, ConnectionError):
            self.caller_died(poller)
            return
        if message[0] != "spawn":
            for fd in fds:
                os.close(fd)
            return
        request, present = message[1], message[2]
        it = iter(fds)
        stdio = tuple(next(it) if flag else None for flag in present)
        try:
            userns = request["spec"].get("userns")
            # A user namespace's reaper is forked fresh through its own parent: the spare's namespaces are ours.
            pid, pidfd, sock = self.fork_reaper(userns, request.get("pgid")) if userns is not None \
                else self.take_reaper()
            if request.get("on_exit"):
                self.hooks[pid] = request["on_exit"]
            try:
                launch.send_job(sock, pid, request, stdio)
            except OSError:
                pass  # it died already; the caller learns that from the socket
        except SandboxError as exc:
            protocol.send(self.channel, ("error", exc.exit_code, exc.message))
        except OSError as exc:
            protocol.send(self.channel, ("error", EXIT_FAILURE, f"cannot start the sandbox: {exc.strerror or exc}"))
        else:
            try:
                protocol.send(self.channel, ("spawned", pid), fds=[sock.fileno(), pidfd])
            except OSError:
                pass  # the caller is gone; its pidfd tells us in a moment
            sock.close()
        finally:
            for fd in fds:
                os.close(fd)
        self.make_spare()

    def take_reaper(self) -> tuple[int, int, socket.socket]:
        spare, self.spare = self.spare, None
        if spare is not None:
            pid, pidfd, sock = spare
            stale = self.mount_watch.poll(0) or select.select([pidfd], [], [], 0)[0]
            if not stale:
                return spare
            sock.close()  # it sees end of file and exits; SIGCHLD reaps it
        return self.fork_reaper()

    def fork_reaper(self, userns: list[int] | None = None, pgid: int | None = None) -> tuple[int, int, socket.socket]:
        if userns is None:
            self.mount_watch.poll(0)  # consume earlier changes: the new reaper's copy includes them
        pid, pidfd, sock = launch.fork(userns, pgid)
        self.reapers[pid] = pidfd
        return pid, pidfd, sock

    def make_spare(self) -> None:
        if self.spare is None and not self.caller_gone and os.geteuid() == 0:  # else every request has a userns
            try:
                self.spare = self.fork_reaper()
            except OSError:
                self.spare = None  # the next request forks its own and reports the error

    def reap(self) -> None:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            pidfd = self.reapers.pop(pid, None)
            if pidfd is not None:
                os.close(pidfd)
            commands = self.hooks.pop(pid, None)
            if commands and self.caller_gone:
                run_orphaned_hooks(commands)

    def caller_died(self, poller: select.poll) -> None:
        if self.caller_gone:
            return
        self.caller_gone = True
        for fd in (self.channel.fileno(), self.caller_pidfd):
            poller.unregister(fd)
        if self.spare is not None:
            self.spare[2].close()
            self.spare = None
        # Each reaper would notice by itself (its socket's other end closes), unless a fork of the
        # caller still holds that end; PARENT_GONE is the same news as our own death would give.
        for pidfd in self.reapers.values():
            try:
                signal.pidfd_send_signal(pidfd, PARENT_GONE)
            except ProcessLookupError:
                pass


def run_orphaned_hooks(commands: list[str]) -> None:
    """A dead caller's on_exit hooks, once its sandbox is gone (its reaper reaped). The job's status went
    to the caller, so only the stop reason is known."""
    from sandbox import hooks

    try:
        hooks.run_hooks(commands, hooks.environment(None, None, "caller died"), None, prog="sandbox")
    except BaseException:  # noqa: BLE001 - a hook must never take the server, and the other sandboxes, down
        pass


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))

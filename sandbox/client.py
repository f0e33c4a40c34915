"""The launcher's end of one running sandbox: what its reaper reports, and what we ask of it."""

from __future__ import annotations

import _socket as socket  # the C module: the command-line tool skips socket.py's enums
import _thread
import os
import select
import time
from collections.abc import Callable

from . import linux, protocol
from .errors import EXIT_FAILURE, SandboxError


class ReaperClient:
    """Talks to one reaper over its socket and watches its pidfd.

    The job is over when the reaper has said how the main process ended and the reaper itself has
    exited: the kernel makes PID 1's exit wait for every other process of the namespace, so once its
    pidfd is readable nothing of the sandbox runs and its mounts are gone.
    """

    def __init__(self, reaper_pid: int, pidfd: int | None, sock: socket.socket,
                 on_event: Callable[[str, dict], None] | None = None) -> None:
        self.reaper_pid = reaper_pid
        self.pidfd = pidfd if pidfd is not None else -1  # none: a command of a session, over when its socket closes
        self.sock = sock
        self.ready = False  # the job started, or the session is ready for commands
        self.on_event = on_event
        self.job_pid: int | None = None
        self.status: int | None = None  # the main process's wait status
        self.error: SandboxError | None = None
        self.events: list[tuple[str, dict]] = []
        self.closed = False  # the reaper closed its end
        self.gone = False  # the reaper has exited
        self.hooks_ticket: tuple | None = None  # (spawn server, ticket): who else would run our hooks
        self._lock = _thread.RLock()  # _thread: the command-line tool need not import threading

    # -- reading -----------------------------------------------------------------------------------

    def pump(self, timeout: float | None = 0) -> None:
        """Handle what the reaper sent, waiting up to timeout seconds (None: until something comes)."""
        with self._lock:
            if self.closed:
                return
            if timeout != 0 and not select.select([self.sock], [], [], timeout)[0]:
                return
            while True:
                try:
                    message, fds, pid = protocol.recv(self.sock, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    return
                except (protocol.Closed, ConnectionError):
                    self._closed()
                    return
                except ValueError:
                    continue
                self._handle(message, pid, fds)

    def _handle(self, message: tuple, pid: int | None, fds: list[int]) -> None:
        kind = message[0]
        if kind == "event":
            name, fields = message[1], message[2]
            if name == "started":
                self.job_pid = fields["job_pid"] = pid
                self.ready = True
            elif name == "ready":
                self.ready = True
            self.events.append((name, fields))
            if self.on_event is not None:
                self.on_event(name, fields)
        elif kind == "reaper" and fds:
            # The PID 1 under a user namespace's intermediate parent, and a pidfd for it: the sandbox ends
            # with it, even if that parent is killed first.
            self.reaper_pid = message[1]
            if self.pidfd >= 0:
                os.close(self.pidfd)
            self.pidfd = fds.pop(0)
        elif kind == "exited":
            self.status = message[1]
        elif kind == "error":
            self.error = SandboxError.for_exit_code(message[1], message[2], message[3] if len(message) > 3 else 0)
        for fd in fds:
            os.close(fd)

    def _closed(self) -> None:
        self.closed = True
        if self.status is None and self.error is None:
            self.error = SandboxError(
                f"the sandbox's reaper (pid {self.reaper_pid}) died; the kernel killed the job with it", EXIT_FAILURE)

    # -- waiting -----------------------------------------------------------------------------------

    def wait_started(self) -> None:
        """Block until the job runs (or the session is ready), or raise the SandboxError that kept it from it."""
        while not self.ready and not self.closed:
            self.pump(None)
        if not self.ready:
            self.wait(None)
            raise self.error or SandboxError("the sandbox ended before its job started")

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every process of the sandbox is gone; False if timeout passed first."""
        deadline = linux.deadline_after(timeout)
        while not self.closed:
            self.pump(linux.wait_seconds(deadline))
            if deadline is not None and time.monotonic() >= deadline and not self.closed:
                return False
        while not self.gone and self.pidfd >= 0:
            if select.select([self.pidfd], [], [], linux.wait_seconds(deadline))[0]:
                break
            if deadline is not None and time.monotonic() >= deadline:
                return False
        self.gone = True
        return True

    @property
    def finished(self) -> bool:
        if not self.closed:
            self.pump(0)
        if self.closed and not self.gone and (self.pidfd < 0 or select.select([self.pidfd], [], [], 0)[0]):
            self.gone = True
        return self.gone

    # -- asking ------------------------------------------------------------------------------------

    def send(self, message: tuple) -> bool:
        """Ask the reaper something; False if it is no longer listening."""
        if self.closed:
            return False
        try:
            protocol.send(self.sock, message)
            return True
        except OSError:
            return False

    def signal(self, signum: int, origin: str = "caller") -> bool:
        """Send the job a signal, now (the caller's own decision: send_signal, terminate, kill)."""
        return self.send(("signal", int(signum), origin))

    def relay(self, signum: int) -> bool:
        """Pass on a signal we received ourselves; the reaper drops it if the same one reached the job
        directly (a terminal's Ctrl+C, a signal to our whole process group or cgroup)."""
        return self.send(("relay", int(signum)))

    def stop(self, grace: float | None, reason: str, after_interrupt: bool = False) -> bool:
        """Stop the job: stop signal, grace, SIGKILL. after_interrupt: we stop because of a Ctrl+C or a
        cancellation, so no stop signal is added if a signal asking for an end reached the job already."""
        return self.send(("stop", grace, reason, after_interrupt))

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.sock.close()
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1

"""The launcher's end of one running sandbox (the command's, or the API caller's): what its reaper
reports, what we ask of it, and the one way to wait until every process of it is gone."""

from __future__ import annotations

import _socket as socket  # the C module: the command-line tool skips socket.py's enums
import _thread
import os
import select
import signal
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sandboxed_run_helpers.shared import linux, wire
from sandboxed_run_helpers.shared.errors import EXIT_FAILURE, EXIT_TIMEOUT, SandboxError
from sandboxed_run_helpers.shared.status import say
from sandboxed_run_helpers.shared.usage import Usage

T = TypeVar("T")

REAPER_IS_WITHIN = 5.0  # a user-namespace parent that does not name its reaper by then was killed meanwhile


class ReaperClient:
    """Talks to one reaper over its socket and watches its pidfd.

    The job is over when the reaper has said how the main process ended (its socket then closes) and
    the reaper itself has exited: the kernel makes PID 1's exit wait for every other process of the
    namespace, so once its pidfd is readable nothing of the sandbox runs and its mounts are gone. A
    command of a session has no pidfd of its own: it is over when its socket closes.

    A reaper is trusted no further than its stop: once we asked for one, or it announced one, the sandbox
    must be gone within the grace period and unresponsive.MARGIN; every wait here and in our callers then
    wakes at kill_at, and watch() SIGKILLs a reaper that is still there (shared/unresponsive.py).
    """

    def __init__(self, reaper_pid: int, pidfd: int | None, sock: socket.socket,
                 on_event: Callable[[str, dict[str, Any]], None] | None = None, prog: str = "sandboxed-run",
                 grace: float | None = None) -> None:
        self.reaper_pid = reaper_pid
        self.prog = prog  # how our lines on stderr begin
        self.pidfd = pidfd if pidfd is not None else -1
        self.sock = sock
        self.ready = False  # the job started, or the session is ready for commands
        self.on_event = on_event
        self.job_pid: int | None = None
        self.name: str | None = None  # the sandbox's name in the registry of running sandboxes
        self.status: int | None = None  # the main process's wait status
        self.usage: Usage | None = None  # what the sandbox (or this command) used, as its reaper said at the end
        self.error: SandboxError | None = None
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.closed = False  # the reaper closed its end
        self.gone = False  # every process of the sandbox has ended
        self.kept = False  # the reaper lives on for our next job, and said every process of this one is gone
        self.hooks_ticket: tuple[Any, Any, int] | None = None  # (servers, server, ticket): who else runs our hooks
        # The pid and pidfd are a user-namespace parent's until its ReaperIs names the reaper.
        self.reaper_is_coming = False
        self.grace = grace  # the sandbox's own grace period (None: not known, taken as none)
        self.stop_reasons: list[str] = []  # why the sandbox is stopped, as we asked or the reaper announced, in order
        self.kill_at: float | None = None  # when a reaper that has not ended the sandbox is killed (watch())
        self.allowed: float | None = None  # how long it had
        self.unresponsive: str | None = None  # what we say once we killed it
        self._lock = _thread.RLock()  # _thread: the command-line tool need not import threading
        self._waiters = 0  # threads in wait(): the descriptors stay open for them
        self._close_wanted = False
        self.forked_away = False  # this process is a fork of the caller: the sandbox is its parent's

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
                    message, fds, pid = wire.recv(self.sock, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    return
                except (wire.Closed, ConnectionError):
                    self._closed()
                    return
                except ValueError:
                    continue
                self._handle(message, pid, fds)

    def _handle(self, message: wire.Message, pid: int | None, fds: list[int]) -> None:
        if isinstance(message, wire.Event):
            if message.name == wire.EventName.STOPPING:
                grace = message.fields.get("grace")
                self.expect_end(float("inf") if grace is None else grace, message.fields.get("reason"))
            elif message.name == wire.EventName.STARTED:
                self.job_pid = message.fields["job_pid"] = pid
                self.name = message.fields.get("name")
                self.ready = True
            elif message.name == wire.EventName.READY:
                self.name = message.fields.get("name")
                self.ready = True
            self.emit(message.name, message.fields)
        elif isinstance(message, wire.ReaperIs) and fds:
            # The PID 1 under a user namespace's intermediate parent, and a pidfd for it: the sandbox ends
            # with it, even if that parent is killed first.
            self.reaper_pid = message.pid
            self.reaper_is_coming = False
            if self.pidfd >= 0:
                os.close(self.pidfd)
            self.pidfd = fds.pop(0)
        elif isinstance(message, wire.Exited):
            self.status = message.status
            self.usage = message.usage
            self.kept = message.kept
            if message.usage is not None and message.usage.oom_kills:
                count = message.usage.oom_kills
                say(f"the job ran out of memory: the kernel killed {count} of its processes "
                    f"(the sandbox's memory.max was reached)" if count > 1 else "the job ran out of memory: the "
                    "kernel killed one of its processes (the sandbox's memory.max was reached)", self.prog)
        elif isinstance(message, wire.Failed):
            self.error = SandboxError.for_exit_code(message.exit_code, message.message, message.errno)
        wire.discard(fds, at_once=True)

    def emit(self, name: str, fields: dict[str, Any]) -> None:
        """An event of this sandbox: recorded, and passed to on_event (its name a plain str)."""
        name = str(name)
        self.events.append((name, fields))
        if self.on_event is not None:
            self.on_event(name, fields)

    def _closed(self) -> None:
        self.closed = True
        if self.status is None and self.error is None:
            if self.unresponsive is not None:
                # Killed by us: the timeout's status stays the timeout's.
                code = EXIT_TIMEOUT if wire.StopReason.TIMEOUT in self.stop_reasons else EXIT_FAILURE
                self.error = SandboxError(self.unresponsive, code)
                return
            self.error = SandboxError(
                f"the sandbox's reaper (pid {self.reaper_pid}) died; the kernel killed the job with it", EXIT_FAILURE)

    # -- a reaper that does not end the sandbox in time ---------------------------------------------------

    def expect_end(self, grace: float | None, reason: str | None) -> None:
        """A stop was asked for (grace None: the sandbox's own) or announced: the sandbox must be gone within
        grace and the margin, or watch() kills its reaper. A later stop only brings that nearer."""
        with self._lock:
            if reason is not None and reason not in self.stop_reasons:
                self.stop_reasons.append(str(reason))
            if self.pidfd < 0 or self.gone:
                return  # a command of a session: the session's own client watches the reaper
            from sandboxed_run_helpers.shared import unresponsive  # not on the path of a run that is not stopped

            grace = self.grace if grace is None else grace
            due = unresponsive.due(grace)
            if due is not None and (self.kill_at is None or due < self.kill_at):
                self.kill_at = due
                self.allowed = due - time.monotonic()

    def watch(self) -> None:
        """Past kill_at with the sandbox still there: SIGKILL its reaper through the pidfd and thaw what the
        freezer holds (again every RETHAW seconds until it is gone); once, a killed event and self.unresponsive."""
        with self._lock:
            if self.kill_at is None or self.gone or self.pidfd < 0 or time.monotonic() < self.kill_at:
                return
            from sandboxed_run_helpers.shared import unresponsive

            thawed = unresponsive.kill(self.pidfd, self.reaper_pid)
            self.kill_at = time.monotonic() + unresponsive.RETHAW
            if self.unresponsive is None:
                self.unresponsive = unresponsive.line(self.reaper_pid, self.allowed, thawed, responded=self.closed)
                reason = self.stop_reasons[0] if self.stop_reasons else None
                self.emit(wire.EventName.KILLED, {"count": None, "reason": reason, "time": time.time()})

    # -- waiting: one state machine, driven by wait() here and by the asyncio side -------------------

    def waiting_on(self) -> int | None:
        """The descriptor to wait on before advance() learns more; None once every process is gone."""
        with self._lock:
            if not self.closed and self.sock.fileno() >= 0:
                return self.sock.fileno()
            if not self.gone and self.pidfd >= 0 and not self.kept:
                return self.pidfd
            self.gone = True
            return None

    def advance(self) -> None:
        """Take what the descriptors of waiting_on() say, without blocking."""
        with self._lock:
            if not self.closed:
                self.pump(0)
            if self.closed and not self.gone and (self.pidfd < 0 or self.kept
                                                  or select.select([self.pidfd], [], [], 0)[0]):
                self.gone = True

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every process of the sandbox is gone; False if timeout passed first. Several threads
        may wait at once: our descriptors stay open until the last of them is done (close())."""
        deadline = linux.deadline_after(timeout)
        self.hold()
        try:
            while (fd := self.waiting_on()) is not None:
                wake = deadline if self.kill_at is None else min(self.kill_at, deadline or self.kill_at)
                if not select.select([fd], [], [], linux.wait_seconds(wake))[0]:
                    self.watch()
                    if deadline is not None and time.monotonic() >= deadline:
                        return False
                    continue
                self.advance()
            return True
        finally:
            self.release()

    def hold(self) -> None:
        """A waiter (a thread here, an event loop's reader) watches our descriptors: they stay open until it
        calls release(), whoever asked for close() meanwhile (a detached job's thread that took the end)."""
        with self._lock:
            self._waiters += 1

    def release(self) -> None:
        with self._lock:
            self._waiters -= 1
            if self._close_wanted and not self._waiters:
                self._close_now()

    def wait_started(self) -> None:
        """Block until the job runs (or the session is ready), or raise the SandboxError that kept it from it."""
        while not self.ready and not self.closed:
            self.pump(None)
        # The parent names the reaper right after forking it, but its message may come after the reaper's
        # first: reaper_pid (Job.pid, namespace_path) and the pidfd we would kill must be the reaper's.
        named_by = time.monotonic() + REAPER_IS_WITHIN
        while self.reaper_is_coming and not self.closed and time.monotonic() < named_by:
            self.pump(named_by - time.monotonic())
        if not self.ready:
            self.wait(None)
            raise self.error or SandboxError("the sandbox ended before its job started")

    @property
    def finished(self) -> bool:
        self.advance()
        return self.waiting_on() is None

    def through_interrupts(self, wait: Callable[[], T]) -> T:
        """wait() to its end even through Ctrl+C, each relayed to the job (the reaper drops those the terminal
        gave it already); then raise KeyboardInterrupt if there was one. The one "wait through Ctrl+C"."""
        interrupted = False
        while True:
            try:
                result = wait()
                break
            except KeyboardInterrupt:
                interrupted = True
                self.relay(signal.SIGINT)
        if interrupted:
            raise KeyboardInterrupt
        return result

    # -- asking ------------------------------------------------------------------------------------

    def send(self, message: wire.Message) -> bool:
        """Ask the reaper something; False if it is no longer listening."""
        if self.closed:
            return False
        try:
            wire.send(self.sock, message)
            return True
        except OSError:
            return False

    def signal(self, signum: int, origin: str = "caller") -> bool:
        """Send the job a signal, now (the caller's own decision: send_signal, terminate, kill)."""
        return self.send(wire.Signal(int(signum), origin))

    def relay(self, signum: int) -> bool:
        """Pass on a signal we received ourselves; the reaper drops it if the same one reached the job
        directly (a terminal's Ctrl+C, a signal to our whole process group or cgroup)."""
        return self.send(wire.Relay(int(signum)))

    def stop(self, grace: float | None, reason: wire.StopReason, after_interrupt: bool = False) -> bool:
        """Stop the job: stop signal, grace (None: the sandbox's), SIGKILL. after_interrupt: we stop because of
        a Ctrl+C or a cancellation, so no stop signal is added if one asking for an end reached the job.
        From now on the waits watch for a reaper that does not obey (expect_end)."""
        sent = self.send(wire.Stop(grace, reason, after_interrupt))
        self.expect_end(grace, reason)
        return sent

    def close(self) -> None:
        """Let go of the socket and the pidfd (now, or when the last thread waiting on them is done). Closing
        the socket before the end is letting go of the job: the reaper takes it for the caller's death."""
        with self._lock:
            self._close_wanted = True
            if not self._waiters:
                self._close_now()

    def let_go_after_fork(self) -> None:
        """In a forked copy of the caller: the sandbox is the parent's. Our copies of its descriptors close now,
        whatever threads held them in the parent (they were not copied, and a held socket would keep the parent's
        job alive after the parent's end), and it is never collected here: its hooks and events stay the parent's."""
        self._lock = _thread.RLock()  # another thread of the parent may have held it at the fork
        self._waiters = 0
        self.forked_away = True
        self.hooks_ticket = None
        self.close()
        self.closed = self.gone = True  # nothing more to read or wait for here

    def _close_now(self) -> None:
        if self.sock.fileno() >= 0:
            self.sock.close()
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1

    def __del__(self) -> None:
        # An abandoned Popen must not leak its pidfd (the socket object closes itself).
        if getattr(self, "pidfd", -1) >= 0:
            try:
                os.close(self.pidfd)
            except OSError:
                pass

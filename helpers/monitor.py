"""The hook monitor: a small process of the command's that runs the --on-exit hooks once the sandbox is
gone, even if sandboxed-run itself is SIGKILLed meanwhile.

sandboxed-run forks it right after the reaper, before the reaper has its order: before the job runs, which
could stop the launcher (its process group) before it forked anything more. It holds the reaper's pidfd
and waits on it; then it waits for the launcher's Handoff (how the job ended) over a socket, and runs the
hooks with it. If the launcher died first, its end of the socket closes without one, and the hooks run
with what is known (stop reason "caller died"). While a hook runs, the launcher relays the signals it gets (Relay); we
pass each on to the hook unless the hook got it by itself (relay.py), so no wait of the launcher is
deaf and no hook gets a signal twice. It has no PDEATHSIG and ignores Ctrl+Z: only a SIGKILL of the
monitor itself loses the hooks. Once the launcher has died, the reaper has the sandbox's grace period
and a margin to end it; a reaper that does not (stopped by its job) is SIGKILLed from here
(shared/unresponsive.py), so the hooks do not wait for ever.
"""

from __future__ import annotations

import _socket as socket
import os
import select
import signal
import time

import prctl

from .shared import linux, outlet, unresponsive, wire
from .shared.hooks import Emit, environment, run_hooks
from .shared.relay import Relays
from .shared.signals import FORWARDED


def start(commands: list[str], emit: Emit | None, reaper_pidfd: int, keep: set[int],
          reaper: tuple[int, float]) -> tuple[int, socket.socket]:
    """Fork the monitor; return its PID and the launcher's end of its socket (for handoff()). reaper: its
    PID and the sandbox's grace period, for the watch after the launcher's death."""
    ours, theirs = wire.pair()
    launcher = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            ours.close()
            _life(commands, emit, reaper_pidfd, theirs, keep, (launcher, *reaper))
        except Exception as exc:  # noqa: BLE001 - one line, never a silent end: the hooks did not all run
            from .shared.errors import host_error
            from .shared.status import say

            reason = host_error(exc, "the on-exit hooks could not run") if isinstance(exc, OSError) else None
            # Not drained: with our signals blocked, a reader who stopped reading would hold us deaf.
            say(str(reason) if reason is not None else f"the on-exit hooks could not run: {exc!r}")
        finally:
            os._exit(0)  # _life drained what it had to say
    theirs.close()
    return pid, ours


def _life(commands: list[str], emit: Emit | None, reaper_pidfd: int, sock: socket.socket, keep: set[int],
          watch: tuple[int, int, float]) -> None:
    signal.signal(signal.SIGTSTP, signal.SIG_IGN)
    # Blocked (as the launcher had them when it forked us): the terminal's and a group's signals queue on
    # our signalfd, which is how we know a hook got them by itself.
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    outlet.enable()  # as the launcher's: our waits hear what it relays, whoever stops reading our lines
    prctl.set_name("sandbox-hooks")
    linux.set_command_line("sandbox-hooks")
    # First: the launcher's descriptors we do not need make room for ours (a low ulimit -n).
    linux.close_fds_except({reaper_pidfd, sock.fileno(), *keep})
    sigfd = linux.SignalFd(FORWARDED)
    _until_gone(reaper_pidfd, *watch)  # the sandbox is gone then: every process, the mount namespace
    sigfd.read()  # what reached us while the job ran was the job's business
    handoff = _handoff(sock)
    if handoff is None:
        handoff = wire.Handoff(None, None, wire.StopReason.CALLER_DIED)
    outlet.hurry_at(handoff.deadline)
    relaying = _RelayingWait(sigfd, sock)

    def drain() -> None:
        # Our lines before the next hook's own output, and before the launcher writes "finished" once we
        # are gone; a signal it relays, or one of ours, ends this wait.
        outlet.drain((sigfd.fd, *relaying.heard()))

    run_hooks(commands, environment(handoff.job_status, handoff.shell_status, handoff.reason), emit,
              wait=relaying.wait, before=drain)
    drain()


def _until_gone(reaper_pidfd: int, launcher: int, reaper: int, grace: float) -> None:
    """Until the reaper's pidfd is readable. Once the launcher is dead the reaper must end the sandbox within
    its grace and the margin; else we kill it, and say so once."""
    try:
        launcher_pidfd: int | None = os.pidfd_open(launcher)
    except ProcessLookupError:
        launcher_pidfd = None  # it died before we looked (a job stopped us meanwhile, say)
    try:
        launcher_gone = launcher_pidfd is None or os.getppid() != launcher
        kill_at = unresponsive.due(grace) if launcher_gone else None
        said = False
        while True:
            watched = [reaper_pidfd] if launcher_gone or launcher_pidfd is None else [reaper_pidfd, launcher_pidfd]
            ready = select.select(watched, [], [], linux.wait_seconds(kill_at))[0]
            if reaper_pidfd in ready:
                return
            if launcher_pidfd in ready:
                launcher_gone = True
                kill_at = unresponsive.due(grace)
            if kill_at is not None and time.monotonic() >= kill_at:
                thawed = unresponsive.kill(reaper_pidfd, reaper)
                kill_at = time.monotonic() + unresponsive.RETHAW
                if not said:
                    said = True
                    from .shared.status import say

                    say(unresponsive.line(reaper, grace + unresponsive.MARGIN, thawed))
    finally:
        if launcher_pidfd is not None:
            os.close(launcher_pidfd)


def _handoff(sock: socket.socket) -> wire.Handoff | None:
    received = wire.recv_kind(sock, (wire.Handoff,))
    return None if received is None else received[0]


class _RelayingWait:
    """The wait for one hook: passes on what the launcher relays, unless the hook has it already."""

    def __init__(self, sigfd: linux.SignalFd, sock: socket.socket) -> None:
        self.sigfd = sigfd
        self.sock: socket.socket | None = sock
        self.relays = Relays()

    def wait(self, pid: int) -> int:
        hook = _Hook(pid, time.monotonic())
        pidfd = os.pidfd_open(pid)  # our child: not reaped before we wait for it
        try:
            while True:
                watched = [pidfd, self.sigfd.fd, *([self.sock.fileno()] if self.sock is not None else [])]
                ready = outlet.select_readable(watched, linux.wait_seconds(self.relays.next_due()))
                now = time.monotonic()
                for signo, _code, _pid in self.sigfd.read():
                    self.relays.arrived(signo, now)
                    outlet.hurry()
                if self.sock is not None and self.sock.fileno() in ready:
                    self._read_relays(hook)
                for relay in self.relays.take_due():
                    try:
                        os.kill(pid, relay.signo)
                    except ProcessLookupError:
                        pass
                if pidfd in ready:
                    self.relays.pending.clear()
                    return os.waitpid(pid, 0)[1]
        finally:
            os.close(pidfd)

    def heard(self) -> list[int]:
        """The launcher's socket while it may relay: what it says there ends a drain of ours."""
        return [self.sock.fileno()] if self.sock is not None else []

    def _read_relays(self, hook: _Hook) -> None:
        assert self.sock is not None
        try:
            received = wire.recv_kind(self.sock, (wire.Relay,), socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        if received is None:
            self.sock = None  # the launcher is gone: nobody relays any more
            return
        self.relays.request(hook, received[0].signo)
        outlet.hurry()


class _Hook:
    __slots__ = ("pid", "started")

    def __init__(self, pid: int, started: float) -> None:
        self.pid = pid
        self.started = started


def handoff(pid: int, sock: socket.socket, message: wire.Handoff, sigfd: linux.SignalFd) -> None:
    """The launcher's side, once the sandbox is gone: hand over how the job ended and wait for the hooks to
    finish, relaying the signals we get. A monitor that was killed costs the hooks (one line says so), never
    the job's status."""
    from .shared.signals import signal_name
    from .shared.status import say

    pidfd = os.pidfd_open(pid)  # our child: not reaped before we wait for it
    try:
        _send(sock, message)
        while True:
            ready = select.select([pidfd, sigfd.fd], [], [])[0]
            for signo, _code, _pid in sigfd.read():
                _send(sock, wire.Relay(signo))
                outlet.hurry()
            if pidfd in ready:
                break
    finally:
        os.close(pidfd)
        sock.close()
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return
    if os.WIFSIGNALED(status):
        say(f"the on-exit hook monitor was killed ({signal_name(os.WTERMSIG(status))}); "
            "the hooks it had not run yet did not run")


def _send(sock: socket.socket, message: wire.Message) -> None:
    try:
        wire.send(sock, message)
    except OSError:
        pass  # the monitor is gone; its status says how

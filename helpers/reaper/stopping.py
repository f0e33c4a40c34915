"""How the reaper ends a sandbox, or one command of a session: the stop signal, the grace period, SIGKILL.

A stop on the caller's behalf (its death, its Ctrl+C, a cancellation) sends no stop signal to a job
that a signal asking for an end (INT, TERM, HUP, QUIT or the stop signal) reached already: it is
cleaning up, and a second signal would cut its cleanup short. Ctrl+C pressed IMPATIENT_PRESSES times
within IMPATIENT_WINDOW seconds SIGKILLs everything at once.
"""

from __future__ import annotations

import os
import signal
import time
from collections import deque
from collections.abc import Callable

from ..shared.signals import ENDING, signal_name
from ..shared.wire import EventName, StopReason
from .commands import Process

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .procfs import OwnProc

IMPATIENT_PRESSES = 3
IMPATIENT_WINDOW = 5.0

Report = Callable[..., None]  # report(sock_or_None, event name, **fields)


class Stopping:
    """The stop of one sandbox and of its session's commands. clock() says what time it is (time.monotonic(), the
    clock of the deadlines here and of the reaper's loop; a test passes its own)."""

    def __init__(self, stop_signal: int, grace: float, report: Report,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.stop_signal = stop_signal
        self.grace = grace
        self.report = report
        self.reason: StopReason | None = None  # the whole sandbox is being stopped, and why
        self.deadline: float | None = None  # then SIGKILL whatever is left
        self.asked_to_end = False
        self.interrupts: deque[float] = deque()  # SIGINTs that reached the job

    def delivered(self, signo: int) -> bool:
        """signo reached the job (from outside, or from us). True: Ctrl+C came often enough to kill everything."""
        if signo in ENDING or signo == self.stop_signal:
            self.asked_to_end = True
        if signo != signal.SIGINT:
            return False
        now = self.clock()
        self.interrupts.append(now)
        while now - self.interrupts[0] > IMPATIENT_WINDOW:
            self.interrupts.popleft()
        if len(self.interrupts) < IMPATIENT_PRESSES:
            return False
        self.reason = StopReason.INTERRUPTED_REPEATEDLY
        self.report(None, EventName.STOPPING, reason=self.reason, grace=0.0, signal=None)
        return True

    def signal_wanted(self, after_interrupt: bool) -> bool:
        """Whether a stop sends the stop signal: not after an interrupt if the job has one already."""
        return not (after_interrupt and self.asked_to_end)

    def begin(self, reason: StopReason, grace: float | None = None, send_signal: bool = True) -> None:
        """Stop the whole sandbox: the stop signal to every process (unless send_signal is False), then the
        grace period. A second stop only shortens the grace period."""
        grace = self.grace if grace is None else grace
        if self.reason is not None:
            if self.deadline is not None:
                self.deadline = min(self.deadline, self.clock() + grace)
            return
        self.reason = reason
        sig = self.stop_signal if send_signal else None
        self.report(None, EventName.STOPPING, reason=reason, grace=_shown(grace),
                    signal=signal_name(sig) if sig else None)
        if sig is not None:
            for s in (sig, signal.SIGCONT):  # a stopped process would not see the stop signal until resumed
                if not kill(-1, s):
                    break
        self.deadline = self.clock() + grace

    def begin_for(self, process: Process, grace: float | None, send_signal: bool) -> None:
        """Stop one command of a session: its stop signal, its grace period, then SIGKILL for it alone."""
        if process.status is not None or process.kill_at is not None:
            return
        grace = self.grace if grace is None else grace
        sig = self.stop_signal if send_signal else None
        self.report(process.sock, EventName.STOPPING, reason=StopReason.REQUESTED, grace=_shown(grace),
                    signal=signal_name(sig) if sig else None)
        if sig is not None:
            kill(process.pid, sig)
            kill(process.pid, signal.SIGCONT)
        process.kill_at = self.clock() + grace

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline

    def kill_all(self, proc: OwnProc, reason: StopReason) -> None:
        """SIGKILL every process of the sandbox (but us): the grace period is over, or nobody can wait.
        proc: our own /proc, whatever the job did to its view of it."""
        count = len(proc.pids()) - 1
        if not kill(-1, signal.SIGKILL):
            count = 0
        if count > 0:
            self.report(None, EventName.KILLED, count=count, reason=reason)
        self.deadline = None


def _shown(grace: float) -> float | None:
    """A grace period as the events show it: null for no limit (JSON has no infinity)."""
    return None if grace == float("inf") else grace


def kill(pid: int, sig: int) -> bool:
    """Send sig; False if nothing is left to get it."""
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False

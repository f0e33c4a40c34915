"""Passing on the signals a launcher receives, without giving the target any of them twice or zero times.

A launcher (sandboxed-run, or the API's caller on Ctrl+C) relays each signal it gets to the process
it waits for (the job, or a running on-exit hook). But the same signal often reached that process by
itself: a terminal's Ctrl+C goes to the whole foreground process group, `kill -TERM -PGID` and
timeout(1) signal the whole group, systemd's KillMode=control-group signals every process of the
unit's cgroup. The helper that owns the target (the reaper, the hook monitor) shares the target's
process group and cgroup, so it sees such a signal arrive too.

A signal the kernel itself sends (si_code SI_KERNEL: a terminal's hangup, its Ctrl+C) goes to the whole
foreground process group: it reached the target too, if the target is still in our group. So when the
launcher dies without a word, as it does when it led its terminal's session and was SIGKILLed, the hangup that
followed is known to have reached the target, while a signal some process sent the helper alone means nothing.

One signal sent to the group arrives twice here: once at the helper (an arrival) and once as the
launcher's relay. They are paired one for one: a relay finds an arrival of the same signal from the
last WINDOW seconds, or waits SETTLE seconds for one (timeout(1) and systemd signal the launcher a
moment before the rest); paired, the signal reached the target by itself and the relay is dropped.
A relay left unpaired is delivered; an arrival left unpaired was sent to the helper alone and means
nothing for the target. A target that left our process group pairs with nothing.

timeout(1) signals its child, then its whole group: the launcher may get the signal twice and relay it
twice, for one arrival here. A relay that finds no arrival to pair with, within SETTLE of the last
pairing of the same signal, is that pairing's echo and is dropped too.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable

from .records import Record

SETTLE = 0.1
WINDOW = 1.0


class Target:
    """What a relay goes to: any object with these two attributes (a reaper's Process, the monitor's hook)."""

    pid: int
    started: float  # time.monotonic() when it started: signals that arrived before were not its


def in_our_group(pid: int) -> bool:
    """Whether a signal sent to our process group reaches pid too (it did not move to a group of its own)."""
    try:
        return os.getpgid(pid) == os.getpgrp()
    except OSError:
        return False


class PendingRelay(Record):
    """A signal to pass on to target once due, unless it reached target by itself first."""

    due: float
    target: Target
    signo: int


class Relays:
    """The relays and arrivals of one helper. clock() says what time it is (time.monotonic(), the clock the times
    given here are read from; a test passes its own)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.arrivals: list[tuple[int, float, bool]] = []  # unpaired signals that reached us, when, by the kernel
        self.pending: list[PendingRelay] = []  # unpaired relays, and when they are due
        self.paired: dict[int, float] = {}  # when each signal last paired

    def _could_reach(self, target: Target, when: float) -> bool:
        return when >= target.started and self.clock() - when <= WINDOW and in_our_group(target.pid)

    def arrived(self, signo: int, when: float, by_kernel: bool = False) -> PendingRelay | None:
        """signo reached us (by_kernel: the kernel sent it, to our group). The relay it pairs with, if one waits:
        the signal reached that relay's target."""
        for relay in self.pending:
            if relay.signo == signo and self._could_reach(relay.target, when):
                self.pending.remove(relay)
                self.paired[signo] = self.clock()
                return relay
        self.arrivals.append((signo, when, by_kernel))
        return None

    def request(self, target: Target, signo: int) -> bool:
        """The launcher got signo and passes it on to target. True: it pairs with an arrival, target has it."""
        if self._pair(target, (signo,)) is not None:
            return True
        now = self.clock()
        if now - self.paired.get(signo, -SETTLE - 1) <= SETTLE and in_our_group(target.pid):
            return True  # an echo of the last pairing (timeout(1): the child, then its group)
        self.pending.append(PendingRelay(now + SETTLE, target, signo))
        return False

    def confirm(self, target: Target, signals: Iterable[int], by_kernel: bool = False) -> list[int]:
        """The caller shows it got these signals too (it stops after its Ctrl+C, or it died): the arrivals of
        them that could have reached target did (by_kernel: only those the kernel sent, to our whole group).
        Returns those signals, each paired arrival once."""
        wanted = tuple(signals)
        confirmed = []
        while (signo := self._pair(target, wanted, by_kernel)) is not None:
            confirmed.append(signo)
        return confirmed

    def _pair(self, target: Target, signals: tuple[int, ...], by_kernel: bool = False) -> int | None:
        self.arrivals = [arrival for arrival in self.arrivals if self.clock() - arrival[1] <= WINDOW]
        for arrival in self.arrivals:
            if arrival[0] in signals and self._could_reach(target, arrival[1]) and (arrival[2] or not by_kernel):
                self.arrivals.remove(arrival)
                self.paired[arrival[0]] = self.clock()
                return arrival[0]
        return None

    def next_due(self) -> float | None:
        return min((r.due for r in self.pending), default=None)

    def take_due(self) -> list[PendingRelay]:
        """The relays to deliver now: no arrival paired with them in time."""
        now = self.clock()
        due = [r for r in self.pending if r.due <= now]
        self.pending = [r for r in self.pending if r.due > now]
        return due

"""Passing on the signals a launcher receives, without giving the target any of them twice.

A launcher (sandboxed-run, or the API's caller on Ctrl+C) relays each signal it gets to the process
it waits for (the job, or a running on-exit hook). But the same signal often reached that process by
itself: a terminal's Ctrl+C goes to the whole foreground process group, `kill -TERM -PGID` and
timeout(1) signal the whole group, systemd's KillMode=control-group signals every process of the
unit's cgroup. The helper that owns the target (the reaper, the hook monitor) shares the target's
process group and cgroup, so it sees such a signal arrive itself. A relay of a signal it saw within
WINDOW seconds is a duplicate and is dropped; a relay waits SETTLE seconds for such a signal first,
since timeout(1) and systemd signal the launcher a moment before the rest. A target that left our
process group gets every relay: a group's signal did not reach it.
"""

from __future__ import annotations

import os
import time
from typing import NamedTuple, Protocol

SETTLE = 0.1
WINDOW = 1.0


class Target(Protocol):
    pid: int
    started: float  # time.monotonic() when it started: signals that arrived before were not its


def in_our_group(pid: int) -> bool:
    """Whether a signal sent to our process group reaches pid too (it did not move to a group of its own)."""
    try:
        return os.getpgid(pid) == os.getpgrp()
    except OSError:
        return False


class Relay(NamedTuple):
    due: float
    target: Target
    signo: int


class Relays:
    """The relays of one helper: which signals reached it from outside, and which relays wait."""

    def __init__(self) -> None:
        self.received: dict[int, float] = {}  # signal -> when it last reached us from outside
        self.pending: list[Relay] = []

    def arrived(self, signo: int, when: float) -> None:
        """signo reached us from outside: relays of it waiting for a target that got it too are duplicates."""
        self.received[signo] = when
        self.pending = [r for r in self.pending if not (r.signo == signo and self.reached(r.target, signo))]

    def reached(self, target: Target, signo: int) -> bool:
        """Whether signo, as it last reached us from outside, reached target as well."""
        when = self.received.get(signo)
        return (when is not None and when >= target.started and time.monotonic() - when <= WINDOW
                and in_our_group(target.pid))

    def request(self, target: Target, signo: int) -> None:
        """The launcher got signo and passes it on to target, unless target has it already."""
        if not self.reached(target, signo):
            self.pending.append(Relay(time.monotonic() + SETTLE, target, signo))

    def next_due(self) -> float | None:
        return min((r.due for r in self.pending), default=None)

    def take_due(self) -> list[Relay]:
        """The relays to deliver now."""
        now = time.monotonic()
        due = [r for r in self.pending if r.due <= now]
        self.pending = [r for r in self.pending if r.due > now]
        return due

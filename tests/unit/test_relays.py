"""Relay pairing (helpers/shared/relay.py) as pure logic, on a fake clock: a relay the launcher sends and an
arrival of the same signal at the helper are one signal; everything else reaches the target exactly once."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from sandboxed_run_helpers.shared.relay import SETTLE, WINDOW, Relays
from support import FakeClock

INT, TERM = int(signal.SIGINT), int(signal.SIGTERM)


class Target:
    """A target in our process group (ours), started at `started`."""

    def __init__(self, started: float, pid: int | None = None) -> None:
        self.pid = os.getpid() if pid is None else pid
        self.started = started


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def relays(clock) -> Relays:
    return Relays(clock)


@pytest.fixture
def target(clock) -> Target:
    return Target(clock.now - 10)


def test_a_relay_after_its_arrival_is_dropped(relays, clock, target):
    assert relays.arrived(INT, clock.now) is None
    clock.advance(WINDOW / 2)
    assert relays.request(target, INT) is True
    assert relays.pending == [] and relays.arrivals == []


def test_a_relay_before_its_arrival_waits_settle_and_is_dropped_when_it_comes(relays, clock, target):
    assert relays.request(target, INT) is False
    assert relays.next_due() == clock.now + SETTLE
    clock.advance(SETTLE / 2)
    assert relays.take_due() == []
    relay = relays.arrived(INT, clock.now)
    assert relay is not None and relay.target is target and relay.signo == INT
    clock.advance(SETTLE)
    assert relays.take_due() == [] and relays.next_due() is None


def test_an_unpaired_relay_is_delivered_once_settle_has_passed(relays, clock, target):
    relays.request(target, TERM)
    clock.advance(SETTLE - 0.01)
    assert relays.take_due() == []
    clock.advance(0.01)
    [relay] = relays.take_due()
    assert (relay.target, relay.signo) == (target, TERM)
    assert relays.take_due() == [] and relays.next_due() is None


def test_an_arrival_of_another_signal_pairs_with_nothing(relays, clock, target):
    relays.arrived(TERM, clock.now)
    assert relays.request(target, INT) is False
    assert relays.arrived(TERM, clock.now) is None
    clock.advance(SETTLE)
    assert [r.signo for r in relays.take_due()] == [INT]


def test_an_arrival_older_than_the_window_pairs_with_nothing(relays, clock, target):
    relays.arrived(INT, clock.now)
    clock.advance(WINDOW + 0.01)
    assert relays.request(target, INT) is False
    assert relays.arrivals == []  # forgotten on the way


def test_an_arrival_from_before_the_target_started_was_not_its_own(relays, clock):
    relays.arrived(INT, clock.now)
    late = Target(clock.advance(0.01))
    assert relays.request(late, INT) is False
    clock.advance(SETTLE)
    assert [(r.target, r.signo) for r in relays.take_due()] == [(late, INT)]


def test_one_arrival_pairs_with_one_relay_and_a_second_relay_within_settle_is_its_echo(relays, clock, target):
    relays.arrived(INT, clock.now)
    assert relays.request(target, INT) is True
    clock.advance(SETTLE / 2)
    assert relays.request(target, INT) is True  # timeout(1): the child, then its group
    clock.advance(SETTLE)
    assert relays.request(target, INT) is False  # a new signal: delivered
    clock.advance(SETTLE)
    assert [r.signo for r in relays.take_due()] == [INT]


def test_two_relays_and_two_arrivals_are_two_pairings(relays, clock, target):
    relays.request(target, INT)
    relays.request(target, INT)
    assert relays.arrived(INT, clock.now) is not None
    assert relays.arrived(INT, clock.now) is not None
    clock.advance(SETTLE)
    assert relays.take_due() == []


def test_a_target_outside_our_process_group_pairs_with_nothing(relays, clock):
    other = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        away = Target(clock.now - 10, other.pid)
        relays.arrived(INT, clock.now)
        assert relays.request(away, INT) is False
        assert relays.arrived(INT, clock.now) is None
        clock.advance(SETTLE)
        assert [(r.target, r.signo) for r in relays.take_due()] == [(away, INT)]
    finally:
        other.kill()
        other.wait()


def test_confirm_takes_each_arrival_that_could_reach_the_target_once(relays, clock, target):
    relays.arrived(INT, clock.now)
    relays.arrived(TERM, clock.now)
    relays.arrived(INT, clock.now)
    relays.arrived(int(signal.SIGUSR1), clock.now)
    assert sorted(relays.confirm(target, (INT, TERM))) == [INT, INT, TERM]
    assert relays.confirm(target, (INT, TERM)) == []
    assert [a[0] for a in relays.arrivals] == [signal.SIGUSR1]


def test_confirm_by_kernel_takes_only_what_the_kernel_sent(relays, clock, target):
    relays.arrived(INT, clock.now)  # some process sent it to the helper alone
    relays.arrived(int(signal.SIGHUP), clock.now, by_kernel=True)  # the terminal's hangup, to the whole group
    assert relays.confirm(target, (INT, int(signal.SIGHUP)), by_kernel=True) == [signal.SIGHUP]
    assert [a[0] for a in relays.arrivals] == [INT]


def test_a_confirmed_arrival_makes_the_next_relay_within_settle_an_echo(relays, clock, target):
    relays.arrived(TERM, clock.now)
    assert relays.confirm(target, (TERM,)) == [TERM]
    assert relays.request(target, TERM) is True
    clock.advance(SETTLE * 2)
    assert relays.request(target, TERM) is False


def test_the_default_clock_is_the_monotonic_one():
    import time

    assert Relays().clock is time.monotonic

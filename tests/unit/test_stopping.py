"""The stopping schedule (helpers/reaper/stopping.py) as pure logic, on a fake clock: the grace period and
its deadline, a second stop that only shortens it, impatient Ctrl+C, and when a stop adds no stop signal. No
stop here sends a signal (send_signal=False): the signals themselves are the end-to-end tests' business."""

from __future__ import annotations

import signal
import time

import pytest

from sandboxed_run_helpers.reaper.commands import Process
from sandboxed_run_helpers.reaper.stopping import IMPATIENT_PRESSES, IMPATIENT_WINDOW, Stopping
from sandboxed_run_helpers.shared.wire import StopReason
from support import FakeClock, check_event

GRACE = 10.0


class Reports(list):
    """What the stopping reported, as report(sock, event, **fields); each checked against the status schema."""

    def __call__(self, sock, event, **fields) -> None:
        fields["time"] = time.time()  # as the reaper's report() adds it
        check_event({"event": str(event), **fields}, "Stopping's report")
        self.append((sock, str(event), fields))

    def events(self) -> list[tuple[str, object, object, object]]:
        return [(name, f.get("reason"), f.get("grace"), f.get("signal")) for _, name, f in self]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def reports() -> Reports:
    return Reports()


@pytest.fixture
def stopping(clock, reports) -> Stopping:
    return Stopping(signal.SIGTERM, GRACE, reports, clock)


def test_a_stop_reports_once_and_expires_at_the_end_of_its_grace(stopping, clock, reports):
    assert stopping.reason is None and not stopping.expired(clock.now)
    stopping.begin(StopReason.TIMEOUT, send_signal=False)
    assert reports.events() == [("stopping", "timeout", GRACE, None)]
    assert stopping.reason == StopReason.TIMEOUT
    assert not stopping.expired(clock.advance(GRACE - 0.001))
    assert stopping.expired(clock.advance(0.001))


def test_a_stop_with_its_own_grace(stopping, clock, reports):
    stopping.begin(StopReason.REQUESTED, 2.5, send_signal=False)
    assert reports.events() == [("stopping", "requested", 2.5, None)]
    assert stopping.deadline == clock.now + 2.5


def test_no_grace_expires_at_once(stopping, clock):
    stopping.begin(StopReason.MAIN_EXITED, 0.0, send_signal=False)
    assert stopping.expired(clock.now)


def test_an_endless_grace_shows_as_null_and_never_expires(clock, reports):
    stopping = Stopping(signal.SIGTERM, float("inf"), reports, clock)
    stopping.begin(StopReason.CALLER_DIED, send_signal=False)
    assert reports.events() == [("stopping", "caller died", None, None)]
    assert not stopping.expired(clock.advance(1e9))


def test_a_second_stop_only_shortens_the_grace(stopping, clock, reports):
    stopping.begin(StopReason.REQUESTED, 60.0, send_signal=False)
    clock.advance(1)
    stopping.begin(StopReason.TIMEOUT, 120.0, send_signal=False)  # longer: changes nothing
    assert stopping.deadline == clock.now - 1 + 60.0
    stopping.begin(StopReason.TIMEOUT, 5.0, send_signal=False)  # shorter: the deadline comes nearer
    assert stopping.deadline == clock.now + 5.0
    assert stopping.reason == StopReason.REQUESTED  # the first stop's reason stays
    assert len(reports) == 1
    assert stopping.expired(clock.advance(5.0))


def test_a_second_stop_after_the_kill_changes_nothing(stopping, clock, reports):
    stopping.begin(StopReason.TIMEOUT, 0.0, send_signal=False)
    stopping.deadline = None  # as kill_all leaves it
    stopping.begin(StopReason.REQUESTED, 0.0, send_signal=False)
    assert stopping.deadline is None and len(reports) == 1


@pytest.mark.parametrize("spacing", [0.0, 1.0, IMPATIENT_WINDOW / (IMPATIENT_PRESSES - 1)])
def test_ctrl_c_pressed_often_enough_within_the_window_kills_at_once(stopping, clock, reports, spacing):
    presses = []
    for press in range(IMPATIENT_PRESSES):
        clock.advance(spacing if press else 0.0)
        presses.append(stopping.delivered(signal.SIGINT))
    assert presses == [False] * (IMPATIENT_PRESSES - 1) + [True]
    assert stopping.reason == StopReason.INTERRUPTED_REPEATEDLY
    assert reports.events() == [("stopping", "interrupted repeatedly", 0.0, None)]


def test_ctrl_c_spread_over_more_than_the_window_never_kills(stopping, clock, reports):
    spacing = IMPATIENT_WINDOW / (IMPATIENT_PRESSES - 1) + 0.001
    for _ in range(IMPATIENT_PRESSES * 3):
        assert stopping.delivered(signal.SIGINT) is False
        clock.advance(spacing)
    assert stopping.reason is None and reports == []


def test_other_signals_do_not_count_as_presses(stopping, clock):
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGINT, signal.SIGHUP):
        assert stopping.delivered(sig) is False
    assert stopping.delivered(signal.SIGINT) is True


@pytest.mark.parametrize(("delivered", "after_interrupt", "wanted"), [
    ([], False, True), ([], True, True),
    ([signal.SIGINT], True, False), ([signal.SIGTERM], True, False), ([signal.SIGHUP], True, False),
    ([signal.SIGQUIT], True, False), ([signal.SIGUSR2], True, False),  # the stop signal itself
    ([signal.SIGUSR1], True, True), ([signal.SIGWINCH], True, True),  # they ask for no end
    ([signal.SIGTERM], False, True),  # a stop that is not after an interrupt always signals
])
def test_a_stop_after_an_interrupt_adds_no_signal_to_one_asking_for_an_end(clock, reports, delivered,
                                                                            after_interrupt, wanted):
    stopping = Stopping(signal.SIGUSR2, GRACE, reports, clock)
    for sig in delivered:
        stopping.delivered(sig)
    assert stopping.signal_wanted(after_interrupt) is wanted


def test_one_command_of_a_session_stops_alone(stopping, clock, reports):
    process = Process(2, "its socket", clock.now)
    stopping.begin_for(process, 3.0, send_signal=False)
    assert process.kill_at == clock.now + 3.0
    assert reports == [("its socket", "stopping", reports[0][2])]
    assert reports.events() == [("stopping", "requested", 3.0, None)]
    assert stopping.reason is None and stopping.deadline is None  # the sandbox runs on
    clock.advance(1)
    stopping.begin_for(process, 0.0, send_signal=False)  # asked again: the first stop stands
    assert process.kill_at == clock.now - 1 + 3.0 and len(reports) == 1


def test_a_command_stops_with_the_sandboxs_grace_unless_given_one(stopping, clock):
    process = Process(2, None, clock.now)
    stopping.begin_for(process, None, send_signal=False)
    assert process.kill_at == clock.now + GRACE


def test_a_command_that_has_ended_is_not_stopped(stopping, clock, reports):
    process = Process(2, None, clock.now)
    process.status = 0
    stopping.begin_for(process, 1.0, send_signal=False)
    assert process.kill_at is None and reports == []


def test_the_default_clock_is_the_monotonic_one(reports):
    assert Stopping(signal.SIGTERM, GRACE, reports).clock is time.monotonic

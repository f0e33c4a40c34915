"""support.stays, the suite's one negative wait: it looks for the whole time, and fails at the first look that
shows what must not happen."""

from __future__ import annotations

import time

from support import stays


def test_it_holds_for_the_whole_time():
    looks = []
    started = time.monotonic()
    assert stays(lambda: looks.append(time.monotonic()) or True, 0.2)
    assert time.monotonic() - started >= 0.2
    assert len(looks) >= 3 and looks[-1] - started >= 0.2  # it looked until the end, and at the end


def test_it_fails_at_the_first_look_that_does_not_hold():
    started = time.monotonic()
    assert not stays(lambda: False, 60)
    assert time.monotonic() - started < 30


def test_it_sees_what_happens_in_the_middle():
    end_of_quiet = time.monotonic() + 0.1
    started = time.monotonic()
    assert not stays(lambda: time.monotonic() < end_of_quiet, 60)
    assert time.monotonic() - started < 30

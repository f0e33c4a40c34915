"""Durations as people write them: seconds (30, 1.5, 1e3) or systemd's time spans (500ms, 10m, 1h30m, 2d).

A bare number is seconds. A span is one or more NUMBER UNIT parts, spaces allowed between them, each
number possibly with a fraction; the units are systemd.time(7)'s (us, ms, s, min or m, h, d, w, M for
months of 30.44 days, y for years of 365.25 days, and their long names), case as there: "m" is a
minute, "M" a month. "inf" and "infinity" mean no limit. Nothing here knows an option's meaning;
options.py decides what 0 or infinity stand for.
"""

from __future__ import annotations

import math
import re

_MINUTE, _HOUR, _DAY = 60.0, 3600.0, 86400.0
UNITS = {
    **dict.fromkeys(("us", "usec", "µs", "μs"), 1e-6),
    **dict.fromkeys(("ms", "msec"), 1e-3),
    **dict.fromkeys(("s", "sec", "second", "seconds"), 1.0),
    **dict.fromkeys(("m", "min", "minute", "minutes"), _MINUTE),
    **dict.fromkeys(("h", "hr", "hour", "hours"), _HOUR),
    **dict.fromkeys(("d", "day", "days"), _DAY),
    **dict.fromkeys(("w", "week", "weeks"), 7 * _DAY),
    **dict.fromkeys(("M", "month", "months"), 30.44 * _DAY),
    **dict.fromkeys(("y", "year", "years"), 365.25 * _DAY),
}
# Compiled on first use (re caches them): the command pays nothing for a duration it reads as a plain number.
_NUMBER = r"\+?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_PART = r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([^\d\s.]+)"
HINT = "use seconds (30, 1.5) or a span such as 500ms, 10m, 1h30m; inf for none"


def parse(text: str, name: str) -> float:
    """Seconds (a float >= 0, possibly infinite) from text; ValueError naming the option otherwise."""
    stripped = text.strip()
    if stripped.lower() in ("inf", "infinity", "+inf", "+infinity"):
        return math.inf
    if stripped.startswith("-"):
        raise ValueError(f"{name} must be a duration >= 0, not {text!r}")
    if stripped[:1].isdigit() and stripped.replace(".", "", 1).isdecimal():  # not isdigit: "²" is no number
        return float(stripped)  # the common case, without a regular expression
    if re.fullmatch(_NUMBER, stripped):
        return float(stripped)
    seconds, at = 0.0, 0
    part_pattern = re.compile(_PART)
    while at < len(stripped):
        part = part_pattern.match(stripped, at)
        if part is None:
            raise ValueError(f"{name}: {text!r} is not a duration: {HINT}")
        number, unit = part.groups()
        if unit not in UNITS:
            raise ValueError(f"{name}: unknown unit {unit!r} in {text!r}: {HINT}")
        seconds += float(number) * UNITS[unit]
        at = part.end()
    if not stripped:
        raise ValueError(f"{name}: an empty duration: {HINT}")
    return seconds

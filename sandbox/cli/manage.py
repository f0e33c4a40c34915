"""sandboxed-run --list, --stop and --enter: what one does with running sandboxes (sandbox/running.py)."""

from __future__ import annotations

import shlex
import sys
import time
from typing import Any

from sandboxed_run_helpers.shared.errors import EXIT_FAILURE
from sandboxed_run_helpers.shared.options import BY_NAME, OPTIONS, check_grace
from sandboxed_run_helpers.shared.status import printable, say

from .. import running
from .words import UsageError

MODES = ("list", "enter", "stop")
# The options each one takes besides its own flag.
GOES_WITH = {"list": {"json"}, "enter": {"cwd", "setenv", "unsetenv", "clearenv"}, "stop": {"grace"}}


def mode_of(values: dict[str, Any], command: tuple[str, ...], given: set[str]) -> str | None:
    """Which of --list, --enter, --stop the command line asks for (None: run COMMAND); UsageError for a
    mixture that means nothing."""
    chosen = [mode for mode in MODES if values[mode]]
    if not chosen:
        if values["json"]:
            raise UsageError("--json goes with --list")
        return None
    if len(chosen) > 1:
        raise UsageError("--list, --enter and --stop exclude each other")
    mode = chosen[0]
    for option in OPTIONS:
        if option.in_cli and option.name in given and option.name != mode and option.name not in GOES_WITH[mode]:
            raise UsageError(f"{option.flag} does not go with --{mode}")
    if command and mode != "enter":
        raise UsageError(f"--{mode} takes no command")
    return mode


def manage(mode: str, values: dict[str, Any], command: tuple[str, ...], given: set[str]) -> int:
    if mode == "list":
        return list_sandboxes(values["json"])
    if mode == "stop":
        try:
            grace = check_grace(BY_NAME["grace"].check(values["grace"], "--grace")) if "grace" in given else None
        except (TypeError, ValueError) as exc:
            raise UsageError(str(exc)) from None
        running.stop(values["stop"], grace, "sandboxed-run")
        return 0
    from .enter import enter

    return enter(values["enter"], command, values)


def list_sandboxes(as_json: bool) -> int:
    """The listing on stdout; then, if a registry directory of ours is someone else's, a line saying so and
    125: sandboxes of ours may be missing from it, as they run unlisted."""
    sandboxes, problems = running.survey()
    _show(sandboxes, as_json)
    if not problems:
        return 0
    sys.stdout.flush()
    for problem in problems:
        say(f"this list may lack sandboxes of yours, which run unlisted: {problem}")
    return EXIT_FAILURE


def _show(sandboxes: list[running.RunningSandbox], as_json: bool) -> None:
    if as_json:
        import json

        sys.stdout.write(json.dumps([s.to_json() for s in sandboxes], indent=2) + "\n")
        return
    if not sandboxes:
        return
    rows: list[tuple[str, ...]] = [("NAME", "OWNER", "REAPER", "JOB", "STARTED", "STATE", "COMMAND")]
    for s in sandboxes:
        state = f"{s.state} ({s.stop_reason})" if s.stop_reason else s.state
        command = "(a sandbox.Job)" if s.command is None and s.started is not None else shlex.join(s.command or [])
        rows.append(tuple(printable(cell) for cell in (
            s.name, s.owner_name, str(s.reaper_pid or "-"), str(s.job_pid or "-"), _when(s.started), state, command)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
        if index and sandboxes[index - 1].confinement:
            lines.append("    confined: " + printable(_confinement(sandboxes[index - 1].confinement)))
        if index:
            for mount in sandboxes[index - 1].mounts:
                if mount.own:  # the host's own mounts, seen through, would drown the sandbox's
                    lines.append("    " + "  ".join(printable(field) for field in (mount.target, mount.fstype,
                                                                                      mount.source, mount.options)))
    sys.stdout.write("\n".join(line.rstrip() for line in lines) + "\n")


def _confinement(found: dict[str, Any]) -> str:
    """A sandbox's confining options as the command line writes them."""
    words = []
    for name, value in found.items():
        option = BY_NAME[name]
        items = value if isinstance(value, list) else [value]
        if option.many:
            words += [f"{option.flag} {shlex.quote(str(item))}" for item in items]
        else:
            words.append(f"{option.flag} {shlex.quote(','.join(map(str, items)))}")
    return " ".join(words)


def _when(started: float | None) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "-"
    except (OverflowError, OSError, ValueError):
        return "-"

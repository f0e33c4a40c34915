"""--json-status FILE / --json-status-fd N: every lifecycle event as one JSON object per line.

Each line is {"event": NAME, "time": UNIX_SECONDS, ...fields}; README.md lists the events and fields.
A line is written with one write(2) as the event happens, so a reader following the file sees it live.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

from .errors import SandboxError


class StatusWriter:
    def __init__(self, fd: int, name: str) -> None:
        self.fd = fd
        self.name = name
        self.broken = False

    @classmethod
    def open_file(cls, path: str) -> StatusWriter:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise SandboxError(f"--json-status {path}: {exc.strerror}") from None
        return cls(fd, path)

    @classmethod
    def from_fd(cls, fd: int) -> StatusWriter:
        try:
            os.fstat(fd)
        except OSError:
            raise SandboxError(f"--json-status-fd {fd}: not an open file descriptor") from None
        os.set_inheritable(fd, False)  # for the job it is none of its business
        return cls(fd, f"descriptor {fd}")

    def write(self, name: str, fields: dict) -> None:
        if self.broken:
            return
        record = {"event": name, "time": fields.get("time", time.time())}
        record.update((k, v) for k, v in fields.items() if k != "time")
        import json  # here: a run without --json-status should not pay for it

        line = (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode()
        try:
            while line:
                line = line[os.write(self.fd, line):]
        except OSError as exc:
            self.broken = True
            print(f"sandboxed-run: cannot write the status to {self.name}: {exc.strerror}", file=sys.stderr)


def fan_out(*callbacks: Callable[[str, dict], None] | None) -> Callable[[str, dict], None] | None:
    """One on_event callback that calls each given one, in order."""
    chosen = [c for c in callbacks if c is not None]
    if not chosen:
        return None
    if len(chosen) == 1:
        return chosen[0]

    def call_all(name: str, fields: dict) -> None:
        for callback in chosen:
            callback(name, fields)

    return call_all

"""--json-status FILE / --json-status-fd N: every lifecycle event as one JSON object per line.

Each line is {"event": NAME, "time": UNIX_SECONDS, ...fields}; docs/status.md lists the events and fields.
A line is written as the event happens, so a reader following the file sees it live (a reader who stops
reading holds the lines back, never us: outlet.py).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from collections.abc import Callable

from .errors import SandboxError
from .outlet import Outlet, outlet

_stderr: Outlet | None = None


def printable(text: str) -> str:
    """text with what a terminal would not show escaped (\\n, \\x1b, \\x9b): a value we echo (a path, a
    command, a sandbox's mount points) is someone's to choose; the reader's terminal must show it, not obey
    it, and a line of ours stays one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def say(line: str, prog: str = "sandboxed-run") -> None:
    """One line of ours on stderr. Our own output must never change the job's fate: if the reader went
    away (EPIPE, as under `2>&1 | head -1`), this line and every later one are dropped; in the command, a
    reader who stops reading holds the line back (outlet.py), never us."""
    global _stderr
    if _stderr is None:
        _stderr = outlet(2, lambda exc: None)
    _stderr.write(f"{prog}: {printable(line)}\n".encode(errors="replace"))


class StatusWriter:
    def __init__(self, fd: int, name: str) -> None:
        self.fd = fd
        self.name = name
        self.owner = os.getpid()  # a forked copy (the hook monitor) leaves the one report to its owner
        self.outlet = outlet(fd, self._failed)

    def _failed(self, exc: OSError) -> None:
        if os.getpid() == self.owner:
            say(f"cannot write the status to {self.name}: {exc.strerror}; the job goes on")

    @classmethod
    def open_file(cls, path: str) -> StatusWriter:
        """Open FILE for the status, truncated if it is a regular file. Never through a symbolic link at its
        end, nor through one that another user planted in a shared sticky directory such as /tmp, and never
        a file (or FIFO) someone else owns there: the kernel's protected_symlinks, protected_regular and
        protected_fifos rules, whatever their settings on this machine."""
        try:
            _check_symlinks(path)
            try:
                # Non-blocking: someone else's FIFO without a reader must not hold us before the job starts.
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    raise
                _check_owner(os.lstat(path), path)  # a FIFO of ours without a reader yet: wait for one
                fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except SandboxError:
            raise
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise SandboxError(f"--json-status {path}: is a symbolic link; name the file itself "
                                   "(or pass a descriptor with --json-status-fd)") from None
            raise SandboxError(f"--json-status {path}: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            _check_owner(st, path)
            if stat.S_ISREG(st.st_mode):
                os.ftruncate(fd, 0)
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        except SandboxError:
            os.close(fd)
            raise
        except OSError as exc:
            os.close(fd)
            raise SandboxError(f"--json-status {path}: {exc.strerror}") from None
        return cls(fd, path)

    @classmethod
    def from_fd(cls, fd: int) -> StatusWriter:
        """Write to a copy of descriptor fd, above 2 and close-on-exec: the caller's own descriptor (stdout,
        say) keeps its flags, so the hooks still inherit it, and the job never gets our copy."""
        try:
            private = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
        except OSError:
            raise SandboxError(f"--json-status-fd {fd}: not an open file descriptor") from None
        return cls(private, f"descriptor {fd}")

    def write(self, name: str, fields: dict) -> None:
        if self.outlet.broken:
            return
        record = {"event": name, "time": fields.get("time", time.time())}
        record.update((k, v) for k, v in fields.items() if k != "time")
        import json  # here: a run without --json-status should not pay for it

        self.outlet.write((json.dumps(record, separators=(",", ":"), default=str) + "\n").encode())


def _shared_sticky(directory: os.stat_result) -> bool:
    return bool(directory.st_mode & stat.S_ISVTX and directory.st_mode & (stat.S_IWOTH | stat.S_IWGRP))


def _check_owner(st: os.stat_result, path: str) -> None:
    """Refuse a file another user owns in a shared sticky directory (it may have been planted for us)."""
    parent = os.stat(os.path.dirname(os.path.abspath(path)))
    if _shared_sticky(parent) and st.st_uid not in (os.geteuid(), parent.st_uid):
        raise SandboxError(f"--json-status {path}: owned by uid {st.st_uid} in a shared sticky directory; "
                           "refusing to write to another user's file")


def _check_symlinks(path: str) -> None:
    """Refuse a path that goes through a symbolic link another user owns in a shared sticky directory."""
    reached = "/"
    for part in os.path.abspath(path).split("/")[1:]:
        candidate = os.path.join(reached, part)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            parent = os.stat(reached)
            if _shared_sticky(parent) and st.st_uid not in (os.geteuid(), parent.st_uid):
                raise SandboxError(f"--json-status {path}: {candidate} is a symbolic link of uid {st.st_uid} in a "
                                   "shared sticky directory; refusing to follow it")
            candidate = os.path.realpath(candidate)
        reached = candidate


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

"""Our own output (lines on stderr, the status descriptor) in the command, where a reader who stops reading
must never stop us: a write that would block keeps the rest here, in order, and it goes out when the
descriptor has room again (the wait loops push it), or is dropped when a signal says to end.

Only the sandboxed-run process and the hook monitor it forks write this way (enable()): they wait with the
signals they pass on blocked, so a write blocked on a full pipe would be deaf to them and to --timeout.
Elsewhere (an API caller's process, a short-lived child) our lines block as the program's own would.
"""

from __future__ import annotations

import errno
import math
import os
import select
import stat
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

PIPE_BUF = 4096  # at most this much in one plain write after poll() said "room": never blocks a pipe

_enabled_in = 0  # the process that called enable(): its children write as everyone does, unless they enable
_outlets: list[Outlet] = []
_heard: list[int] = []  # hear()
_deadline: float | None = None  # hurry(), hurry_at(): from when a drain writes only what fits at once


def enable() -> None:
    """From now on, this process's outlets never block; it drains them before it ends (drain())."""
    global _enabled_in
    _enabled_in = os.getpid()


def outlet(fd: int, failed: Callable[[OSError], None]) -> Outlet:
    """The outlet for descriptor fd. Descriptors of one pipe, socket or terminal (stderr and a status
    descriptor, say) share one, so that their lines keep their order. failed(error) is told once if it
    cannot be written at all (the reader went away: EPIPE); from then on everything for it is dropped."""
    try:
        st = os.fstat(fd)
    except OSError:  # not open: the first write says so, to failed
        return Outlet(fd, (-1, fd), failed)
    if not stat.S_ISREG(st.st_mode):  # a regular file has an offset of its own per descriptor
        for other in _outlets:
            if other.file == (st.st_dev, st.st_ino):
                other.told.append(failed)
                return other
    return Outlet(fd, (st.st_dev, st.st_ino), failed)


class Outlet:
    """One reader of ours: see outlet()."""

    def __init__(self, fd: int, file: tuple[int, int], failed: Callable[[OSError], None]) -> None:
        self.fd = fd
        self.file = file
        self.told = [failed]
        self.broken = False
        self.pending = bytearray()
        self.nowait = True  # pwritev2(RWF_NOWAIT) works here; False: write to self.own instead
        self.own: int | None = None  # a non-blocking descriptor of our own for the file (a terminal), or -1
        _outlets.append(self)

    def write(self, data: bytes) -> None:
        """Write data now, as far as the reader has room (all of it, blocking, unless enable() was called)."""
        if self.broken:
            return
        if _enabled_in != os.getpid():
            try:
                while data:
                    data = data[os.write(self.fd, data):]
            except OSError as exc:
                self._break(exc)
            return
        self.pending += data
        self.push()

    def push(self) -> None:
        """Write what is pending, as far as there is room."""
        try:
            while self.pending:
                written = self._write_now()
                if written is None:
                    return
                del self.pending[:written]
        except OSError as exc:
            self._break(exc)

    def _break(self, exc: OSError) -> None:
        self.broken = True
        self.pending.clear()
        for failed in self.told:
            failed(exc)

    def _chunk(self) -> bytes:
        """Whole lines of at most PIPE_BUF bytes (a longer line alone): a pipe takes such a write at once or not
        at all, so a job or hook writing to the same pipe never lands inside one of our lines."""
        end = self.pending.rfind(b"\n", 0, PIPE_BUF)
        if end < 0:
            end = self.pending.find(b"\n")
        return bytes(self.pending[:end + 1] if end >= 0 else self.pending)

    def _write_now(self) -> int | None:
        if self.nowait:
            try:
                return os.pwritev(self.fd, [self._chunk()], -1, os.RWF_NOWAIT)
            except BlockingIOError:
                return None
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                self.nowait = False  # a terminal or a regular file: they do not take the flag
        if self.own is None:
            self.own = _reopen_nonblocking(self.fd)
        if self.own >= 0:
            try:
                return os.write(self.own, self.pending[:PIPE_BUF])
            except BlockingIOError:
                return None
        # A terminal blocks until the whole write is taken, however little room poll() saw: one we could not
        # open again is written a byte at a time (a plain file never blocks).
        if not select.select([], [self.fd], [], 0)[1]:
            return None
        return os.write(self.fd, self.pending[:1 if stat.S_ISCHR(os.fstat(self.fd).st_mode) else PIPE_BUF])


def _reopen_nonblocking(fd: int) -> int:
    """Our own open file description of the terminal that fd is, non-blocking: O_NONBLOCK on fd itself would
    be the job's too, which shares it. -1: not a terminal, or not one to open again (a pseudo-terminal's
    master: opening its name makes a new pair, nobody's)."""
    try:
        if not os.isatty(fd) or os.path.basename(os.readlink(f"/proc/self/fd/{fd}")) == "ptmx":
            return -1
        own = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return -1
    if os.fstat(own).st_rdev != os.fstat(fd).st_rdev:
        os.close(own)
        return -1
    return own


def waiting() -> list[int]:
    """The descriptors with output waiting for room: a wait loop selects them for writing, then calls push()."""
    return [o.fd for o in _outlets if o.pending]


def push(writable: list[int]) -> None:
    """Write what is pending on the descriptors that select() found writable."""
    for outlet in _outlets:
        if outlet.pending and outlet.fd in writable:
            outlet.push()


def select_readable(readable: list[int], timeout: float | None) -> list[int]:
    """select.select for reading, which also writes what is pending wherever there is room meanwhile: the
    wait loops of a process that enabled this. An empty list: the timeout, or only room to write."""
    fds = waiting()
    ready, writable, _ = select.select(readable, fds, [], timeout)
    if writable:
        push(writable)
    return ready


def hurry() -> None:
    """A signal came for us (and was passed on): whoever sent it wants us gone, so the drain before we end
    writes only what there is room for at once."""
    hurry_at(-math.inf)


def hurry_at(deadline: float | None) -> None:
    """From this time.monotonic() on we are hurried (the --timeout: it bounds our wait for a reader too); an
    earlier deadline stays."""
    global _deadline
    if deadline is not None and (_deadline is None or deadline < _deadline):
        _deadline = deadline


def deadline() -> float | None:
    """When we are hurried from (-inf: already), for a process that takes over our readers; None: never."""
    return _deadline


def hear(fd: int) -> None:
    """What ends a drain from now on (the signalfd of the signals we wait with), besides those it is given."""
    _heard.append(fd)


def drain(also: tuple[int, ...] = ()) -> None:
    """Before we end, or hand the reader over to another process of ours: until what is pending is written,
    or something heard (hear(), also) is readable: then it is dropped, and what woke us is left there for
    its reader. Without anything to hear, our signals are not blocked: one ends the wait, and us."""
    hear = [*_heard, *also]
    while fds := waiting():
        timeout = None if _deadline is None else max(0.0, _deadline - time.monotonic())
        readable, writable, _ = select.select(hear, fds, [], timeout)
        if readable or (timeout is not None and not writable):  # out of time: as if one more signal came
            for outlet in _outlets:
                outlet.pending.clear()
            return
        push(writable)


def _forget_in_child() -> None:
    # What was pending when a process of ours forked is its parent's to write, not the child's too; and what
    # the parent hears is not ours (its descriptors may be closed here, their numbers reused).
    global _deadline
    for outlet in _outlets:
        outlet.pending.clear()
        if outlet.own is not None and outlet.own >= 0:
            os.close(outlet.own)  # now, before the child closes or reuses descriptors: it opens its own
        outlet.own = None
    _heard.clear()
    _deadline = None


os.register_at_fork(after_in_child=_forget_in_child)

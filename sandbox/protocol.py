"""Messages between a launcher and its helpers: one marshal'ed tuple per SOCK_SEQPACKET packet.

Descriptors travel as SCM_RIGHTS; a sender may attach SCM_CREDENTIALS naming another process,
which the kernel translates into the receiver's PID namespace: that is how the caller learns
the job's PID as it sees it, although the reaper only knows the job as PID 2.
"""

from __future__ import annotations

import _socket as socket  # the C module: the command-line tool skips socket.py's enums
import array
import marshal
import os
import struct

MAX_MESSAGE = 1 << 20
_UCRED = struct.Struct("iII")
_ANCILLARY = socket.CMSG_SPACE(_UCRED.size) + socket.CMSG_SPACE(16 * 4)


def pair() -> tuple[socket.socket, socket.socket]:
    """A connected pair; the first end also receives the credentials of senders."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    return ours, theirs


def encode(message: tuple) -> bytes:
    return marshal.dumps(message)


def send(sock: socket.socket, message: tuple, fds: list[int] | tuple[int, ...] = (),
         creds_pid: int | None = None) -> None:
    ancillary = []
    if fds:
        ancillary.append((socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes()))
    if creds_pid is not None:
        ancillary.append((socket.SOL_SOCKET, socket.SCM_CREDENTIALS, _UCRED.pack(creds_pid, os.getuid(), os.getgid())))
    sock.sendmsg([encode(message)], ancillary, socket.MSG_NOSIGNAL)


class Closed(Exception):
    """The other end is gone."""


def recv(sock: socket.socket, flags: int = 0) -> tuple[tuple, list[int], int | None]:
    """One message, the descriptors that came with it (close-on-exec), and the sender's PID if it said one.

    Raises Closed at end of file, BlockingIOError when non-blocking and nothing is there.
    """
    data, ancillary, msg_flags, _ = sock.recvmsg(MAX_MESSAGE, _ANCILLARY, flags | socket.MSG_CMSG_CLOEXEC)
    fds: list[int] = []
    pid = None
    for level, kind, payload in ancillary:
        if level != socket.SOL_SOCKET:
            continue
        if kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % 4
            fds.extend(array.array("i", payload[:usable]))
        elif kind == socket.SCM_CREDENTIALS and len(payload) >= _UCRED.size:
            pid = _UCRED.unpack_from(payload)[0]
    if not data:
        for fd in fds:
            os.close(fd)
        raise Closed()
    if msg_flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        for fd in fds:
            os.close(fd)
        raise ValueError("message truncated")
    return marshal.loads(data), fds, pid

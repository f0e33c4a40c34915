"""Messages between a launcher and its helpers: one marshal'ed tuple per SOCK_SEQPACKET packet.

Descriptors travel as SCM_RIGHTS; a sender may attach SCM_CREDENTIALS naming another process,
which the kernel translates into the receiver's PID namespace: that is how the caller learns
the job's PID as it sees it, although the reaper only knows the job as PID 2.

A packet cannot be larger than the socket's send buffer (about 200 KiB), but a request carries
whatever argument list and environment execve accepts (2 MiB and more). So a large message
travels in a sealed memfd, sent as the packet's first descriptor; the packet's first byte says which.
"""

from __future__ import annotations

import _socket as socket  # the C module: the command-line tool skips socket.py's enums
import array
import fcntl
import marshal
import os
import struct

MAX_INLINE = 1 << 16
_INLINE, _MEMFD = b"i", b"m"
_UCRED = struct.Struct("iII")
_ANCILLARY = socket.CMSG_SPACE(_UCRED.size) + socket.CMSG_SPACE(16 * 4)
_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


def pair() -> tuple[socket.socket, socket.socket]:
    """A connected pair; the first end also receives the credentials of senders."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    return ours, theirs


def encode(message: tuple) -> bytes:
    return marshal.dumps(message)


def send(sock: socket.socket, message: tuple, fds: list[int] | tuple[int, ...] = (),
         creds_pid: int | None = None) -> None:
    """Send one message. Raises OSError: EBADF for a descriptor that is not open, EPIPE once the peer is gone."""
    data = encode(message)
    memfd = -1
    if len(data) >= MAX_INLINE:
        memfd = _in_memfd(data)
        data, fds = _MEMFD, (memfd, *fds)
    else:
        data = _INLINE + data
    ancillary = []
    if fds:
        ancillary.append((socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes()))
    if creds_pid is not None:
        ancillary.append((socket.SOL_SOCKET, socket.SCM_CREDENTIALS, _UCRED.pack(creds_pid, os.getuid(), os.getgid())))
    try:
        sock.sendmsg([data], ancillary, socket.MSG_NOSIGNAL)
    finally:
        if memfd >= 0:
            os.close(memfd)


def _in_memfd(data: bytes) -> int:
    fd = os.memfd_create("sandboxed-run-message", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        # Sealed: the receiver reads exactly what was sent, whoever else might hold the file.
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _from_memfd(fd: int) -> bytes:
    try:
        if fcntl.fcntl(fd, fcntl.F_GET_SEALS) & _SEALS != _SEALS:
            raise ValueError("malformed message: an unsealed memfd")
        size = os.fstat(fd).st_size
        data = bytearray()
        while len(data) < size:
            chunk = os.pread(fd, size - len(data), len(data))
            if not chunk:
                break
            data += chunk
        return bytes(data)
    finally:
        os.close(fd)


class Closed(Exception):
    """The other end is gone."""


def recv(sock: socket.socket, flags: int = 0) -> tuple[tuple, list[int], int | None]:
    """One message, the descriptors that came with it (close-on-exec), and the sender's PID if it said one.

    Raises Closed at end of file, BlockingIOError when non-blocking and nothing is there, ValueError
    for a packet that is not one of ours.
    """
    data, ancillary, msg_flags, _ = sock.recvmsg(MAX_INLINE + 1, _ANCILLARY, flags | socket.MSG_CMSG_CLOEXEC)
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
        _close(fds)
        raise Closed()
    kind = data[:1]
    if msg_flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or kind not in (_INLINE, _MEMFD) or (
            kind == _MEMFD and not fds):
        _close(fds)
        raise ValueError("malformed message")
    if kind == _MEMFD:
        try:
            data = _from_memfd(fds.pop(0))
        except BaseException:
            _close(fds)
            raise
        return marshal.loads(data), fds, pid
    return marshal.loads(data[1:]), fds, pid


def _close(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)

"""The messages between our processes, each a record of its own kind, and how they travel.

Every message kind is declared below with the process that sends it, the one that receives it, and
what the receiver does (table() lists them; ARCHITECTURE.md shows that list). A message travels as
one SOCK_SEQPACKET packet: its kind's number and its fields, marshal'ed. Descriptors travel as
SCM_RIGHTS; a sender may attach SCM_CREDENTIALS naming another process, which the kernel translates
into the receiver's PID namespace: that is how the caller learns the job's PID as it sees it,
although the reaper only knows the job as PID 2. (The packet says when it names one: otherwise the
credentials the kernel attaches are the sender's own.)

A packet cannot be larger than the socket's send buffer (about 200 KiB), but a request carries
whatever argument list and environment execve accepts (2 MiB and more). So a large message
travels in a sealed memfd, sent as the packet's first descriptor; the packet's first byte says which.

What recv() returns is well-typed: a packet is walked before marshal reads it (no code we never send,
no claim of more items or bytes than follow), and every field is checked and converted by its record's
annotations (records.py); anything else is a ValueError, its descriptors closed. Receivers check values
(a range, a state), never types. Descriptors a receiver does not keep go to discard().
"""

from __future__ import annotations

import _socket as socket  # the C module: the command-line tool skips socket.py's enums
import array
import enum
import errno
import fcntl
import marshal
import os
import struct

from .command import Command
from .options import SandboxSpec
from .records import Record
from .usage import Usage

TYPE_CHECKING = False  # typing stays out of the spawn server, whose every reaper is a fork of it
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

MAX_INLINE = 1 << 16
MAX_MESSAGE = 1 << 26  # far above any argument list (the kernel's is a few MB) or mount table
_INLINE, _MEMFD = b"i", b"m"
# In upper case when the sender names a process in SCM_CREDENTIALS. Our receivers ask for credentials
# (SO_PASSCRED), and the kernel then attaches the sender's own to every packet that names none: only this
# tells a PID the sender named from the sender's own.
_UCRED = struct.Struct("iII")
_ANCILLARY = socket.CMSG_SPACE(_UCRED.size) + socket.CMSG_SPACE(16 * 4)
_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


class Kind(enum.IntEnum):
    READY = 1
    SPAWN = 2
    SPAWNED = 3
    TAKE_HOOKS = 4
    FAILED = 5
    ORDER = 6
    SESSION = 7
    RUN = 8
    REAPER_IS = 9
    EVENT = 10
    EXITED = 11
    SIGNAL = 12
    RELAY = 13
    STOP = 14
    HANDOFF = 15
    PROCEED = 16
    QUERY = 17
    ABOUT = 18
    RETIRE = 19
    ENTERED = 20
    ENTER_SIGNAL = 21
    ENTER_STOPPED = 22
    ENTER_CONTINUE = 23
    ENTER_EXITED = 24
    IDLE = 25


class StopReason(enum.StrEnum):
    """Why a sandbox (or one command of a session) is stopped, as the events and the hooks show it."""

    MAIN_EXITED = "main process exited"
    TIMEOUT = "timeout"
    CALLER_DIED = "caller died"
    INTERRUPTED_REPEATEDLY = "interrupted repeatedly"
    REQUESTED = "requested"
    CONTEXT_EXITED = "context exited"
    INTERRUPTED = "interrupted"
    CANCELLED = "cancelled"
    GRACE_OVER = "grace period over"  # only as a killed event's reason
    OUT_OF_MEMORY = "out of memory"  # the kernel killed the main process (or, in an exited event, that one)


class SandboxState(enum.StrEnum):
    """How a running sandbox stands, as About says."""

    RUNNING = "running"
    STOPPING = "stopping"


class EventName(enum.StrEnum):
    """The lifecycle events (docs/status.md)."""

    STARTED = "started"
    READY = "ready"
    SIGNAL = "signal"
    STOPPING = "stopping"
    KILLED = "killed"
    EXITED = "exited"
    HOOK = "hook"
    FINISHED = "finished"


# -- the messages, in the order of a job's life ------------------------------------------------------
# Each docstring: "sender -> receiver", then what the receiver does. Field values are plain data
# (marshal's types), but for the records, enums and specs named in a field's annotation; a message
# received holds what its annotations say (records.py), or recv() refused it.

class Inherited(Record):
    """What a process of ours takes of the caller's thread to be as it (credentials.inherited()): its nice,
    the resource limits that differ as (resource, soft, hard), its oom_score_adj; None: as ours."""

    nice: int | None
    limits: tuple[tuple[int, int, int], ...]
    oom_score_adj: int | None


class Ready(Record):
    """spawn server -> caller, once: the server runs (as pid) and takes Spawn requests."""

    KIND = Kind.READY
    pid: int


class Order(Record):
    """launcher -> reaper (from the command, or forwarded by the spawn server), with the descriptors that
    become the job's 0, 1, 2 (stdio says which come): set up the sandbox as spec says, start the command
    as its main process; its end stops the rest. lifeline "parent": the launcher is our parent, its death
    (PDEATHSIG) is the caller's; "socket": the caller holds our socket, the spawn server's death is not its.
    registry: the directory where we list the sandbox under spec.name (None: not listed); the launcher
    opened it, outside the sandbox, and its descriptor comes last. deadline: the timeout (time.monotonic(),
    which every process of the machine shares; None: none), when we stop the sandbox ourselves, for reason
    "timeout", even if the launcher cannot ask (the job stopped its process group). serves_more (from the
    spawn server only): the socket this came on is the server's, and the caller's comes as the very last
    descriptor; the job gets a mount namespace copied from our prepared one, and once it is over, if
    the sandbox asked for nothing that changes the reaper itself, we say Idle to the server and wait there
    for the next Order of the same caller."""

    KIND = Kind.ORDER
    command: Command
    spec: SandboxSpec
    pgid: int | None
    lifeline: str
    stdio: tuple[bool, ...]
    registry: str | None = None
    inherited: Inherited | None = None
    deadline: float | None = None
    serves_more: bool = False


class Session(Record):
    """launcher -> reaper (a sandbox.Job, through the spawn server): set up the sandbox, report ready, then
    start each Run that comes; the sandbox lives until a Stop or the caller's death. registry: as for an Order.
    owner: the caller's credentials when it asked (the spawn server's reading of the caller's
    /proc/PID/status, whose descriptor comes before the registry's); a Run is refused once they differ."""

    KIND = Kind.SESSION
    spec: SandboxSpec
    pgid: int | None
    lifeline: str
    registry: str | None = None
    inherited: Inherited | None = None
    owner: tuple[bytes | str | int, ...] | None = None


class Spawn(Record):
    """caller -> spawn server, with the job's descriptors: make a sandbox for this order (a ready reaper, or a
    fresh one), hand it the order, answer Spawned or Failed; keep on_exit to run if the caller dies. Refused
    (Failed) unless the sender, as the kernel names it, is the caller and its thread tid (0: its main thread)
    holds the credentials the server was started for; the order's inherited field is the server's own
    reading of that thread's attributes where they differ from the server's (None: none differ)."""

    KIND = Kind.SPAWN
    order: Order | Session
    on_exit: tuple[str, ...]
    tid: int = 0


class Spawned(Record):
    """spawn server -> caller, with our end of the reaper's socket and a pidfd of the reaper: talk to the reaper
    directly from now on. ticket names the hooks the server keeps for us (0: none)."""

    KIND = Kind.SPAWNED
    reaper_pid: int
    ticket: int


class TakeHooks(Record):
    """caller -> spawn server: we run the hooks of this ticket ourselves; forget them."""

    KIND = Kind.TAKE_HOOKS
    ticket: int


class Retire(Record):
    """caller -> spawn server: the caller's credentials changed, a new server takes its requests: take no
    more (drop the ready reaper); serve the sandboxes already started, their hooks and claims, then exit."""

    KIND = Kind.RETIRE


class Failed(Record):
    """spawn server, user-namespace parent or reaper -> caller or launcher: the sandbox, or the command,
    could not start; the receiver raises it as a SandboxError (the command prints it and exits exit_code).
    Also reaper -> a client of its registry socket that is neither the owner nor root, or that lives inside a
    sandbox (errno EACCES), at once; the reaper reads nothing it sends."""

    KIND = Kind.FAILED
    exit_code: int
    message: str
    errno: int


class Run(Record):
    """caller -> session reaper, with the command's descriptors (stdio says which) and last a socket for its
    reports: start the command in the session; its Event and Exited go to that socket."""

    KIND = Kind.RUN
    command: Command
    stdio: tuple[bool, ...]


class Proceed(Record):
    """launcher -> user-namespace parent, when the sandbox has a cgroup of its own: you are in it now; fork the
    reaper, which is born in it (until this comes, the parent waits)."""

    KIND = Kind.PROCEED


class ReaperIs(Record):
    """user-namespace parent -> launcher, with a pidfd of the reaper: the reaper is pid; wait on its pidfd
    (our own end would come early if we were killed first)."""

    KIND = Kind.REAPER_IS
    pid: int


class Event(Record):
    """reaper -> launcher (for a started event, with SCM_CREDENTIALS naming the job, which the kernel
    translates to the launcher's PID): record it, pass it to on_event, the status stream, -v."""

    KIND = Kind.EVENT
    name: EventName
    fields: dict[str, Any]


class Exited(Record):
    """reaper -> launcher, last: the main process (or this command) ended with this wait status, and this is
    what the sandbox (or the command) used; for a whole sandbox the reaper exits next, and its pidfd tells
    when every process is gone. kept: the reaper lives on for its caller's next job; every process of this
    sandbox is gone and its mount namespace left already (it reaped them all as PID 1), so do not wait for
    the reaper's end."""

    KIND = Kind.EXITED
    status: int
    usage: Usage | None = None
    kept: bool = False


class Signal(Record):
    """launcher -> reaper: the caller sends the job this signal (send_signal, terminate, kill): send it now."""

    KIND = Kind.SIGNAL
    signo: int
    origin: str


class Relay(Record):
    """launcher -> reaper, and launcher -> hook monitor: we received this signal; pass it on unless the same
    signal reached the job (or the hook) by itself (relay.py)."""

    KIND = Kind.RELAY
    signo: int


class Stop(Record):
    """launcher -> reaper: stop the sandbox (on the control socket) or this command (on its own socket): the
    stop signal, grace seconds (None: the sandbox's), SIGKILL. after_interrupt: no stop signal if a signal
    asking for an end reached the job already. Also a client of the registry socket -> reaper (sandboxed-run
    --stop, sandbox.stop_running): stop the sandbox; its stopping event says reason "requested"."""

    KIND = Kind.STOP
    grace: float | None
    reason: StopReason
    after_interrupt: bool


class Handoff(Record):
    """launcher -> hook monitor, once the sandbox is gone: how the job ended (job_status: its wait status;
    shell_status: what we exit with); run the hooks with it. Without it (the launcher died) the monitor
    runs them with stop reason "caller died" alone. deadline: from then on (time.monotonic(), which every
    process of the machine shares; -inf: the launcher was sent a signal) whatever the monitor has to say
    goes only as far as a reader takes it at once (the --timeout's, or None)."""

    KIND = Kind.HANDOFF
    job_status: int | None
    shell_status: int | None
    reason: str | None
    deadline: float | None = None


class Query(Record):
    """a client of a reaper's registry socket (sandboxed-run --list, --enter, --stop; sandbox.list_running) ->
    reaper: who are you? Answer About (a refused client got Failed already, and is not read)."""

    KIND = Kind.QUERY


class About(Record):
    """reaper -> a client of its registry socket, with a pidfd of the reaper, then a descriptor of each of its
    namespaces and one of its root directory, and, while the main process runs, SCM_CREDENTIALS naming it:
    what the sandbox is (command None: a session), how it stands (state "running" or "stopping", and why), its
    namespaces' inodes by kind and its mount table as seen inside; the client shows it, enters those namespaces
    (through their descriptors: the reaper is not dumpable) and that root, or waits on the pidfd for the end of
    a stop."""

    KIND = Kind.ABOUT
    name: str
    started: float
    command: list[bytes] | None
    cwd: bytes
    state: SandboxState
    reason: str | None
    spec: SandboxSpec
    namespaces: dict[str, int]
    mountinfo: bytes


# sandboxed-run --enter and the forker it starts (the forker joins the sandbox's user and PID namespaces and
# forks the command into them: sandbox/cli/enter.py), over a socket pair of their own.

class Entered(Record):
    """forker -> sandboxed-run --enter, once: the command runs as pid (as we see it), the leader of its own
    process group; give it the terminal again when it is resumed after a stop."""

    KIND = Kind.ENTERED
    pid: int


class EnterSignal(Record):
    """sandboxed-run --enter -> forker: we received this signal; send it to the command."""

    KIND = Kind.ENTER_SIGNAL
    signo: int


class EnterStopped(Record):
    """forker -> sandboxed-run --enter: the command stopped (Ctrl+Z): take the terminal back and stop as it did;
    once resumed, answer EnterContinue."""

    KIND = Kind.ENTER_STOPPED


class EnterContinue(Record):
    """sandboxed-run --enter -> forker: we were resumed: resume the command's process group (SIGCONT)."""

    KIND = Kind.ENTER_CONTINUE


class EnterExited(Record):
    """forker -> sandboxed-run --enter, last: the command ended with this wait status; exit as it did."""

    KIND = Kind.ENTER_EXITED
    status: int


class Idle(Record):
    """reaper -> spawn server, on the server's socket, after an Order that serves_more: that sandbox is over
    (every process gone, its mount namespace left, its name released); the server may send the same caller's
    next Order here, or close the socket to end us."""

    KIND = Kind.IDLE


Message = (Ready | Order | Session | Spawn | Spawned | TakeHooks | Failed | Run | ReaperIs | Event | Exited | Signal
           | Relay | Stop | Handoff | Proceed | Query | About | Retire | Entered | EnterSignal | EnterStopped
           | EnterContinue | EnterExited | Idle)
RECORDS: dict[Kind, Any] = {record.KIND: record for record in Message.__args__}


def encode(message: Message) -> bytes:
    return marshal.dumps(_plain(message))


_PLAIN = (int, float, bytes, type(None))


def _plain(value: Any) -> Any:
    """A record (or spec) as marshal's plain types: (kind, *fields) for a message, its fields for a record
    without a kind (which holds plain values alone: Command, Usage, Inherited)."""
    if type(value) in _PLAIN or type(value) is str or type(value) is bool:
        return value
    if isinstance(value, Record):
        if value.KIND is None:
            return tuple(value)
        return (int(value.KIND), *(_plain(field) for field in value))
    if isinstance(value, SandboxSpec):
        return value.to_wire()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_plain(item) for item in value)
    return value


def decode(data: Any) -> Message:
    """A record from its plain form, (kind, *fields), every field checked and converted by its annotation;
    ValueError for anything else."""
    if type(data) is not tuple or not data or type(data[0]) is not int or data[0] not in _BY_NUMBER:
        raise ValueError("not a message of ours")
    return _BY_NUMBER[data[0]].from_plain(data)


_BY_NUMBER = {int(kind): record for kind, record in RECORDS.items()}

# What marshal writes for the values we send (with FLAG_REF, 0x80, or not), by the code's byte: how the
# next code is found. The items of a tuple, list or dict follow their container as codes of their own.
_REFUSE, _SIZED, _SHORT, _BARE, _FOUR, _EIGHT, _COUNTED, _SMALL_TUPLE, _DIGITS = range(9)
_CODES = {b"suaAt": _SIZED,  # a 4-byte length, then that many bytes
          b"zZ": _SHORT,  # a 1-byte length
          b"NTF0{": _BARE,  # nothing more (a dict's items end with 0)
          b"ir": _FOUR,  # an int, a reference to an earlier value
          b"g": _EIGHT,  # a float
          b"([": _COUNTED,  # a 4-byte count of items, each at least a byte
          b")": _SMALL_TUPLE,  # a 1-byte count
          b"l": _DIGITS}  # a 4-byte signed count of 2-byte digits
_ACTIONS = bytes(next((action for codes, action in _CODES.items() if byte & 0x7F in codes), _REFUSE)
                 for byte in range(256))
_LENGTH = struct.Struct("<i").unpack_from


def _check_claims(data: bytes) -> None:
    """ValueError unless data is a sequence of the marshal codes we send, none of which claims more than the
    bytes that follow it. marshal.loads allocates what a tuple, list, bytes or int claims before it reads a byte
    of it: six bytes would cost gigabytes. Codes are laid out one after another, items after their container,
    so one walk sees every claim, without nesting."""
    end = len(data)
    pos = 0
    actions, length = _ACTIONS, _LENGTH
    try:
        while pos < end:
            action = actions[data[pos]]
            if action == _SIZED:
                size = length(data, pos + 1)[0]
                pos += 5 + size
                if size < 0 or pos > end:
                    raise ValueError("a string longer than the packet")
            elif action == _SHORT:
                pos += 2 + data[pos + 1]
            elif action == _BARE:
                pos += 1
            elif action == _FOUR:
                pos += 5
            elif action == _SMALL_TUPLE:
                pos += 2
            elif action == _COUNTED:
                pos += 5
                if length(data, pos - 4)[0] > end - pos:
                    raise ValueError("a container that claims more items than the packet holds")
            elif action == _EIGHT:
                pos += 9
            elif action == _DIGITS:
                pos += 5 + 2 * abs(length(data, pos + 1)[0])
                if pos > end:
                    raise ValueError("an int that claims more digits than the packet holds")
            else:
                raise ValueError("a value we never send")
    except (struct.error, IndexError):
        raise ValueError("a packet cut short") from None


def loads(data: bytes) -> Any:
    """marshal.loads() of a packet, for the values we send alone; ValueError for anything else."""
    _check_claims(data)
    try:
        return marshal.loads(data)
    except (EOFError, TypeError, ValueError):
        raise ValueError("malformed message") from None


def table() -> str:
    """Every message kind as a Markdown table: kind, who sends it to whom, what the receiver does."""
    rows = ["| message | sender -> receiver | what the receiver does |", "| --- | --- | --- |"]
    for kind in Kind:
        doc = " ".join(RECORDS[kind].__doc__.split())
        route, _, what = doc.partition(": ")
        rows.append(f"| `{RECORDS[kind].__name__}` | {route} | {what} |")
    return "\n".join(rows) + "\n"


def pair() -> tuple[socket.socket, socket.socket]:
    """A connected pair; the first end also receives the credentials of senders."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    return ours, theirs


def send(sock: socket.socket, message: Message, fds: list[int] | tuple[int, ...] = (),
         creds_pid: int | None = None) -> None:
    """Send one message. Raises OSError: EBADF for a descriptor that is not open, EPIPE once the peer is gone."""
    data = encode(message)
    memfd = -1
    if len(data) >= MAX_INLINE:
        memfd = _in_memfd(data)
        kind, fds = _MEMFD, (memfd, *fds)
        data = b""
    else:
        kind = _INLINE
    data = (kind if creds_pid is None else kind.upper()) + data
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
    """The message in a sealed memfd; ValueError for any other descriptor (a pipe, a file: a peer of a
    reaper's registry socket may send anything) or one larger than MAX_MESSAGE."""
    try:
        try:
            sealed = fcntl.fcntl(fd, fcntl.F_GET_SEALS) & _SEALS == _SEALS
            size = os.fstat(fd).st_size
        except OSError:
            sealed = False
        if not sealed:
            discard([fd])  # a peer of a reaper's registry socket may send anything
            fd = -1
            raise ValueError("malformed message: not a sealed memfd")
        if size > MAX_MESSAGE:
            raise ValueError(f"malformed message: {size} bytes")
        data = bytearray()
        while len(data) < size:
            chunk = os.pread(fd, size - len(data), len(data))
            if not chunk:
                break
            data += chunk
        return bytes(data)
    finally:
        if fd >= 0:
            os.close(fd)


class Closed(Exception):
    """The other end is gone."""


class DescriptorsLost(ValueError):
    """The descriptors that came with a message did not fit in (MSG_CTRUNC): the receiver is at its limit of
    open files. Not a message of ours, to whoever takes it for one."""


def recv(sock: socket.socket, flags: int = 0, admit: Callable[[list[int]], bool] | None = None
         ) -> tuple[Message, list[int], int | None]:
    """One message, the descriptors that came with it (close-on-exec), and the PID the sender named (None if it
    named none: then the credentials the kernel attached are the sender's own, not an answer).

    admit: for a sender not yet trusted, whether its packet's descriptors prove who it is; asked before a byte
    of the packet is decoded (a packet in a memfd is never read for it), and Refused if not.

    Raises Closed at end of file, BlockingIOError when non-blocking and nothing is there, ValueError
    for a packet that is not one of ours (DescriptorsLost, if only its descriptors are missing).
    """
    message, fds, sender, named = _receive(sock, flags, admit)
    return message, fds, sender[0] if sender is not None and named else None


class Refused(ValueError):
    """A packet of a sender recv() was told not to trust, whose descriptors did not prove who it is."""


def recv_from(sock: socket.socket, flags: int = 0) -> tuple[Message, list[int], tuple[int, int, int] | None]:
    """recv(), with the sender's (pid, uid, gid) as SCM_CREDENTIALS gave them: on a socket with SO_PASSCRED
    the kernel stamps every message with the sending process, its real uid and gid, in our namespaces (a
    sender may name itself otherwise only within what it may become: see unix(7))."""
    message, fds, sender, _named = _receive(sock, flags)
    return message, fds, sender


def _receive(sock: socket.socket, flags: int, admit: Callable[[list[int]], bool] | None = None
             ) -> tuple[Message, list[int], tuple[int, int, int] | None, bool]:
    try:
        data, ancillary, msg_flags, _ = sock.recvmsg(MAX_INLINE + 1, _ANCILLARY, flags | socket.MSG_CMSG_CLOEXEC)
    except ConnectionResetError:
        # The peer closed its end before reading all we sent it. The kernel says so once, ahead of what the
        # peer sent us before it closed, which is still queued here: read on (its last words, an Exited).
        data, ancillary, msg_flags, _ = sock.recvmsg(MAX_INLINE + 1, _ANCILLARY, flags | socket.MSG_CMSG_CLOEXEC)
    fds: list[int] = []
    sender = None
    for level, kind, payload in ancillary:
        if level != socket.SOL_SOCKET:
            continue
        if kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % 4
            fds.extend(array.array("i", payload[:usable]))
        elif kind == socket.SCM_CREDENTIALS and len(payload) >= _UCRED.size:
            sender = _UCRED.unpack_from(payload)
    if not data:
        discard(fds)
        raise Closed()
    kind, named = data[:1].lower(), data[:1].isupper()
    if msg_flags & socket.MSG_CTRUNC:
        discard(fds)
        raise DescriptorsLost("the descriptors that came with a message were lost")
    if msg_flags & socket.MSG_TRUNC or kind not in (_INLINE, _MEMFD) or (
            kind == _MEMFD and not fds):
        discard(fds)
        raise ValueError("malformed message")
    if admit is not None and (kind == _MEMFD or not admit(fds)):
        discard(fds)
        raise Refused("a sender that did not prove who it is")
    if kind == _MEMFD:
        try:
            data = _from_memfd(fds.pop(0))
        except BaseException:
            discard(fds)
            raise
    else:
        data = data[1:]
    try:
        return decode(loads(data)), fds, sender, named
    except ValueError:
        discard(fds)
        raise ValueError("malformed message") from None


def recv_kind(sock: socket.socket, kinds: tuple[type, ...], flags: int = 0,
              lost: bool = False) -> tuple[Any, list[int]] | None:
    """The next message of one of kinds and its descriptors; others are dropped (their descriptors closed).
    None once the peer is gone; BlockingIOError (with MSG_DONTWAIT) while none of those kinds is there.
    lost: a message whose descriptors did not fit in raises OSError(EMFILE) (a peer that sends us nothing
    else must not be waited for)."""
    while True:
        try:
            message, fds, _ = recv(sock, flags)
        except (Closed, ConnectionError):
            return None
        except DescriptorsLost:
            if lost:
                raise OSError(errno.EMFILE, "the descriptors that came with a message were lost") from None
            continue
        except ValueError:
            continue
        if isinstance(message, kinds):
            return message, fds
        discard(fds)


def discard(fds: Iterable[int], at_once: bool = False) -> None:
    """Close descriptors a peer sent that we do not keep (or no longer keep): the one way every receiver closes
    them. The close of the last reference to some waits as long as the sender likes (a socket lingering on data its
    peer never reads, a file of a FUSE mount whose server does not answer; even an fstat of that file waits): a
    thread of ours closes those, and ends with us (the kernel then cuts the wait short). What our messages carry
    (pidfds, namespaces, memfds, pipes) is closed here. at_once: the sender is a process of ours or our caller
    (the launcher, the caller, the spawn server, a reaper), whose descriptors (the job's stdio, say) are closed
    here, all of them, before we go on (a spare reaper forked meanwhile must not inherit them)."""
    fds = list(fds)
    if at_once:
        for fd in fds:
            os.close(fd)
        return
    slow = [fd for fd in fds if not harmless(fd)]
    for fd in fds:
        if fd not in slow:
            os.close(fd)
    if slow:
        import threading

        threading.Thread(target=lambda: [os.close(fd) for fd in slow], name="discard", daemon=True).start()


# What /proc/self/fd/N says of the descriptors our messages carry: KIND:[INODE] of pipes and namespaces.
_HARMLESS_KINDS = ("pipe", "cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")


def harmless(fd: int) -> bool:
    """Whether fd is of a kind that nothing of it can make us wait for: a pidfd, a namespace, a memfd, a pipe (no
    file system is asked: its link in /proc names it)."""
    try:
        link = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return False
    kind, _, inode = link.partition(":[")
    if kind in _HARMLESS_KINDS and inode.endswith("]") and inode[:-1].isdigit():
        return True
    return link == "anon_inode:[pidfd]" or (link.startswith("/memfd:") and link.endswith(" (deleted)"))

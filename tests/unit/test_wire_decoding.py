"""The wire decoder (helpers/shared/wire.py recv) against garbage over a real socket pair: random bytes,
truncated and mutated messages, kinds that do not exist, memfds that lie about themselves, descriptors
attached to junk, more descriptors than fit. A packet that is not one of ours is a ValueError (an empty one,
or the peer's end, is Closed), never another exception, and every descriptor it brought is closed."""

from __future__ import annotations

import _socket as socket
import array
import fcntl
import marshal
import os
import random
import resource
import struct

import pytest

from sandboxed_run_helpers.shared import wire
from sandboxed_run_helpers.shared.command import Command
from sandboxed_run_helpers.shared.options import SandboxSpec
from sandboxed_run_helpers.shared.usage import Usage
from sandboxed_run_helpers.shared.wire import EventName, StopReason
from support import wait_for

SPEC = SandboxSpec.build({"tmpfs": ["/tmp:size=1M"], "grace": 3})
CMD = Command([b"sh", b"-c", b"exit 3"], {b"PATH": b"/bin"}, b"/", 0o22)
JOB = wire.Order(CMD, SPEC, None, "parent", (True, True, False), "/run/x", None, 12.5)
SAMPLES = [
    wire.Ready(7), JOB, wire.Session(SPEC, 5, "socket", None, (None, ((7, 10, 20),), 5), (b"0\t0", "mnt:[4]", 0)),
    wire.Spawn(JOB, ("echo hi",), 3),
    wire.Spawned(9, 2), wire.TakeHooks(2), wire.Failed(125, "no such thing", 2), wire.Run(CMD, (False, True, True)),
    wire.ReaperIs(4),
    wire.Event(EventName.STOPPING, {"reason": "timeout", "grace": 1.5, "signal": "SIGTERM", "mnt_ns": 4026531840}),
    wire.Exited(9, Usage(1.5, 0.25, 0.125, 4096, None, 1, 2, 3, 0)), wire.Exited(0), wire.Exited(0, None, True),
    wire.Signal(15, "caller"),
    wire.Relay(2), wire.Stop(None, StopReason.REQUESTED, True), wire.Handoff(0, 0, "timeout", -1.0), wire.Proceed(),
    wire.Query(),
    wire.About("nightly", 1.5, [b"sleep", b"9"], b"/", "running", None, SPEC, {"mnt": 4026531840}, b"1 2 3\n"),
    wire.Retire(), wire.Entered(9), wire.EnterSignal(2), wire.EnterStopped(), wire.EnterContinue(),
    wire.EnterExited(256), wire.Idle(),
]
_UCRED = struct.Struct("iII")


def test_the_samples_cover_every_kind():
    assert {type(m) for m in SAMPLES} == set(wire.RECORDS.values())


@pytest.fixture
def sockets():
    ours, theirs = wire.pair()
    yield ours, theirs
    ours.close()
    theirs.close()


@pytest.fixture
def attachable():
    """Descriptors to attach to packets: pipe ends, /dev/null, a memfd."""
    r, w = os.pipe()
    fds = [r, w, os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC), os.memfd_create("junk", os.MFD_CLOEXEC)]
    yield fds
    for fd in fds:
        os.close(fd)


def closed_again(before: set[int]) -> bool:
    """Whether this process's descriptors are those before again: wire.discard closes some in a thread of its own."""
    return wait_for(lambda: open_descriptors() == before, 5.0, 0.001)


def open_descriptors() -> set[int]:
    """This process's open descriptors (but the one listdir used to list them)."""
    listed = [int(name) for name in os.listdir("/proc/self/fd")]
    return {fd for fd in listed if _open(fd)}


def _open(fd: int) -> bool:
    try:
        fcntl.fcntl(fd, fcntl.F_GETFD)
        return True
    except OSError:
        return False


def send_raw(sock: socket.socket, data: bytes, fds: list[int] = ()) -> None:
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else []
    sock.sendmsg([data], ancillary)


def outcome(sock: socket.socket) -> str:
    """What recv made of the next packet: its kind's name (its descriptors closed), or the exception's name."""
    try:
        message, fds, _ = wire.recv(sock, socket.MSG_DONTWAIT)
    except (ValueError, wire.Closed) as exc:
        return type(exc).__name__
    for fd in fds:
        os.close(fd)
    return type(message).__name__


def assert_refused(sockets, packets, expected=("ValueError",)) -> None:
    """Each packet (data, descriptors) is refused as expected, and no descriptor is left open by it."""
    ours, theirs = sockets
    before = open_descriptors()
    for data, fds in packets:
        send_raw(theirs, data, fds)
        assert outcome(ours) in expected, (data[:60], fds)
        assert closed_again(before), (data[:60], fds)


def test_every_kind_comes_through_as_it_was_sent(sockets, attachable):
    ours, theirs = sockets
    before = open_descriptors()
    for message in SAMPLES:
        wire.send(theirs, message, attachable[:2])
        received, fds, named = wire.recv(ours)
        assert received == message and type(received) is type(message)
        assert len(fds) == 2 and named is None
        for fd in fds:
            os.close(fd)
    assert closed_again(before)


def test_a_large_message_comes_through_a_sealed_memfd(sockets):
    ours, theirs = sockets
    big = wire.Run(CMD.replace(env={b"X%d" % i: b"%0100d" % i for i in range(2000)}), (True, True, True))
    assert len(wire.encode(big)) >= wire.MAX_INLINE
    before = open_descriptors()
    wire.send(theirs, big)
    received, fds, _ = wire.recv(ours)
    assert received == big and fds == []
    assert closed_again(before)


# A packet can claim more items than it holds (test_a_packet_that_claims_more_items_than_it_holds): random bytes
# do so often, and marshal alone would allocate what each claims. The fuzzing runs in a child whose address space
# can grow by HEADROOM only, so that such a claim let through fails at once, with MemoryError, which the fuzzing
# reports as a problem like any other outcome but ValueError or a message of ours.
HEADROOM = 256 << 20


def bounded_memory() -> None:
    with open("/proc/self/status") as f:
        size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (size + HEADROOM, resource.RLIM_INFINITY))


def fuzz(packets, allowed: set[str]) -> dict[str, int]:
    """Send each packet (data, descriptors) to a child with bounded memory that receives it: how often each
    outcome came. Fails on an outcome not allowed, or a descriptor the child was left with."""
    import json

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            bounded_memory()
            ours, theirs = wire.pair()
            before = open_descriptors()
            seen: dict[str, int] = {}
            problems = []
            for data, fds in packets:
                send_raw(theirs, data, fds)
                try:
                    what = outcome(ours)
                except MemoryError:
                    what = "MemoryError"
                    for fd in open_descriptors() - before:  # left open too
                        os.close(fd)
                seen[what] = seen.get(what, 0) + 1
                if what not in allowed or not closed_again(before):
                    problems.append(f"{what} for {data[:40]!r} with {len(fds)} descriptors")
            os.write(w, json.dumps({"seen": seen, "problems": problems[:10]}).encode())
        except BaseException as exc:  # noqa: BLE001 - told to the test, which fails with it
            os.write(w, json.dumps({"seen": {}, "problems": [f"the child failed: {exc!r}"]}).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        report = f.read()
    os.waitpid(pid, 0)
    result = json.loads(report)
    assert result["problems"] == []
    return result["seen"]


def test_random_bytes(attachable):
    rng = random.Random("random bytes")
    packets = []
    for _ in range(3000):
        head = rng.choice([b"i", b"I", b"m", b"M", bytes([rng.randrange(256)])])
        fds = rng.sample(attachable, rng.randrange(len(attachable) + 1))
        packets.append((head + rng.randbytes(rng.randrange(200)), fds))
    assert fuzz(packets, {"ValueError"})["ValueError"] > 2000


def test_every_truncation_of_every_kind(sockets, attachable):
    packets = []
    for message in SAMPLES:
        data = wire.encode(message)
        packets += [(b"i" + data[:end], attachable[:1]) for end in range(len(data))]
    assert_refused(sockets, packets)


def test_mutated_messages_decode_or_are_refused(attachable):
    """A few bytes changed anywhere in a real message: a message of ours (then with its descriptors) or ValueError."""
    rng = random.Random("mutations")
    packets = []
    for _ in range(3000):
        data = bytearray(wire.encode(rng.choice(SAMPLES)))
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        packets.append((b"i" + data, attachable[:2]))
    seen = fuzz(packets, {"ValueError", *(type(m).__name__ for m in SAMPLES)})
    assert seen["ValueError"] > 1000


@pytest.mark.parametrize("plain", [
    None, 5, "Ready", b"\x01", [], (), {}, {1: 7}, (0,), (20,), (-1,), (2 ** 70,), ("1",), (None,), (1.0,),
    (1,), (1, 2, 3), (14, None, "not a reason", False), (10, "not an event", {}), (11,), (6, 1, 2, 3, 4, 5),
    (2, (2, (1, 5), (), 0), (), 0),  # a Spawn inside a Spawn
    (18, "n", 1.0, None, b"/", "running", None, (1, 2), {}, b""),  # a spec of the wrong size
])
def test_what_is_not_a_record_of_ours(sockets, attachable, plain):
    assert_refused(sockets, [(b"i" + marshal.dumps(plain), attachable)])


def test_marshal_that_nests_too_deep(sockets):
    assert_refused(sockets, [(b"i" + b")\x01" * 5000 + b"N", [])])


def test_an_empty_packet_or_the_peers_end_is_closed(sockets):
    ours, theirs = sockets
    assert_refused(sockets, [(b"", [])], expected=("Closed",))
    theirs.close()
    assert outcome(ours) == "Closed"


def test_a_packet_longer_than_any_inline_message(sockets, attachable):
    assert_refused(sockets, [(b"i" + bytes(wire.MAX_INLINE + 100), attachable)])


def test_more_descriptors_than_a_message_has_room_for(sockets, attachable):
    """The kernel drops what does not fit (MSG_CTRUNC): the message is not one of ours, and says why."""
    many = (attachable * 20)[:60]
    assert_refused(sockets, [(b"i" + wire.encode(wire.Query()), many)], expected=("DescriptorsLost",))


def sealed_memfd(data: bytes = b"", size: int | None = None, seals: int = wire._SEALS) -> int:
    fd = os.memfd_create("claim", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.write(fd, data)
    if size is not None:
        os.ftruncate(fd, size)  # sparse: costs nothing here
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    return fd


@pytest.mark.parametrize("memfd", ["none", "a pipe", "unsealed", "writable", "huge", "garbage", "truncated",
                                   "empty"])
def test_memfds_that_lie(sockets, attachable, memfd):
    message = wire.encode(wire.Run(CMD, (True, True, True)))
    if memfd == "none":
        fds = []
    elif memfd == "a pipe":
        fds = [attachable[0]]
    elif memfd == "unsealed":
        fds = [sealed_memfd(message, seals=0)]
    elif memfd == "writable":
        fds = [sealed_memfd(message, seals=wire._SEALS & ~fcntl.F_SEAL_WRITE)]
    elif memfd == "huge":
        fds = [sealed_memfd(message, size=wire.MAX_MESSAGE + 1)]
    elif memfd == "garbage":
        fds = [sealed_memfd(random.Random(1).randbytes(5000))]
    elif memfd == "truncated":
        fds = [sealed_memfd(message[:-1])]
    else:
        fds = [sealed_memfd()]
    try:
        assert_refused(sockets, [(b"m", [*fds, attachable[1]]), (b"M", fds)])
    finally:
        for fd in fds:
            if fd not in attachable:
                os.close(fd)


def test_recv_kind_skips_junk_and_closes_its_descriptors(sockets, attachable):
    ours, theirs = sockets
    before = open_descriptors()
    send_raw(theirs, b"garbage", attachable)
    wire.send(theirs, wire.Query(), attachable)
    wire.send(theirs, wire.Relay(2), attachable[:1])
    message, fds = wire.recv_kind(ours, (wire.Relay,))
    assert message == wire.Relay(2) and len(fds) == 1
    os.close(fds[0])
    assert closed_again(before)
    theirs.close()
    assert wire.recv_kind(ours, (wire.Relay,)) is None


def test_a_named_pid_is_told_from_the_senders_own(sockets):
    ours, theirs = sockets
    wire.send(theirs, wire.Relay(2))
    assert wire.recv(ours)[2] is None
    wire.send(theirs, wire.Relay(2), creds_pid=os.getpid())
    assert wire.recv(ours)[2] == os.getpid()
    wire.send(theirs, wire.Relay(2))
    assert wire.recv_from(ours)[2] == (os.getpid(), os.getuid(), os.getgid())


CLAIMS = {
    "a tuple of 2**31-1 items": b"(" + struct.pack("<i", 2 ** 31 - 1),
    "a list of 2**31-1 items": b"[" + struct.pack("<i", 2 ** 31 - 1),
    "an int of 2**31-1 digits": b"l" + struct.pack("<i", 2 ** 31 - 1),
    "a list deep in a real message": wire.encode(wire.Relay(2))[:-5] + b"[" + struct.pack("<i", 2 ** 31 - 1),
    "a tuple that claims one item more than it holds": b"(" + struct.pack("<i", 5) + b"NNNN",
}


@pytest.mark.parametrize("claim", CLAIMS)
def test_a_packet_that_claims_more_items_than_it_holds(claim):
    """Under an address-space limit that leaves room for anything a packet can really hold, a packet that claims
    billions of items is a ValueError like any other garbage, its descriptors closed (in a child: the limit is its
    own)."""
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            bounded_memory()
            ours, theirs = wire.pair()
            before = open_descriptors()
            send_raw(theirs, b"i" + CLAIMS[claim], [0, 1, 2])
            try:
                wire.recv(ours)
            except ValueError:
                code = 0 if closed_again(before) else 2
            except MemoryError:
                code = 1
        finally:
            os._exit(code)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def test_discard_closes_what_a_peer_of_ours_sent_before_it_returns():
    """at_once (a process of ours sent them): every descriptor is closed when discard returns; otherwise pipes,
    memfds and the like at once and the rest (here /dev/null) in a thread of its own, soon."""
    for at_once in (True, False):
        r, w = os.pipe()
        null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        wire.discard([r, w, null], at_once=at_once)
        assert not _open(r) and not _open(w)
        if at_once:
            assert not _open(null)
        else:
            assert wait_for(lambda null=null: not _open(null), 5.0, 0.001)

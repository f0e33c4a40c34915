"""The wire decoder checks every field of a message by its record's annotations (helpers/shared/records.py):
a message of the right kind and size whose fields have the wrong types is refused (ValueError), and what it
accepts is well-typed, down to the fields of a spec and a command."""

from __future__ import annotations

import pytest

from sandboxed_run_helpers.shared import options, wire
from sandboxed_run_helpers.shared.command import Command
from sandboxed_run_helpers.shared.options import SandboxSpec

SPEC = SandboxSpec.build({"tmpfs": ["/tmp:size=1M"], "rlimit": ["NOFILE=64"], "ionice": "idle"})
CMD = Command([b"true"], {b"PATH": b"/bin"}, b"/", 0o22)
ORDER = wire.Order(CMD, SPEC, None, "parent", (True, True, False))
ABOUT = wire.About("n", 1.5, [b"sleep"], b"/", "running", None, SPEC, {"mnt": 4026531840}, b"")


def plain(message):
    return wire.loads(wire.encode(message))


def with_field(message, index, value):
    data = list(plain(message))
    data[index + 1] = value
    return tuple(data)


def test_every_sandbox_option_has_a_type_on_the_wire():
    assert set(SandboxSpec.__slots__) <= set(SandboxSpec.__annotations__)
    assert SandboxSpec.from_wire(SPEC.to_wire()) == SPEC


@pytest.mark.parametrize(("message", "index", "value"), [
    (ABOUT, 0, b"n"),  # name: str
    (ABOUT, 1, "1.5"),  # started: float
    (ABOUT, 2, [b"sleep", "x"]),  # command: list[bytes] | None
    (ABOUT, 4, "gone"),  # state: an enum
    (ABOUT, 7, {"mnt": "4"}),  # namespaces: dict[str, int]
    (ABOUT, 7, {1: 4}),
    (ABOUT, 7, [("mnt", 4)]),
    (ABOUT, 8, "text"),  # mountinfo: bytes
    (ORDER, 0, ([b"true"], {b"PATH": "/bin"}, b"/", 18)),  # env: dict[bytes, bytes]
    (ORDER, 0, ([b"true"], {}, b"/")),  # a command of three fields
    (ORDER, 4, (True, 1, False)),  # stdio: tuple[bool, ...]
    (ORDER, 4, [True, None]),
    (wire.Relay(2), 0, True),  # an int, not a bool
    (wire.Relay(2), 0, 2.0),
    (wire.Spawn(ORDER, ("hook",)), 0, plain(wire.Spawn(ORDER, ("hook",)))),  # a Spawn inside a Spawn
])
def test_a_field_of_the_wrong_type_is_refused(message, index, value):
    with pytest.raises(ValueError):
        wire.decode(with_field(message, index, value))


@pytest.mark.parametrize(("name", "value"), [
    ("userns_uid", "0"), ("tmpfs", (("/tmp", 5, None),)), ("rlimit", (("NOFILE", 1, "2"),)), ("mkdir", 1),
    ("ionice", (3,)), ("cap_drop", "CAP_SYS_ADMIN"), ("grace", None),
])
def test_a_spec_field_of_the_wrong_type_is_refused(name, value):
    fields = list(SPEC.to_wire())
    fields[SandboxSpec.__slots__.index(name)] = value
    with pytest.raises(ValueError):
        wire.decode(with_field(ABOUT, 6, tuple(fields)))


def test_what_is_accepted_is_converted():
    """An int where a float is expected becomes a float; an enum's value becomes the enum; a list where a tuple
    is expected becomes a tuple."""
    about = wire.decode(with_field(ABOUT, 1, 7))
    assert type(about.started) is float and about.state is wire.SandboxState.RUNNING
    spawn = wire.decode(with_field(wire.Spawn(ORDER, ("hook",)), 1, ["hook"]))
    assert spawn.on_exit == ("hook",) and type(spawn.order.command) is Command
    assert type(spawn.order.spec) is SandboxSpec and spawn.order.spec.tmpfs == SPEC.tmpfs
    assert options.SANDBOX_FIELDS  # the spec's fields come from the option table

"""--syscall-filter's values as pure logic (helpers/shared/syscalls.py): systemd's groups resolve, SPECs
combine as SystemCallFilter= assignments do, errno names. Whether the kernel then refuses the calls is
tests/test_confinement.py's business."""

from __future__ import annotations

import errno

import pytest

from sandboxed_run_helpers.shared import syscalls

DOCUMENTED = ("@default", "@aio", "@basic-io", "@chown", "@clock", "@cpu-emulation", "@debug", "@file-system",
              "@io-event", "@ipc", "@keyring", "@memlock", "@module", "@mount", "@network-io", "@obsolete", "@pkey",
              "@privileged", "@process", "@raw-io", "@reboot", "@resources", "@setuid", "@signal", "@swap", "@sync",
              "@system-service", "@timer", "@known")


@pytest.mark.parametrize("group", DOCUMENTED)
def test_every_documented_group_resolves_to_known_calls(group):
    assert syscalls.spec(group, "f") == group
    names = syscalls.expand([group])
    assert names and not any(name.startswith("@") for name in names), group
    for name in names:
        assert syscalls.spec(name, "f") == name


def test_groups_hold_what_systemd_says():
    assert {"mount", "umount2", "pivot_root", "open_tree"} <= syscalls.expand(["@mount"])
    assert {"init_module", "delete_module"} <= syscalls.expand(["@module"])
    assert {"reboot", "kexec_load"} <= syscalls.expand(["@reboot"])
    assert "ptrace" in syscalls.expand(["@debug"])
    privileged = syscalls.expand(["@privileged"])
    assert syscalls.expand(["@chown", "@clock", "@module", "@raw-io", "@reboot", "@swap"]) <= privileged
    assert "mount" not in syscalls.expand(["@system-service"])


def test_specs_combine_as_systemd_assignments_do():
    default = syscalls.expand(["@default"])
    assert syscalls.resolve(("~@mount",)) == (False, frozenset(syscalls.expand(["@mount"])))
    assert syscalls.resolve(("~@mount", "~ptrace")) == (False, frozenset(syscalls.expand(["@mount"]) | {"ptrace"}))
    assert syscalls.resolve(("~@mount", "mount")) == (False, frozenset(syscalls.expand(["@mount"]) - {"mount"}))
    allow, names = syscalls.resolve(("read write",))
    assert allow and names == default | {"read", "write"}, "an allow list always allows @default"
    allow, names = syscalls.resolve(("@basic-io", "~write"))
    assert allow and "write" not in names and "read" in names


def test_words_are_normalised_and_bad_ones_named():
    assert syscalls.spec("  ~ @mount   ptrace ", "f") == "~@mount ptrace"
    with pytest.raises(ValueError, match=r"^f: unknown system call or group fly, @nope \(groups: @default"):
        syscalls.spec("~fly @mount @nope", "f")
    with pytest.raises(TypeError):
        syscalls.spec(b"~mount", "f")


def test_errno_by_name_or_number():
    assert syscalls.errno_value("EPERM", "e") == errno.EPERM
    assert syscalls.errno_value("enosys", "e") == errno.ENOSYS
    assert syscalls.errno_value("13", "e") == syscalls.errno_value(13, "e") == errno.EACCES
    for bad in ("EFLY", "0", 0, 4096):
        with pytest.raises(ValueError):
            syscalls.errno_value(bad, "e")
    with pytest.raises(TypeError):
        syscalls.errno_value(True, "e")

"""The one mountinfo parser (helpers/shared/mountinfo.py) on lines as the kernel writes them: octal escapes
undone on bytes, then decoded as file names are; optional fields; lines it does not write skipped. The
end-to-end tests (test_mount_tables.py) read real mounts through every user of the parser."""

from __future__ import annotations

import os

from sandboxed_run_helpers.shared import mountinfo

# A mount point and a source holding a space, a tab, a newline and a backslash (escaped by the kernel), a
# letter of two UTF-8 bytes and a byte that is no UTF-8 at all (both written as they are).
LINE = (b"36 35 98:0 /sub\\134dir /mnt/caf\xc3\xa9\\040x\\011y\\012z\xff rw,noatime shared:1 master:2 - tmpfs "
        b"made\\040here rw,size=1024k")


def test_octal_escapes_are_undone_on_bytes_then_decoded_as_file_names():
    (entry,) = mountinfo.parse(LINE + b"\n")
    assert (entry.mount_id, entry.parent_id, entry.device) == (36, 35, "98:0")
    assert entry.root == "/sub\\dir"
    assert os.fsencode(entry.target) == b"/mnt/caf\xc3\xa9 x\ty\nz\xff"
    assert entry.target.startswith("/mnt/café x\ty\nz")  # not "cafÃ©": the bytes were never taken for text
    assert (entry.options, entry.fstype, entry.source, entry.super_options) == (
        "rw,noatime", "tmpfs", "made here", "rw,size=1024k")


def test_unescape_takes_only_the_kernels_three_digit_octal_escapes():
    assert mountinfo.unescape(b"a\\040b\\011c\\012d\\134e") == b"a b\tc\nd\\e"
    assert mountinfo.unescape(b"\\x41\\u00e9\\04") == b"\\x41\\u00e9\\04"
    assert mountinfo.unescape(b"plain") == b"plain"


def test_lines_without_optional_fields_and_lines_the_kernel_never_writes():
    data = b"\n".join([
        b"22 1 0:21 / / rw - ext4 /dev/sda1 rw",
        b"garbage",
        b"x 1 0:21 / /a rw - ext4 /dev/sda1 rw",  # no number
        b"23 22 0:22 / /b rw shared:5",  # no separator
        b"24 22 0:23 / /c rw - tmpfs",  # no source
        b"",
    ])
    entries = mountinfo.parse(data)
    assert [(e.target, e.fstype, e.source) for e in entries] == [("/", "ext4", "/dev/sda1")]


def test_the_topmost_mount_on_a_path_is_the_last_listed_and_keys_ignore_mount_ids():
    entries = mountinfo.parse(b"30 1 0:40 / /m rw - tmpfs first rw\n31 1 0:41 / /m rw - tmpfs second rw\n"
                              b"32 1 0:40 / /m rw - tmpfs first rw\n")
    assert mountinfo.topmost(entries, "/m").mount_id == 32
    assert mountinfo.topmost(entries, "/other") is None
    assert entries[0].key == entries[2].key != entries[1].key


def test_our_own_table_reads():
    entries = mountinfo.read()
    assert any(entry.target == "/" for entry in entries)
    assert all(entry.device.count(":") == 1 for entry in entries)

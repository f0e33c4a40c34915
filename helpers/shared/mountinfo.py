"""A mount table as /proc/PID/mountinfo writes it (proc(5)), read into entries: the one parser for every reader.

Each line is: mount ID, parent ID, major:minor, root, mount point, mount options, optional fields, "-",
file system type, source, super options. The kernel writes a space, tab, newline and backslash of a path
(and of the source and options) as an octal escape (\\040 \\011 \\012 \\134) and every other byte as it is, so
a field is unescaped as bytes and only then decoded, as the file system's names are (os.fsdecode: UTF-8,
with any other byte kept as a surrogate that encodes back to it).
"""

from __future__ import annotations

import os
import re

from .records import Record

SELF = "/proc/self/mountinfo"

_ESCAPE = re.compile(rb"\\([0-7]{3})")


class Entry(Record):
    """One mount, its fields unescaped and decoded."""

    mount_id: int
    parent_id: int
    device: str  # major:minor
    root: str  # the directory of the file system seen at target
    target: str  # the mount point
    options: str  # per mount: rw, nosuid, relatime...
    fstype: str
    source: str
    super_options: str  # per file system

    @property
    def key(self) -> tuple[str, ...]:
        """What tells this mount from another in a table and in a copy of that table (a new mount namespace
        has the same mounts under new IDs)."""
        return (self.device, self.root, self.target, self.options, self.fstype, self.source)


def unescape(field: bytes) -> bytes:
    """A field with the kernel's octal escapes undone."""
    return _ESCAPE.sub(lambda m: bytes((int(m[1], 8) & 0xFF,)), field) if b"\\" in field else field


def _text(field: bytes) -> str:
    return os.fsdecode(unescape(field))


def parse(data: bytes) -> list[Entry]:
    """The entries of a mountinfo file's contents, in its order (a later mount on a path covers an earlier
    one); a line that is not one the kernel writes is skipped."""
    entries = []
    for line in data.split(b"\n"):
        fields = line.split(b" ")
        try:
            dash = fields.index(b"-", 6)
            entries.append(Entry(int(fields[0]), int(fields[1]), fields[2].decode(), _text(fields[3]),
                                 _text(fields[4]), _text(fields[5]), _text(fields[dash + 1]),
                                 _text(fields[dash + 2]), _text(fields[dash + 3])))
        except (ValueError, IndexError):
            continue
    return entries


def read(path: str = SELF, dir_fd: int | None = None) -> list[Entry]:
    """The entries of a mountinfo file (default: ours); OSError if it cannot be read."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    with open(fd, "rb") as f:
        return parse(f.read())


def topmost(entries: list[Entry], target: str) -> Entry | None:
    """The mount that covers the others on target (the last listed there); None if nothing is mounted there."""
    found = None
    for entry in entries:
        if entry.target == target:
            found = entry
    return found

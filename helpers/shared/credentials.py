"""What a thread holds, as the kernel reports it in /proc: its credentials.

The API's spawn server forks the caller's sandboxes, and a fork gets the forker's credentials, not the
caller's. So the server compares the caller's credentials (the requesting thread's: credentials and
namespaces are a thread's own) with those it was started for, on every request, and refuses when they
differ.

Every file is read through a descriptor of /proc/PID/task/TID, so that all are the same thread's: once
that thread has ended they read nothing (ESRCH), never another thread's.
"""

from __future__ import annotations

import os

# The lines of /proc/PID/status that say what a thread may do: its ids (real, effective, saved, filesystem),
# supplementary groups, capability sets, no_new_privs and seccomp.
STATUS_FIELDS = (b"Uid", b"Gid", b"Groups", b"CapInh", b"CapPrm", b"CapEff", b"CapBnd", b"CapAmb", b"NoNewPrivs",
                 b"Seccomp", b"Seccomp_filters")
# What a thread runs in: a job forked elsewhere would run in the forker's. (pid and time are fixed for a
# thread's life; what its children get is pid_for_children and time_for_children.)
NAMESPACES = ("user", "mnt", "net", "ipc", "uts", "cgroup", "pid_for_children", "time_for_children")
_LINKS = tuple(f"ns/{kind}" for kind in NAMESPACES if os.path.lexists(f"/proc/self/ns/{kind}"))  # this kernel's
_NEEDLES = tuple(b"\n" + name + b":" for name in STATUS_FIELDS)
HIDDEN = b"hidden"
_SHOWN = {b"Uid": "uid", b"Gid": "gid", b"Groups": "supplementary groups", b"CapInh": "capabilities",
          b"CapPrm": "capabilities", b"CapEff": "capabilities", b"CapBnd": "capability bounding set",
          b"CapAmb": "ambient capabilities", b"NoNewPrivs": "no_new_privs", b"Seccomp": "seccomp mode",
          b"Seccomp_filters": "seccomp filters"}
_BUFFER = 16384


def open_task(pid: int, tid: int) -> int:
    """A descriptor of /proc/PID/task/TID; FileNotFoundError if TID is no thread of PID."""
    return os.open(f"/proc/{pid}/task/{tid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def open_own() -> int:
    """A descriptor of the calling thread's /proc directory."""
    return os.open("/proc/thread-self", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def read_file(fd: int, name: str = "") -> bytes:
    """A /proc file whole, by name below the directory fd, or (no name) from its start again: proc's files
    are made anew by each read from offset 0, whole when the buffer has room (a short read is the end)."""
    own = bool(name)
    if own:
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=fd)
    try:
        data = os.pread(fd, _BUFFER, 0)
        while len(data) % _BUFFER == 0 and (more := os.pread(fd, _BUFFER, len(data))):
            data += more
        return data
    finally:
        if own:
            os.close(fd)


def status_fields(status: bytes) -> tuple[bytes, ...]:
    """The credential lines of a /proc/PID/status, in STATUS_FIELDS order (b"" for a line this kernel lacks)."""
    found = []
    for needle in _NEEDLES:
        # A line's start: the first line, the command's name, comes with its newlines escaped by the kernel.
        start = status.find(needle)
        if start < 0:
            found.append(b"")
            continue
        start += len(needle)
        found.append(status[start:status.find(b"\n", start)].strip())
    return tuple(found)


def of_task(task: int) -> tuple:
    """The thread's credentials: STATUS_FIELDS, then its namespaces and root directory.

    The kernel hides a thread's namespaces from a reader without CAP_SYS_PTRACE when it marks the thread
    non-dumpable (as after a change of uid). Then its user namespace's id maps stand in: without privileges
    a thread can enter other namespaces only through a new user namespace, whose maps differ."""
    fields = status_fields(read_file(task, "status"))
    try:
        places: tuple = tuple(os.readlink(link, dir_fd=task) for link in _LINKS)
        root = os.stat("root", dir_fd=task)
        places += (root.st_dev, root.st_ino)
    except PermissionError:
        places = (HIDDEN, *id_maps(task))
    return fields + places


def id_maps(task: int) -> tuple[bytes, bytes]:
    """The uid_map and gid_map of the thread's user namespace (readable by anyone)."""
    return read_file(task, "uid_map"), read_file(task, "gid_map")


def hidden(credentials: tuple) -> bool:
    """Whether of_task() found the thread's namespaces hidden (and gave its id maps instead)."""
    return credentials[len(STATUS_FIELDS)] == HIDDEN


def with_maps(credentials: tuple, maps: tuple[bytes, bytes]) -> tuple:
    """An of_task() reading with the namespaces replaced by the id maps, as when they are hidden."""
    return credentials[:len(STATUS_FIELDS)] + (HIDDEN, *maps)


def own() -> tuple:
    """of_task() of the calling thread."""
    task = open_own()
    try:
        return of_task(task)
    finally:
        os.close(task)


def difference(then: tuple, now: tuple) -> str | None:
    """What differs between two of_task() readings, in words (None: nothing)."""
    for index, (old, new) in enumerate(zip(then, now, strict=True)):
        if old == new:
            continue
        if index >= len(STATUS_FIELDS):
            return "namespaces or root directory"
        name = STATUS_FIELDS[index]
        if name in (b"Uid", b"Gid"):
            return f"{_SHOWN[name]} (was {_first(old)}, now {_first(new)})"
        return _SHOWN[name]
    return None


def _first(ids: bytes) -> str:
    """The effective id of a Uid or Gid line (real, effective, saved, filesystem)."""
    parts = ids.split()
    return parts[1].decode() if len(parts) > 1 else "?"

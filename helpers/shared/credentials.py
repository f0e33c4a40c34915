"""What a thread holds, as the kernel reports it in /proc: its credentials, and the attributes a child inherits.

The API's spawn server forks the caller's sandboxes, and a fork gets the forker's credentials and
attributes, not the caller's. So the server compares the caller's credentials (the requesting thread's:
credentials, nice and namespaces are a thread's own) with those it was started for, on every request,
and refuses when they differ; the attributes a program may change without privileges (nice, resource
limits, oom_score_adj) it reads for each request too, and the job's first process takes those that
differ from the server's own.

Every file is read through a descriptor of /proc/PID/task/TID, so that all are the same thread's: once
that thread has ended they read nothing (ESRCH), never another thread's.
"""

from __future__ import annotations

import os

from . import linux
from .limits import UNLIMITED

TYPE_CHECKING = False  # typing stays out of the spawn server, whose every reaper is a fork of it
if TYPE_CHECKING:
    from typing import Any

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
_LIMITS_SOFT = slice(26, 46)  # /proc/PID/limits: "%-25s %-20s %-20s %-10s", one line per resource, in order
_LIMITS_HARD = slice(47, 67)
_NICE = 16  # linux.stat_fields index of field 19 of /proc/PID/stat
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


# -- the attributes a child inherits ------------------------------------------------------------------

def attributes(task: int) -> tuple[int, bytes, bytes]:
    """The thread's nice value, its process's resource limits and oom_score_adj (the last two as /proc gives them)."""
    nice = int(linux.stat_fields(read_file(task, "stat"))[_NICE])
    return nice, read_file(task, "limits"), read_file(task, "oom_score_adj")


def inherited(theirs: tuple[int, bytes, bytes], ours: tuple[int, bytes, bytes]) -> tuple | None:
    """What of theirs (attributes()) a process of ours must take to be as theirs: (nice or None, the resource limits
    that differ as (resource, soft, hard), oom_score_adj or None); None when nothing differs."""
    if theirs == ours:
        return None
    nice = theirs[0] if theirs[0] != ours[0] else None
    limits: tuple = ()
    if theirs[1] != ours[1]:
        limits = tuple(limit for limit, our in zip(_limits(theirs[1]), _limits(ours[1]), strict=False) if limit != our)
    oom = int(theirs[2]) if theirs[2] != ours[2] else None
    return nice, limits, oom


def _limits(text: bytes) -> list[tuple[int, int, int]]:
    found = []
    for resource, line in enumerate(text.splitlines()[1:]):
        soft, hard = line[_LIMITS_SOFT].strip(), line[_LIMITS_HARD].strip()
        found.append((resource, UNLIMITED if soft == b"unlimited" else int(soft),
                      UNLIMITED if hard == b"unlimited" else int(hard)))
    return found


def set_oom_score_adj(value: int) -> None:
    """This process's oom_score_adj, where the kernel lets us (a lower one needs CAP_SYS_RESOURCE: then ours)."""
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(value))
    except OSError:
        pass


def take(values: Any, with_nice: bool = True) -> None:
    """Make this (freshly forked) process's attributes what inherited() said (its nice only if with_nice), as
    far as the kernel lets it: a lower nice or a higher hard limit than ours needs privileges of the initial
    user namespace, which a job in a user namespace lacks; then it keeps ours (never more than the caller has)."""
    import resource

    nice, limits, oom = values
    if not with_nice:
        nice = None
    if oom is not None:
        set_oom_score_adj(oom)
    if nice is not None:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
        except OSError:
            pass
    for number, soft, hard in limits:
        try:
            resource.setrlimit(number, (soft, hard))
        except (OSError, ValueError):
            current = resource.getrlimit(number)[1]
            try:
                resource.setrlimit(number, (soft if current == UNLIMITED or 0 <= soft <= current else current,
                                            current))
            except (OSError, ValueError):
                pass

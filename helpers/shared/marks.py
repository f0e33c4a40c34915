"""How a program knows it runs inside one of our sandboxes (and not on the host, where a mount would stay).

The reaper puts these variables into the job's environment: SANDBOXED_RUN=1, SANDBOXED_RUN_MNT_NS,
the inode number of the sandbox's mount namespace, and SANDBOXED_RUN_BIN, the directory of our
commands (the interpreter's bin directory, e.g. a venv's), which it also appends to the job's PATH
(last, so that it never shadows the job's own programs), so that sandbox-mount-image and
sandbox-open-luks are found by name. check() accepts only a process that

- carries both variables,
- is in that very mount namespace (/proc/self/ns/mnt), and
- sees as PID 1 of its PID namespace our reaper (comm "sandbox-reaper"), in the same mount namespace.

The variables alone would survive into a process that left the sandbox (nsenter, a daemon started
over ssh with the environment copied); the namespace and PID 1 tests catch that. PID 1 alone could
be a look-alike; the namespace id pins it to the one the reaper created. It is a guard against
mistakes, not a security boundary.
"""

from __future__ import annotations

import os
import sys

ENV_FLAG = "SANDBOXED_RUN"
ENV_MNT_NS = "SANDBOXED_RUN_MNT_NS"
ENV_BIN = "SANDBOXED_RUN_BIN"  # where our commands are (a venv's bin is rarely on PATH): for scripts
REAPER_NAME = "sandbox-reaper"


def marks(mnt_ns: int) -> dict[bytes, bytes]:
    """Our marks; mnt_ns is the inode of the sandbox's mount namespace."""
    return {ENV_FLAG.encode(): b"1", ENV_MNT_NS.encode(): str(mnt_ns).encode(),
            ENV_BIN.encode(): os.fsencode(os.path.dirname(sys.executable))}


def mark_environment(env: dict[bytes, bytes], mnt_ns: int, default_path: bytes) -> dict[bytes, bytes]:
    """The job's environment with our marks, and our commands' directory at the end of its PATH (a job
    without PATH gets default_path, the one its programs are looked up in, with ours after it)."""
    ours = marks(mnt_ns)
    path = env.get(b"PATH", default_path)
    if ours[ENV_BIN.encode()] not in path.split(b":"):
        path = (path + b":" if path else b"") + ours[ENV_BIN.encode()]
    return {**env, **ours, b"PATH": path}


def marked_as_long(env: dict[bytes, bytes], default_path: bytes) -> dict[bytes, bytes]:
    """The job's environment as long as it will be with our marks: a namespace's inode number always has
    10 digits (the kernel numbers them from 0xF0000000 up to 2**32 - 1)."""
    return mark_environment(env, 0xF0000000, default_path)


class NotInSandbox(Exception):
    """The caller is not inside a sandbox of ours; str() says why."""


def check() -> None:
    """Return if we run inside one of our sandboxes; raise NotInSandbox saying why not."""
    if os.environ.get(ENV_FLAG) != "1" or not os.environ.get(ENV_MNT_NS, "").isdigit():
        raise NotInSandbox(f"not inside a sandbox ({ENV_FLAG} is not set): run the script under sandboxed-run")
    try:
        ours = os.stat("/proc/self/ns/mnt").st_ino
    except OSError as exc:
        raise NotInSandbox(f"cannot read /proc/self/ns/mnt: {exc.strerror}") from None
    if str(ours) != os.environ[ENV_MNT_NS]:
        raise NotInSandbox("not inside the sandbox's mount namespace (it was left, or the environment was copied "
                           "out of it): a mount made here would not vanish with the sandbox")
    try:
        with open("/proc/1/comm") as f:
            name = f.read().strip()
        try:
            pid1_ns = os.stat("/proc/1/ns/mnt").st_ino
        except PermissionError:
            # A job that dropped capabilities (--cap-drop, --cap-keep) may not look into the reaper, which kept
            # them all: its name and our own namespace, checked above, have to do.
            pid1_ns = ours
    except OSError as exc:
        raise NotInSandbox(f"cannot inspect PID 1: {exc.strerror}") from None
    if name != REAPER_NAME or pid1_ns != ours:
        raise NotInSandbox(f"PID 1 here is {name!r}, not the sandbox's reaper in this mount namespace")

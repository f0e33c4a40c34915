"""The reaper's namespaces and mounts: prepared before its order comes, completed as the spec says."""

from __future__ import annotations

import _socket as socket
import os
import stat

from ..shared import linux
from ..shared.errors import mount_error, namespace_error
from ..shared.options import Mount, SandboxSpec


def prepare() -> tuple[int, int]:
    """What every sandbox needs, done before the order is known: a mount namespace, / slave, a fresh
    /proc. Returns the inode numbers of our mount and PID namespaces."""
    try:
        linux.unshare(linux.CLONE_NEWNS)
    except OSError as exc:
        raise namespace_error(exc, "a mount namespace") from None
    try:
        linux.mount(None, b"/", None, linux.MS_REC | linux.MS_SLAVE)
    except OSError as exc:
        raise mount_error(exc, "make mounts slave under", "/") from None
    try:
        linux.mount(b"proc", b"/proc", b"proc", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
    except OSError as exc:
        raise mount_error(exc, "mount a fresh proc on", "/proc") from None
    return os.stat("/proc/self/ns/mnt").st_ino, os.stat("/proc/self/ns/pid").st_ino


def set_up(spec: SandboxSpec) -> str | int:
    """Complete the sandbox as spec says; SandboxError if the kernel refuses. Returns where we count our
    processes: "/proc", or a handle on our /proc after --no-proc took it away."""
    _isolate(spec)
    if spec.propagation == "private":
        try:
            linux.mount(None, b"/", None, linux.MS_REC | linux.MS_PRIVATE)
        except OSError as exc:
            raise mount_error(exc, "make mounts private under", "/") from None
    mounts = spec.mounts
    # A bind below a read-only path copies its read-only flag: reopen it if its source is writable.
    read_only = any(m.kind == "read_only" for m in mounts)
    reopen = {m.source for m in mounts if m.kind == "bind" and read_only
              and not os.statvfs(m.source).f_flag & os.ST_RDONLY}
    for m in mounts:
        _mount(m, m.source in reopen)
    return "/proc" if spec.proc else _drop_proc()


def _isolate(spec: SandboxSpec) -> None:
    """The namespaces an order may add to the prepared ones: network and UTS."""
    if spec.net != "host":
        from . import network
    if spec.net == "none":
        try:
            linux.unshare(linux.CLONE_NEWNET)
        except OSError as exc:
            raise namespace_error(exc, "a network namespace") from None
        network.loopback_up()
    elif spec.net.startswith("netns:"):
        network.join_netns(spec.net[len("netns:"):], spec.userns)
    if spec.hostname:
        try:
            linux.unshare(linux.CLONE_NEWUTS)
        except OSError as exc:
            raise namespace_error(exc, "a UTS namespace") from None
        socket.sethostname(spec.hostname)


def _drop_proc() -> int:
    """--no-proc: take the fresh /proc away (the host's shows again), keeping a handle on ours."""
    try:
        handle = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        linux.umount(b"/proc", linux.MNT_DETACH)
    except OSError as exc:
        raise mount_error(exc, "unmount the fresh proc from", "/proc") from None
    return handle


def _mount(m: Mount, reopen: bool) -> None:
    path = os.fsencode(m.target)
    try:
        if m.kind == "read_only":
            if path != b"/":  # / is a mount already; a bind stacked on it would not be seen
                linux.mount(path, path, None, linux.MS_BIND | linux.MS_REC)
            linux.mount_setattr_readonly(path)
        elif m.kind == "tmpfs":
            mode = stat.S_IMODE(os.stat(path).st_mode)
            linux.mount(b"tmpfs", path, b"tmpfs", linux.MS_NOSUID | linux.MS_NODEV, b"mode=%o" % mode)
        else:
            linux.mount(os.fsencode(m.source), path, None, linux.MS_BIND | linux.MS_REC)
            if m.kind == "ro_bind":
                linux.mount_setattr_readonly(path)
            elif reopen:
                linux.mount_setattr_writable(path)
    except OSError as exc:
        # In words, not flags: the caller may be the command line or the API.
        action = {"read_only": "make read-only", "tmpfs": "mount a tmpfs on", "bind": f"bind-mount {m.source} on",
                  "ro_bind": f"bind-mount {m.source} read-only on"}[m.kind]
        raise mount_error(exc, action, m.target) from None

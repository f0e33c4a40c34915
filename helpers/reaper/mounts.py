"""The reaper's namespaces and mounts: prepared before its order comes, completed as the spec says."""

from __future__ import annotations

import _socket as socket
import os

from ..shared import linux
from ..shared.errors import mount_error, namespace_error
from ..shared.mountspec import MOUNTS, Mount, may_create, owner
from ..shared.options import SandboxSpec
from .steps import create, make


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
    # Before the mounts: one on /proc (--tmpfs /proc) lands on what shows there after, and must not be what
    # --no-proc takes away; our /proc, hidden by it, is still where we count our processes.
    counted: str | int = "/proc" if spec.proc else _drop_proc()
    if spec.proc and any(step.target == "/proc" and step.kind in MOUNTS for step in spec.mounts):
        counted = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    _make(spec.mounts, spec.mkdir, spec.userns)
    return counted


def _make(steps: tuple[Mount, ...], mkdir: bool, userns: bool) -> None:
    """Walk the steps in their order. The paths missing below a mount are made right after it (those on the
    host's own file systems first), before any deeper step (a read-only remount, say) could be in the way."""
    os.umask(0o022)  # what we create gets the modes we give; each command sets its own umask later
    owners = [owner(steps, index) for index in range(len(steps))]
    # A bind below a read-only path copies its read-only flag: reopen it if its source is writable.
    read_only = any(m.kind == "read_only" for m in steps)
    reopen = {m.source for m in steps if m.kind == "bind" and read_only and _writable(m.source)}

    def create_below(above: Mount | None) -> None:
        for step, step_owner in zip(steps, owners, strict=True):
            if step_owner is above:
                # Without --mkdir, what we make must stay in the mount of ours it lies in.
                create(step, may_create(above, mkdir), None if mkdir or above is None else above.target)

    create_below(None)
    for step in steps:
        make(step, userns, step.source in reopen)
        if step.kind in MOUNTS:
            create_below(step)


def _writable(path: str | None) -> bool:
    try:
        return not os.statvfs(path or "").f_flag & os.ST_RDONLY
    except OSError:
        return False  # it is refused with its own message when its turn comes


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

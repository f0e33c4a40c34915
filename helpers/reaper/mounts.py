"""The reaper's namespaces and mounts: prepared before its order comes, completed as the spec says."""

from __future__ import annotations

import _socket as socket
import errno
import os

from ..shared import linux, registry
from ..shared.errors import mount_error, unshare
from ..shared.mountspec import MOUNTS, Step, may_create, owner
from ..shared.options import SandboxSpec
from ..shared.records import Record
from .procfs import OwnProc
from .steps import create, make


class Procs(Record):
    """/proc as descriptors, opened while we prepare, before anything of a job runs: what we decide and show
    never reads the job's view of /proc, which it may unmount or mount over (its /proc/self is then the
    host's, or a file it wrote). Each is a copy of the mount attached nowhere (linux.cloned_mount): nothing can
    be mounted over a file in it, and the job's /proc is never busy because of us (umount /proc works as
    without us)."""

    own: OwnProc  # the proc of our PID namespace: our processes, their directories, our namespaces, our mounts
    launcher: int | None  # the /proc we were started under, before ours covered it (peers.py); None: none


def prepare(owner: int | None = None) -> tuple[int, int, Procs]:
    """What every sandbox needs, done before the order is known: a mount namespace, / slave, a fresh
    /proc, the registry of running sandboxes out of sight. owner: the host's uid the sandbox belongs to, if
    we are in a user namespace made for it (None: we are not, and it is ours). Returns the inode numbers of
    our mount and PID namespaces, and our /proc's."""
    unshare(linux.CLONE_NEWNS, "a mount namespace")
    try:
        linux.mount(None, b"/", None, linux.MS_REC | linux.MS_SLAVE)
    except OSError as exc:
        raise mount_error(exc, "make mounts slave under", "/") from None
    launcher = _launchers_proc()
    try:
        linux.mount(b"proc", b"/proc", b"proc", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
    except OSError as exc:
        raise mount_error(exc, "mount a fresh proc on", "/proc") from None
    try:
        tree = linux.cloned_mount(b"/proc")
        try:
            own = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=tree)
        finally:
            os.close(tree)
    except OSError as exc:
        raise mount_error(exc, "keep a copy of the fresh proc on", "/proc") from None
    _hide_registry(os.geteuid() if owner is None else owner)
    return (os.stat("self/ns/mnt", dir_fd=own).st_ino, os.stat("self/ns/pid", dir_fd=own).st_ino,
            Procs(OwnProc(own), launcher))


def _launchers_proc() -> int | None:
    """A copy of the /proc we were started under (None: none; peers.py then refuses whom only it could place).
    Alone if it can be (its own mounts, binfmt_misc say, cost a copy each), else with them."""
    try:
        return linux.cloned_mount(b"/proc")
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            return None
    try:
        return linux.cloned_mount(b"/proc", recursive=True)
    except OSError:
        return None


def _hide_registry(owner: int) -> None:
    """An empty tmpfs of ours over every registry directory the job could use (root's, the owner's, and
    those of the uid the job gets): it sees none of the host's entries (whose reapers refuse it anyway), and
    a sandbox started in here registers in here, where its listing and its stop belong. The directories are
    opened without following a link (another user may have planted one in /tmp), the mount lands on what
    was opened."""
    for directory in dict.fromkeys((registry.ROOT_DIRECTORY, *registry.directories_of(owner),
                                    *registry.directories_of(os.geteuid()))):
        try:
            fd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue  # none there, or out of our reach (and the job's)
        try:
            linux.mount(b"tmpfs", b"/proc/self/fd/%d" % fd, b"tmpfs", linux.MS_NOSUID | linux.MS_NODEV
                        | linux.MS_NOEXEC, b"mode=700")
        except OSError as exc:
            raise mount_error(exc, "hide the registry of running sandboxes at", directory) from None
        finally:
            os.close(fd)


def set_up(spec: SandboxSpec) -> SandboxSpec:
    """Complete the sandbox as spec says; SandboxError if the kernel refuses. Returns the spec as made (what the
    reaper shows in --list: --net veth's addresses filled in)."""
    spec = _isolate(spec)
    if spec.propagation == "private":
        try:
            linux.mount(None, b"/", None, linux.MS_REC | linux.MS_PRIVATE)
        except OSError as exc:
            raise mount_error(exc, "make mounts private under", "/") from None
    # Before the mounts: one on /proc (--tmpfs /proc) lands on what shows there after, and must not be what
    # --no-proc takes away. Our /proc stays where we count our processes (Procs.own) in either case.
    if not spec.proc:
        _drop_proc()
    if spec.root is not None:
        from . import newroot

        newroot.switch(spec, _make)  # the steps below the new root, which then becomes our /
        return spec
    _make(spec.mounts, spec.mkdir, spec.userns)
    return spec


def _make(steps: tuple[Step, ...], mkdir: bool, userns: bool, root: str | None = None) -> None:
    """Walk the steps in their order. The paths missing below a mount are made right after it (those on the
    host's own file systems first), before any deeper step (a read-only remount, say) could be in the way.
    root: the new root the targets lie below (--root), which none may lead out of."""
    os.umask(0o022)  # what we create gets the modes we give; each command sets its own umask later
    owners = [owner(steps, index) for index in range(len(steps))]
    # A bind below a read-only path copies its read-only flag: reopen it if its source is writable.
    read_only = any(m.kind == "read_only" for m in steps)
    reopen = {m.source for m in steps if m.kind == "bind" and read_only and _writable(m.source)}

    def create_below(above: Step | None) -> None:
        for step, step_owner in zip(steps, owners, strict=True):
            if step_owner is above:
                if root is not None:
                    newroot.check_within(step, root)
                # Without --mkdir, what we make must stay in the mount of ours it lies in.
                create(step, may_create(above, mkdir), None if mkdir or above is None else above.target)

    if root is not None:
        from . import newroot
    create_below(None)
    for step in steps:
        if root is not None:
            newroot.check_within(step, root)
        make(step, userns, step.source in reopen)
        if step.kind in MOUNTS:
            create_below(step)


def _writable(path: str | None) -> bool:
    try:
        return not os.statvfs(path or "").f_flag & os.ST_RDONLY
    except OSError:
        return False  # it is refused with its own message when its turn comes


def _isolate(spec: SandboxSpec) -> SandboxSpec:
    """The namespaces an order may add to the prepared ones: network, UTS, IPC, cgroup and time. Returns the
    spec as made: with --net veth, the addresses taken."""
    if spec.linked:
        from . import veth

        ip, host_ip = veth.set_up(spec)
        spec = spec.completed(ip=ip, host_ip=host_ip)
    elif spec.net != "host":
        from . import network
    if spec.net == "none":
        unshare(linux.CLONE_NEWNET, "a network namespace")
        network.loopback_up()
    elif spec.net.startswith("netns:"):
        network.join_netns(spec.net[len("netns:"):], spec.userns)
    for kind in spec.unshare if not spec.hostname or "uts" in spec.unshare else ("uts", *spec.unshare):
        # Made here, once the order came: a reaper forked ahead of time holds nothing of a sandbox's. A new
        # time namespace is our children's, not ours (offsets 0: the host's clocks), so the job is in it.
        unshare(*UNSHARED[kind])
    if spec.hostname:
        socket.sethostname(spec.hostname)
    return spec


UNSHARED = {"ipc": (linux.CLONE_NEWIPC, "an IPC namespace"), "uts": (linux.CLONE_NEWUTS, "a UTS namespace"),
            "cgroup": (linux.CLONE_NEWCGROUP, "a cgroup namespace"), "time": (linux.CLONE_NEWTIME, "a time namespace")}


def _drop_proc() -> None:
    """--no-proc: take the fresh /proc away (the host's shows again); we keep ours as a descriptor."""
    try:
        linux.umount(b"/proc", linux.MNT_DETACH)
    except OSError as exc:
        raise mount_error(exc, "unmount the fresh proc from", "/proc") from None

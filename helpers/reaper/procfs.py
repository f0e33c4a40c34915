"""Our own /proc, as one descriptor opened before anything of a job runs (mounts.prepare): what we count,
show and hand out is read through it, never through the job's view of /proc, which it may unmount or mount
over (its /proc/self is then the host's, or a file it wrote)."""

from __future__ import annotations

import os

NAMESPACE_KINDS = ("user", "mnt", "pid", "net", "uts", "ipc", "cgroup", "time")


def _ns_file(kind: str) -> str:
    # Our own time namespace is the host's; the one our children (the job) are born in is time_for_children.
    return "self/ns/time_for_children" if kind == "time" else f"self/ns/{kind}"


class OwnProc:
    """The proc of our PID namespace, held as a descriptor (-1: none could be made; every read then fails as a
    closed descriptor would)."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def pids(self) -> list[int]:
        """Every process of our namespace, us (1) included."""
        return [int(name) for name in os.listdir(self.fd) if name.isdigit()]

    def cwd(self, pid: int) -> bytes:
        """The working directory of a process of ours; OSError if it is gone."""
        return os.fsencode(os.readlink(f"{pid}/cwd", dir_fd=self.fd))

    def mount_table(self) -> bytes:
        """Our mount table as the job sees it (we share its mount namespace); empty if it cannot be read."""
        try:
            fd = os.open("self/mountinfo", os.O_RDONLY | os.O_CLOEXEC, dir_fd=self.fd)
        except OSError:
            return b""
        with open(fd, "rb") as f:
            try:
                return f.read()
            except OSError:
                return b""

    def namespaces(self) -> dict[str, int]:
        """The inode of each of our namespaces, by kind: an entering process joins those that differ from its
        own."""
        found = {}
        for kind in NAMESPACE_KINDS:
            try:
                found[kind] = os.stat(_ns_file(kind), dir_fd=self.fd).st_ino
            except OSError:
                pass
        return found

    def namespace_fds(self) -> list[int]:
        """A descriptor of each of our namespaces, for sandboxed-run --enter: we are not dumpable, so only a
        process with CAP_SYS_PTRACE on the host may join them through our pidfd or open our /proc/1/ns (an
        ordinary owner may not, nor may anyone once inside our user namespace). The client learns each one's
        kind from the kernel (NS_GET_NSTYPE)."""
        fds = []
        for kind in NAMESPACE_KINDS:
            try:
                fds.append(os.open(_ns_file(kind), os.O_RDONLY | os.O_CLOEXEC, dir_fd=self.fd))
            except OSError:
                pass
        return fds

    def root(self) -> int:
        """A descriptor (O_PATH) of our root: the job's (a launcher in a chroot makes it other than the mount
        namespace's, which setns gives an entering process), never through the job's view of "/"."""
        return os.open("self/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.fd)

"""The job's Landlock domain (--landlock-read, --landlock-write): where it may read, execute and write.

Once either option is given, the job may read and execute only beneath the read paths and the write
paths, and write (create, remove, rename, truncate, use devices) only beneath the write paths. The
rights are those of the kernel's Landlock ABI (1: reading, writing, making and removing; 2: renaming
and linking across directories, REFER; 3: TRUNCATE; 5: device ioctls, IOCTL_DEV); a right the kernel
does not know, it does not restrict. Network and scope rights (ABI 4, 6) are not handled.

The ruleset is made in the job's first process before its limits and ids change (its paths opened as
we can still open them), and entered right before exec, after everything else of ours has read what it
needs. A domain is for good: the job and its children cannot leave it, and any domain they make only
restricts them more. A kernel without Landlock refuses the job (125), never runs it unconfined.
"""

from __future__ import annotations

import errno
import os
import stat

from . import linux
from .options import SandboxSpec

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
ABI_1 = (1 << 13) - 1  # EXECUTE to MAKE_SYM
BY_ABI = {2: 1 << 13, 3: 1 << 14, 5: 1 << 15}  # REFER, TRUNCATE, IOCTL_DEV: what later ABIs added
READ = EXECUTE | READ_FILE | READ_DIR
FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | 1 << 14 | 1 << 15  # what a rule on a file (no directory) takes


class Unavailable(Exception):
    """The kernel has no Landlock, or refused a rule; str() says which."""


def handled(abi: int) -> int:
    """Every file system right of this ABI."""
    rights = ABI_1
    for version, right in BY_ABI.items():
        if abi >= version:
            rights |= right
    return rights


def resolved(spec: SandboxSpec) -> SandboxSpec:
    """spec with its Landlock paths resolved (os.path.realpath), as the sandbox's mounts show them now, before any
    process of the job exists: every command's ruleset (a session's, --enter's) is then made from paths that
    no symbolic link of the job's can lead elsewhere (ruleset() follows none)."""
    values = dict(zip(spec.__slots__, spec.to_wire(), strict=True))
    for name in ("landlock_read", "landlock_write"):
        values[name] = tuple(os.path.realpath(path) for path in values[name])
    return type(spec)(values)


def _open_unlinked(path: str) -> int:
    """An O_PATH descriptor of path, opened one component at a time without following a symbolic link: a job's
    command may have put one where a path of ours was (a session's later command, --enter), to widen the domain
    of the next."""
    fd = os.open("/", os.O_PATH | os.O_CLOEXEC)
    try:
        for part in [p for p in path.split("/") if p]:
            following = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = following
            if stat.S_ISLNK(os.fstat(fd).st_mode):
                raise OSError(errno.ELOOP, "a symbolic link took its place since the sandbox started")
    except BaseException:
        os.close(fd)
        raise
    return fd


def ruleset(read: tuple[str, ...], write: tuple[str, ...]) -> int:
    """A ruleset descriptor allowing READ beneath read and every right beneath write."""
    abi = linux.landlock_abi()
    if abi < 1:
        raise Unavailable("this kernel has no Landlock (Linux 5.13 and later, with landlock among its lsm= "
                          "modules); the job would run unconfined")
    every = handled(abi)
    fd = linux.landlock_ruleset(every)
    try:
        for paths, rights in ((read, READ), (write, every)):
            for path in paths:
                try:
                    target = _open_unlinked(path)
                except OSError as exc:
                    raise Unavailable(f"cannot confine the job to {path}: {exc.strerror} (inside the sandbox)") \
                        from None
                try:
                    if not os.path.isdir(f"/proc/self/fd/{target}"):
                        rights &= FILE_RIGHTS
                    linux.landlock_allow_beneath(fd, target, rights)
                finally:
                    os.close(target)
    except BaseException:
        os.close(fd)
        raise
    return fd


def enter(fd: int) -> None:
    """Enter the ruleset's domain (with no_new_privs unless this process holds CAP_SYS_ADMIN), and close it."""
    import prctl

    try:
        if not prctl.cap_effective.sys_admin:
            prctl.set_no_new_privs(1)
        linux.landlock_restrict_self(fd)
    finally:
        os.close(fd)

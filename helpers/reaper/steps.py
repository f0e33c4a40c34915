"""How the reaper makes each kind of set-up step (shared/mountspec.py orders them): a tmpfs, a bind, a
read-only remount, an overlay, a minimal /dev, a fresh /proc (in a new root), a directory, a symbolic link;
and the missing paths they need. Each raises SandboxError, worded for both front ends, when the kernel refuses.
"""

from __future__ import annotations

import os
import stat

from ..shared import linux
from ..shared.errors import SandboxError, mount_error
from ..shared.mountspec import DIRECTORIES, Step, missing_advice

# The devices of a minimal /dev: bind mounts of the host's own nodes, which work in a user namespace too
# (where mknod does not); opened before the new /dev covers the host's.
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
             ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx"))
# Characters that overlayfs's option string gives a meaning to: such a path goes as /proc/self/fd/N.
_OVERLAY_SPECIAL = set(",:\\\n")


def _fd_path(fd: int) -> bytes:
    return b"/proc/self/fd/%d" % fd


def create(step: Step, may: bool, inside: str | None = None) -> None:
    """Make step's missing path (parents first): a directory, an empty file for a bind of a file, only the
    parents for a link. may: whether we may create here (mountspec.may_create); inside: the mount of ours
    the path must not leave (None: anywhere), which a symbolic link below it (in an overlay's lower
    directory, say) would lead out of, to a host directory where what we make would stay."""
    if os.path.lexists(step.target):
        return
    if not may:
        raise SandboxError(f"cannot {_action(step)} {step.target}: {missing_advice(step.target, step.kind)}")
    if inside is not None:
        _no_link_out(step, inside)
    parent = os.path.dirname(step.target)
    try:
        makedirs(parent, 0o755)
        if step.kind == "symlink":
            return
        if step.kind in DIRECTORIES or step.kind == "read_only" or os.path.isdir(step.source or ""):
            os.mkdir(step.target, 0o755)
        else:
            os.close(os.open(step.target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644))
    except OSError as exc:
        raise mount_error(exc, "create the mount point", exc.filename or step.target, kind=step.kind) from None


def makedirs(path: str, mode: int) -> None:
    """os.makedirs(path, mode, exist_ok=True) without its recursion: a path within PATH_MAX may have more parts
    than Python's recursion limit (RecursionError, where the kernel would have made it)."""
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, mode)
        except FileExistsError:
            if not os.path.isdir(directory):
                raise


def _no_link_out(step: Step, inside: str) -> None:
    path = inside
    for part in os.path.relpath(os.path.dirname(step.target), inside).split("/"):
        if part == ".":
            continue
        path = os.path.join(path, part)
        if os.path.islink(path):
            raise SandboxError(f"cannot {_action(step)} {step.target}: {path} is a symbolic link (to "
                               f"{os.readlink(path)}); what is made through it would stay on the host: give the "
                               "path it leads to, or ask for it to be created on the host (--mkdir, mkdir=True)")
        if not os.path.lexists(path):
            return  # from here on we make every part ourselves


def make(step: Step, userns: bool, reopen: bool) -> None:
    """Make one step; the paths it needs exist (create() made them)."""
    path = os.fsencode(step.target)
    try:
        if step.kind == "tmpfs":
            size, mode = step.extra
            _tmpfs(path, mode if mode is not None else stat.S_IMODE(os.stat(path).st_mode), size)
        elif step.kind in ("bind", "ro_bind"):
            assert step.source is not None
            if not os.path.lexists(step.source):
                raise SandboxError(f"cannot {_action(step)} {step.target}: {step.source} does not exist")
            linux.mount(os.fsencode(step.source), path, None, linux.MS_BIND | linux.MS_REC)
            if step.kind == "ro_bind":
                linux.mount_setattr_readonly(path)
            elif reopen:
                linux.mount_setattr_writable(path)
        elif step.kind == "read_only":
            if path != b"/":  # / is a mount already; a bind stacked on it would not be seen
                linux.mount(path, path, None, linux.MS_BIND | linux.MS_REC)
            linux.mount_setattr_readonly(path)
        elif step.kind == "overlay":
            _overlay(step, userns)
        elif step.kind == "dev":
            _dev(path)
        elif step.kind == "proc":
            linux.mount(b"proc", path, b"proc", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
        elif step.kind == "dir":
            if not os.path.isdir(step.target):
                raise SandboxError(f"cannot create the directory {step.target}: something else exists there")
        elif step.kind == "symlink":
            _symlink(step.source or "", step.target)
    except OSError as exc:
        if isinstance(exc, SandboxError):
            raise
        raise mount_error(exc, _action(step), step.target, userns, step.kind) from None


def _action(step: Step) -> str:
    # In words, not flags: the caller may be the command line or the API.
    return {"read_only": "make read-only", "tmpfs": "mount a tmpfs on", "bind": f"bind-mount {step.source} on",
            "ro_bind": f"bind-mount {step.source} read-only on", "overlay": f"mount an overlay of {step.source} on",
            "dev": "mount a minimal /dev on", "dir": "create the directory", "proc": "mount a fresh proc on",
            "symlink": f"make a link to {step.source} at"}[step.kind]


def _tmpfs(path: bytes, mode: int, size: str | None = None, flags: int = linux.MS_NOSUID | linux.MS_NODEV) -> None:
    data = b"mode=%o" % mode + (b",size=" + size.encode() if size else b"")
    linux.mount(b"tmpfs", path, b"tmpfs", flags, data)


def _symlink(target: str, path: str) -> None:
    if os.path.lexists(path):
        if os.path.islink(path) and os.readlink(path) == target:
            return
        raise SandboxError(f"cannot make a link to {target} at {path}: something else exists there")
    os.symlink(target, path)


def _overlay(step: Step, userns: bool) -> None:
    """LOWER shown writable on the target. Its writable layer is UPPER (kept, with the work directory overlayfs
    needs beside it: .NAME.overlay-work) or a private tmpfs mounted on the target first, under the overlay."""
    assert step.source is not None
    target = step.target
    lower = os.open(step.source, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)  # before a tmpfs may cover it
    held = [lower]
    try:
        lower_stat = os.fstat(lower)
        covered = step.source == target or step.source.startswith(target.rstrip("/") + "/")
        if step.extra is None:
            _tmpfs(os.fsencode(target), 0o755, flags=0)
            upper, work = os.path.join(target, "upper"), os.path.join(target, "work")
            os.mkdir(upper, stat.S_IMODE(lower_stat.st_mode))
            os.chmod(upper, stat.S_IMODE(lower_stat.st_mode))
            os.mkdir(work, 0o700)
            try:  # the overlay's root takes its owner from the writable layer's
                os.chown(upper, lower_stat.st_uid, lower_stat.st_gid)
            except OSError:
                pass  # an owner that the user namespace does not map
            hidden = True
        else:
            upper = step.extra
            work = overlay_work_dir(upper)
            makedirs(upper, 0o755)
            makedirs(work, 0o700)
            hidden = False

        def option(path: str, fd: int | None, must_hide: bool) -> bytes:
            if not must_hide and not _OVERLAY_SPECIAL & set(path):
                return os.fsencode(path)
            if fd is None:
                fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                held.append(fd)
            return _fd_path(fd)

        data = b"lowerdir=%s,upperdir=%s,workdir=%s" % (
            option(step.source, lower, covered), option(upper, None, hidden), option(work, None, hidden))
        if userns:
            data += b",userxattr"  # trusted.* xattrs need privilege over the host; user.* do not
        linux.mount(b"overlay", os.fsencode(target), b"overlay", 0, data)
    finally:
        for fd in held:
            os.close(fd)


def overlay_work_dir(upper: str) -> str:
    """The work directory overlayfs needs for a kept UPPER: beside it (the same file system), .NAME.overlay-work."""
    parent, name = os.path.split(upper.rstrip("/"))
    return os.path.join(parent, f".{name}.overlay-work")


def _dev(path: bytes) -> None:
    """A tmpfs with the host's null, zero, full, random, urandom and tty bound in, a private devpts on pts (with
    ptmx linked to it), a tmpfs on shm, and the fd, stdin, stdout, stderr links."""
    nodes = {}
    try:
        for name in DEV_NODES:
            try:
                nodes[name] = os.open(f"/dev/{name}", os.O_PATH | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # the host has none to give
        _tmpfs(path, 0o755, flags=linux.MS_NOSUID | linux.MS_NOEXEC)
        for name, fd in nodes.items():
            node = os.path.join(path, name.encode())
            os.close(os.open(node, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o666))
            linux.mount(_fd_path(fd), node, None, linux.MS_BIND)
    finally:
        for fd in nodes.values():
            os.close(fd)
    pts, shm = os.path.join(path, b"pts"), os.path.join(path, b"shm")
    os.mkdir(pts, 0o755)
    linux.mount(b"devpts", pts, b"devpts", linux.MS_NOSUID | linux.MS_NOEXEC, b"newinstance,ptmxmode=0666,mode=620")
    os.mkdir(shm, 0o1777)
    _tmpfs(shm, 0o1777)
    for name, target in DEV_LINKS:
        os.symlink(target, os.path.join(path, name.encode()))

"""The sandbox's own cgroup, from its launcher's side (the command, or the API's spawn server): made and
limited before the job starts, with the reaper (or the user-namespace parent that forks it) in it, so
every process of the sandbox is born in it; removed after the sandbox.

With systemd as PID 1 it is a transient scope systemd makes (systemd.py), which systemd removes once it
is empty. Elsewhere it is a directory of ours, cgroups.ROOT/sandboxed-run/<launcher pid>.<its start
time>.<random>, in a cgroup v2 hierarchy that root may divide; the reaper removes it as its last act, the
launcher after the reaper is gone, and if everything of ours was SIGKILLed the next sandbox that makes
one removes it (its launcher is gone, and nothing is in it).
"""

from __future__ import annotations

import errno
import os
import time

from .shared import cgroups, linux
from .shared.errors import SandboxError

REMOVE_WAIT = 1.0  # seconds for the last processes of a sandbox to leave its cgroup after cgroup.kill


class Cgroup:
    """One sandbox's cgroup: its path under cgroups.ROOT, and whether we made the directory ourselves."""

    def __init__(self, path: str, ours: bool) -> None:
        self.path = path
        self.ours = ours

    @property
    def directory(self) -> str:
        return os.path.join(cgroups.ROOT, self.path)

    def remove(self) -> None:
        """The last step of a sandbox's teardown, once its reaper is gone: cgroup.kill for anything left,
        then (for a directory of ours) rmdir. Never raises: what stays, the next sandbox's sweep removes."""
        if not os.path.isdir(self.directory):
            return  # gone already: the reaper removed it, or systemd did
        try:
            _write(os.path.join(self.directory, "cgroup.kill"), "1")
        except OSError:
            pass  # a kernel before 5.14 has no cgroup.kill; the PID namespace's end killed everything anyway
        if not self.ours:
            return  # systemd's scope: it goes once empty
        deadline = time.monotonic() + REMOVE_WAIT
        while True:
            try:
                os.rmdir(self.directory)
                return
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() >= deadline:
                    return
            time.sleep(0.01)


def make(limits: dict[str, int | float], pid: int, description: str) -> Cgroup:
    """A cgroup with these limits holding process pid (and so whatever it forks from now on). SandboxError
    (125), in one line, if the machine has none to give or the kernel refuses."""
    reason = cgroups.unavailable(limits)
    if reason:
        raise SandboxError(f"cannot give the sandbox a cgroup: {reason}")
    if cgroups.systemd_booted():
        from .systemd import scope_name, start_scope

        return Cgroup(start_scope(scope_name(pid), pid, limits, description), ours=False)
    return _make_directory(limits, pid)


def _make_directory(limits: dict[str, int | float], pid: int) -> Cgroup:
    base = os.path.join(cgroups.ROOT, cgroups.DIRECT_BASE)
    wanted = [c for c in cgroups.ACCOUNTED if c in cgroups.available()]
    try:
        # Controllers go down from the root: the root's children get them, then ours.
        _enable(cgroups.ROOT, wanted)
        try:
            os.mkdir(base, 0o755)
        except FileExistsError:
            pass
        _enable(base, wanted)
    except OSError as exc:
        raise SandboxError(f"cannot make {base} a cgroup for sandboxes: {_explain(exc)}") from None
    sweep(base)
    directory = os.path.join(base, f"{os.getpid()}.{_start_time(os.getpid())}.{os.urandom(4).hex()}")
    os.mkdir(directory, 0o755)
    group = Cgroup(os.path.relpath(directory, cgroups.ROOT), ours=True)
    try:
        for name, value in cgroups.files(limits):
            try:
                _write(os.path.join(directory, name), value)
            except OSError as exc:
                raise SandboxError(f"cannot set {name} to {value} in {directory}: {_explain(exc)}") from None
        try:
            _write(os.path.join(directory, "cgroup.procs"), str(pid))
        except OSError as exc:
            raise SandboxError(f"cannot move the sandbox into {directory}: {_explain(exc)}") from None
    except BaseException:
        group.remove()
        raise
    return group


def sweep(base: str) -> None:
    """Remove the cgroups of sandboxes whose launcher is gone and in which nothing runs: what a sandbox
    whose every process was SIGKILLed (the reaper and the launcher too) had to leave."""
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        owner, _, rest = name.partition(".")
        started, _, _ = rest.partition(".")
        if not owner.isdigit() or not started.isdigit():
            continue
        if _start_time(int(owner)) == int(started):
            continue  # its launcher lives: it removes its own
        try:
            os.rmdir(os.path.join(base, name))
        except OSError:
            pass  # something still runs in it (EBUSY), or another launcher's sweep was first


def _enable(directory: str, controllers: list[str]) -> None:
    with open(os.path.join(directory, "cgroup.subtree_control")) as f:
        enabled = set(f.read().split())
    missing = [c for c in controllers if c not in enabled]
    if missing:
        _write(os.path.join(directory, "cgroup.subtree_control"), " ".join("+" + c for c in missing))


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _explain(exc: OSError) -> str:
    if exc.errno == errno.EBUSY:
        return ("the cgroup holds processes of its own, so its controllers cannot be handed down (the root of a "
                "container's cgroup namespace?); run under systemd, or from the root cgroup")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{exc.strerror} (needs root, and /sys/fs/cgroup writable)"
    return exc.strerror or str(exc)


def _start_time(pid: int) -> int:
    """When a process started (clock ticks after boot); 0 if it does not exist: a PID and this name one process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(linux.stat_fields(f.read())[19])
    except (OSError, IndexError, ValueError):
        return 0

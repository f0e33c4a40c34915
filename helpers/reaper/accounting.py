"""The reaper's side of the sandbox's cgroup and of the usage report.

When the sandbox has a cgroup (a limit option asked for one, and the launcher put us in it before our
order came), we hold its directory open from the start, since the job's mounts may hide /sys/fs/cgroup;
we read memory.events to tell an out-of-memory kill from any other SIGKILL, and, at the end, once
every other process is gone, the cgroup's figures. A cgroup we made ourselves (no systemd) we also
leave and remove as our last act, so that it goes with the sandbox even if the launcher died first;
systemd removes its scopes itself once they are empty.
"""

from __future__ import annotations

import os
import signal
import time

from ..shared import linux, wire
from ..shared.options import SandboxSpec
from ..shared.usage import Usage

OOM_PROTECTED = -1000  # the reaper is never the OOM killer's pick: it must live to report and tear down


class Accounting:
    def __init__(self, spec: SandboxSpec, after_others: bool = False) -> None:
        """after_others: we may have reaped earlier sandboxes' processes (a reaper that serves one caller's jobs
        in turn): the usage is then what we reaped since, each process's own (wait4)."""
        self.since = linux.children_usage() if after_others else None
        self.max_rss = 0  # the largest process reaped so far, in bytes (with since)
        self.began: float | None = None  # when the first command started (or the session was ready)
        self.dir_fd: int | None = None
        self.base_fd: int | None = None  # the directory our cgroup is in, when it is ours to remove
        self.name = ""
        self.root_procs: int | None = None
        self.oom_counted = 0
        self.oom_score_adj: int | None = None  # the value to give back to the job's processes
        if not spec.cgroup_limits:
            return
        from ..shared import cgroups

        path = cgroups.own()
        try:
            self.dir_fd = os.open(os.path.join(cgroups.ROOT, path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return  # no figures; the limits hold all the same
        base, _, self.name = path.rpartition("/")
        if base == cgroups.DIRECT_BASE:
            try:
                self.base_fd = os.open(os.path.join(cgroups.ROOT, base), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                self.root_procs = os.open(os.path.join(cgroups.ROOT, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)
            except OSError:
                pass
        if spec.memory_max is not None:
            self.oom_score_adj = _protect_from_oom()

    def start(self) -> None:
        if self.began is None:
            self.began = time.monotonic()

    def killed_for_memory(self, status: int | None) -> bool:
        """Whether a process that ended so was killed for lack of memory: it died of SIGKILL and the cgroup
        counts an OOM kill that no earlier process accounted for."""
        if self.dir_fd is None or status is None or not os.WIFSIGNALED(status) or \
                os.WTERMSIG(status) != signal.SIGKILL:
            return False
        from ..shared import cgroups

        kills = cgroups.oom_kills(self.dir_fd) or 0
        if kills > self.oom_counted:
            self.oom_counted += 1
            return True
        return False

    def of_command(self, started: float, rusage: object) -> Usage:
        """One command of a session: its own wall time, and what wait4 says of it and the children it waited for."""
        return Usage(time.monotonic() - started, rusage.ru_utime, rusage.ru_stime, rusage.ru_maxrss * 1024)

    def reaped(self, rusage: object) -> None:
        """A process of ours ended so (wait4)."""
        if self.since is not None:
            self.max_rss = max(self.max_rss, rusage.ru_maxrss * 1024)

    def total(self) -> Usage:
        """The whole sandbox, once every other process is gone."""
        user, system, max_rss = linux.children_usage()
        if self.since is not None:
            user, system, max_rss = user - self.since[0], system - self.since[1], self.max_rss
        wall = time.monotonic() - self.began if self.began is not None else 0.0
        figures = {}
        if self.dir_fd is not None:
            from ..shared import cgroups

            figures = cgroups.figures(self.dir_fd)
        return Usage(wall, user, system, max_rss, **figures)

    def leave(self) -> None:
        """Our last act, in a cgroup we made: move to the root cgroup and remove ours (nothing else is in it).
        If something is (a user namespace's parent, still exiting), the launcher removes it after."""
        if self.root_procs is None or self.base_fd is None:
            return
        try:
            os.write(self.root_procs, b"0")
            os.rmdir(self.name, dir_fd=self.base_fd)
        except OSError:
            pass


def warm_up() -> None:
    """Run the end of a job's path once while we wait for the order: the usage and the message that carries
    it (see main.warm_up: a forked reaper copies the pages a first run writes to)."""
    user, system, max_rss = linux.children_usage()
    wire.encode(wire.Exited(0, Usage(0.0, user, system, max_rss)))


def _protect_from_oom() -> int | None:
    """Make the reaper the OOM killer's last choice; the old value, to give back to the job (None: not allowed
    here, as in a user namespace, and nothing to give back)."""
    try:
        with open("/proc/self/oom_score_adj", "r+") as f:
            old = int(f.read())
            f.seek(0)
            f.write(str(OOM_PROTECTED))
        return old
    except OSError:
        return None

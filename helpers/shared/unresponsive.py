"""A sandbox whose PID 1 does not end it in time: what whoever waits outside does about it.

A job that can ptrace its PID 1 (a root job with CAP_SYS_PTRACE) or write the host's cgroup-v1 freezer
(a job running as host root) can stop the reaper, and a stopped reaper obeys no stop, no timeout and
no grace period. So nobody outside trusts it further than this: once a stop was asked for (a timeout,
sandboxed-run --stop, the caller's death) or announced (the reaper's stopping event), the sandbox must be
gone within its grace period and MARGIN. If it is not, the waiter SIGKILLs the reaper through its pidfd
(the kernel then kills every process of its PID namespace) and thaws the freezer cgroups that hold the
reaper or any thread of the sandbox: a task frozen by the cgroup-v1 freezer does not die of SIGKILL
until it is thawed (verified on 6.18: it stays in D state with the signal pending), and PID 1's exit waits
for it. The freezer takes threads one by one (a thread id written to its tasks file), and the sandbox's
processes include those of PID namespaces its job made below its own: each thread of each is looked at.
The thaw is repeated every RETHAW seconds until the sandbox is gone, since what is still alive in there
may freeze again.

Nothing here runs unless a stop is overdue: the deadline is one more in waits that exist anyway.
"""

from __future__ import annotations

import math
import os
import signal
import time

from . import linux

# After its grace a reaper SIGKILLs what is left and exits at once; it waits up to 5 s more for processes
# stuck in the kernel (reaper.main.REAP_AFTER_KILL), and a loaded machine may add a moment. Beyond that,
# it is not responding.
MARGIN = 7.0
RETHAW = 0.5

def due(grace: float | None, since: float | None = None) -> float | None:
    """When a sandbox stopped (since: time.monotonic(), default now) with this grace must be gone; None for
    a grace without limit (inf), which the user chose: then nobody ever takes the reaper for unresponsive."""
    if grace is None or not isinstance(grace, (int, float)) or math.isnan(grace) or grace < 0:
        grace = 0.0
    if math.isinf(grace):
        return None
    return (time.monotonic() if since is None else since) + grace + MARGIN


def pid_namespace(pid: int) -> int | None:
    """The inode of pid's PID namespace, if we may read it (root may, whatever the reaper's dumpable flag)."""
    try:
        return os.stat(f"/proc/{pid}/ns/pid").st_ino
    except OSError:
        return None


def kill(pidfd: int, pid: int | None, pid_ns: int | None = None) -> int:
    """SIGKILL the reaper through its pidfd, then thaw the freezer cgroups of it and of the threads of its
    sandbox (pid_ns: its PID namespace's inode, read before if it may no longer be readable). Returns the
    number of cgroups thawed. Call it again (every RETHAW seconds) until the pidfd is readable."""
    if pid is not None:
        pid_ns = pid_namespace(pid) or pid_ns
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except OSError:
        pass  # gone already, or not ours to kill: the wait on its pidfd says which
    if linux.readable(pidfd):
        # It has exited, and every process of its namespace before it: nothing to thaw. Its PID, read above,
        # may be another process's by now (and its namespace the host's).
        return 0
    return thaw(pid, pid_ns)


def thaw(pid: int | None, pid_ns: int | None) -> int:
    """Thaw every cgroup-v1 freezer cgroup (and frozen ancestor) that holds pid or a thread of a process of the
    PID namespace pid_ns or of one below it; the number thawed. Nothing to do where the host has no v1
    freezer mounted."""
    mounts = _freezer_mounts()
    if not mounts:
        return 0
    pids = {pid} if pid is not None else set()
    if pid_ns is not None:
        pids.update(_processes_in(pid_ns))
    thawed = 0
    done: set[str] = set()
    for member in pids:
        for path in _freezer_paths(member):
            for directory in _directories(path, mounts):
                if directory not in done:
                    done.add(directory)
                    thawed += _thaw_one(directory)
    return thawed


def line(pid: int, waited: float | None, thawed: int, responded: bool = False) -> str:
    """What we say when we killed an unresponsive PID 1 (responded: it had said its last, but the sandbox's
    processes did not end: frozen ones, which its exit waits for)."""
    within = f" within {waited:.3g} s" if waited is not None else ""
    frozen = f"; thawed {thawed} frozen cgroup{'s' if thawed != 1 else ''}" if thawed else ""
    if responded:
        return (f"the sandbox did not end{within} of its stop: some of its processes could not be killed; "
                f"killed its PID 1 (pid {pid}) again{frozen}")
    return (f"the sandbox's PID 1 (pid {pid}) did not respond: the sandbox did not end{within} of its stop; "
            f"killed it (SIGKILL), and every process of the sandbox with it{frozen}")


def _freezer_mounts() -> list[tuple[str, str]]:
    """(root of the hierarchy shown, mount point) of each cgroup-v1 freezer mount we see."""
    from . import mountinfo

    try:
        entries = mountinfo.read()
    except OSError:
        return []
    return [(entry.root, entry.target) for entry in entries
            if entry.fstype == "cgroup" and "freezer" in entry.super_options.split(",")]


# The kernel nests PID namespaces at most this deep (MAX_PID_NS_LEVEL).
_MAX_DEPTH = 32


def _processes_in(pid_ns: int) -> list[int]:
    """The processes of the PID namespace pid_ns and of the namespaces below it (its job's unshare -p)."""
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit() and _lives_in(int(entry), pid_ns)]


def _lives_in(pid: int, pid_ns: int) -> bool:
    """Whether process pid lives in the PID namespace pid_ns or below it: its own namespace, or one of that
    namespace's ancestors, is pid_ns (NS_GET_PARENT stops at the top of what we may see)."""
    try:
        fd = os.open(f"/proc/{pid}/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        for _ in range(_MAX_DEPTH + 1):
            if os.fstat(fd).st_ino == pid_ns:
                return True
            try:
                parent = linux.parent_namespace(fd)
            except OSError:
                return False
            os.close(fd)
            fd = parent
        return False
    finally:
        os.close(fd)


def _freezer_paths(pid: int) -> set[str]:
    """The freezer cgroups of pid's threads, as /proc/PID/task/TID/cgroup names them ("7:freezer:/a/b")."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return set()
    found = set()
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/cgroup") as f:
                for entry in f:
                    _, controllers, path = entry.rstrip("\n").split(":", 2)
                    if "freezer" in controllers.split(","):
                        found.add(path)
        except (OSError, ValueError):
            continue
    return found


def _directories(path: str, mounts: list[tuple[str, str]]) -> list[str]:
    """The cgroup's directory and its ancestors' (not the hierarchy's root, which cannot be frozen), as
    the mounts show them: a frozen ancestor freezes all below it."""
    found = []
    for root, target in mounts:
        if path != root and not path.startswith(root.rstrip("/") + "/"):
            continue
        parts = [p for p in path[len(root):].split("/") if p]
        while parts:
            found.append(os.path.join(target, *parts))
            parts.pop()
        break
    return found


def _thaw_one(directory: str) -> int:
    try:
        with open(os.path.join(directory, "freezer.self_freezing")) as f:
            if f.read().strip() != "1":
                return 0
        with open(os.path.join(directory, "freezer.state"), "w") as f:
            f.write("THAWED")
        return 1
    except OSError:
        return 0

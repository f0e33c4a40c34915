"""cgroup v2 as every process of ours needs it: whether this machine can give a sandbox a cgroup of its own
with the controllers its limits need (and if not, what is missing, in one line); what each limit option
becomes (a file of the cgroup, or a property of a systemd scope); the figures a sandbox's cgroup reports.

Where the cgroup comes from (helpers/scope.py): with systemd as PID 1, a transient scope that systemd
makes, as `systemd-run --scope` does; elsewhere a directory of ours, ROOT/sandboxed-run/<one per sandbox>,
in the cgroup v2 hierarchy. A cgroup v1 or hybrid machine has none to give.
"""

from __future__ import annotations

import os

from .limits import shown_size

ROOT = "/sys/fs/cgroup"
DIRECT_BASE = "sandboxed-run"
SYSTEMD_BUS = "/run/dbus/system_bus_socket"

# The limit options, the controller each needs, and how it is written.
CONTROLLERS = {"memory_max": "memory", "memory_high": "memory", "cpu_weight": "cpu", "cpu_max": "cpu",
               "io_weight": "io", "pids_max": "pids"}
ACCOUNTED = ("cpu", "io", "memory", "pids")  # enabled wherever available: the usage figures come from them
CPU_PERIOD = 100_000  # microseconds: cpu.max's period, systemd's too


def files(limits: dict[str, int | float]) -> list[tuple[str, str]]:
    """The cgroup files, and what to write in them, for the given limits (name -> checked value)."""
    out = []
    for name, value in limits.items():
        if name == "memory_max":
            out.append(("memory.max", str(value)))
        elif name == "memory_high":
            out.append(("memory.high", str(value)))
        elif name == "cpu_weight":
            out.append(("cpu.weight", str(value)))
        elif name == "cpu_max":
            out.append(("cpu.max", f"{round(value * CPU_PERIOD / 100)} {CPU_PERIOD}"))
        elif name == "io_weight":
            out.append(("io.weight", f"default {value}"))
        elif name == "pids_max":
            out.append(("pids.max", str(value)))
    return out


def properties(limits: dict[str, int | float]) -> list[tuple[str, tuple[str, object]]]:
    """The same limits as the properties of a transient systemd unit: (name, (D-Bus signature, value))."""
    names = {"memory_max": "MemoryMax", "memory_high": "MemoryHigh", "cpu_weight": "CPUWeight",
             "io_weight": "IOWeight", "pids_max": "TasksMax"}
    out: list[tuple[str, tuple[str, object]]] = []
    for name, value in limits.items():
        if name == "cpu_max":
            out.append(("CPUQuotaPerSecUSec", ("t", round(value * 10_000))))  # percent of one CPU, per second
        else:
            out.append((names[name], ("t", int(value))))
    return out


def described(limits: dict[str, int | float]) -> str:
    """The limits as a person reads them: memory.max 64M, cpu.max 20%."""
    parts = []
    for name, value in limits.items():
        shown = shown_size(int(value)) if name.startswith("memory") else f"{value:g}%" if name == "cpu_max" \
            else str(value)
        parts.append(f"{name.replace('_', '.', 1)} {shown}")
    return ", ".join(parts)


# -- what the machine has ----------------------------------------------------------------------------

def mounted(path: str) -> str | None:
    """The file system type of the topmost mount on path, or None if nothing is mounted there."""
    from . import mountinfo

    try:
        found = mountinfo.topmost(mountinfo.read(), path)
    except OSError:
        return None
    return found.fstype if found is not None else None


def systemd_booted() -> bool:
    """systemd is PID 1 (sd_booted(3)'s test)."""
    return os.path.isdir("/run/systemd/system")


def available() -> set[str]:
    try:
        with open(os.path.join(ROOT, "cgroup.controllers")) as f:
            return set(f.read().split())
    except OSError:
        return set()


def own(pid: int | str = "self") -> str:
    """The cgroup v2 path of a process, relative to ROOT ("" for the root); "" if it has none."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].strip().strip("/")
    except OSError:
        pass
    return ""


def bus_address() -> str | None:
    """The D-Bus address of the systemd manager we ask for a scope: the system bus as root, else the user's
    bus (systemd's user manager); None if there is none."""
    if os.geteuid() == 0:
        address = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or f"unix:path={SYSTEMD_BUS}"
    else:
        address = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
        if not address and os.environ.get("XDG_RUNTIME_DIR"):
            address = f"unix:path={os.environ['XDG_RUNTIME_DIR']}/bus"
    if not address:
        return None
    if address.startswith("unix:path="):
        path = address[len("unix:path="):].split(",")[0]
        if not os.path.exists(path):
            return None
    return address


def unavailable(limits: dict[str, int | float]) -> str | None:
    """Why this machine cannot give a sandbox a cgroup with these limits, in words that say what to do;
    None if it can."""
    needed = {CONTROLLERS[name] for name in limits}
    fstype = mounted(ROOT)
    if fstype != "cgroup2":
        if mounted(os.path.join(ROOT, "unified")) == "cgroup2":
            return ("this machine has cgroup v1 (a hybrid hierarchy: its cgroup v2 part on /sys/fs/cgroup/unified "
                    "has no controllers); limits need the unified cgroup v2 hierarchy (boot with "
                    "systemd.unified_cgroup_hierarchy=1)")
        if fstype == "tmpfs" or fstype == "cgroup":
            return "this machine has cgroup v1; limits need the unified cgroup v2 hierarchy on /sys/fs/cgroup"
        return "no cgroup v2 hierarchy is mounted on /sys/fs/cgroup (mount -t cgroup2 cgroup2 /sys/fs/cgroup)"
    missing = sorted(needed - available())
    if missing:
        return f"the cgroup v2 hierarchy has no {' or '.join(missing)} controller"
    if systemd_booted():
        if bus_address() is None:
            if os.geteuid() == 0:
                return f"systemd is PID 1 but its D-Bus system bus is not running (no {SYSTEMD_BUS})"
            return "needs root, or a systemd user session to ask for a scope (no $XDG_RUNTIME_DIR/bus)"
        return None
    if os.geteuid() != 0:
        return "needs root here (without systemd as PID 1, sandboxed-run makes its cgroups in /sys/fs/cgroup itself)"
    return None


# -- what a sandbox's cgroup reports ------------------------------------------------------------------

def _read(dir_fd: int, name: str) -> str | None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        return os.read(fd, 65536).decode()
    except OSError:
        return None
    finally:
        os.close(fd)


def _keyed(text: str | None, key: str) -> int | None:
    for line in (text or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return None


def oom_kills(dir_fd: int) -> int | None:
    """How many processes the kernel killed in this cgroup for lack of memory (memory.events' oom_kill)."""
    return _keyed(_read(dir_fd, "memory.events"), "oom_kill")


def figures(dir_fd: int) -> dict[str, int | None]:
    """The cgroup's figures for the usage report: memory_peak (bytes), io_read and io_write (bytes, every
    device), pids_peak (tasks at once), oom_kills; None for what this kernel does not count."""
    peak = _read(dir_fd, "memory.peak")
    pids = _read(dir_fd, "pids.peak")
    io = _read(dir_fd, "io.stat")
    read = written = None
    if io is not None:
        read = written = 0
        for line in io.splitlines():
            for field in line.split()[1:]:
                key, _, value = field.partition("=")
                if key == "rbytes":
                    read += int(value)
                elif key == "wbytes":
                    written += int(value)
    return {"memory_peak": int(peak) if peak and peak.strip().isdigit() else None,
            "io_read": read, "io_write": written,
            "pids_peak": int(pids) if pids and pids.strip().isdigit() else None,
            "oom_kills": oom_kills(dir_fd)}

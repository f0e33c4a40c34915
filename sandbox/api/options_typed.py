"""The sandbox options as a type checker sees them, written by sandbox/api/typegen.py from the option table
(helpers/shared/options.py): do not edit; regenerate with
`.venv/bin/python -m sandbox.api.typegen > sandbox/api/options_typed.py`.

Imported only under TYPE_CHECKING (sandbox/api/typed.py): nothing of it runs when a program uses the API.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, TypedDict

Path = str | os.PathLike[str]
Duration = float | str  # seconds, or "500ms", "10m", "1h30m"
Limit = int | str | tuple[int | str | None, int | str | None]  # one resource limit: SOFT, "SOFT:HARD", (soft, hard)
EventHandler = Callable[[str, dict[str, Any]], object]  # on_event(name, fields)


class CommandOptions(TypedDict, total=False):
    """The options of a command of a Job (job.run, job.Popen): the Job has the sandbox's."""

    #: Called as on_event(name, fields) for each lifecycle event, 'finished' last. On the command line:
    #: --json-status.
    on_event: EventHandler | None


class SandboxOptions(CommandOptions, total=False):
    """The options of a sandbox of its own (run, Popen, Job, run_async, create_process, AsyncJob),
    the command's flags of the same names."""

    #: How long the job's processes get to clean up after the stop signal, before SIGKILL (30, 1.5, 500ms,
    #: 1m30s; inf: never SIGKILL).
    grace: Duration
    #: Signal that asks the job to stop (name or number; KILL leaves no trap a chance, and a warning says so).
    stop_signal: str | int
    #: Mount a private tmpfs on DIR (repeatable); OPTS: size=64M,mode=0700.
    tmpfs: Iterable[Path | tuple[Path, str | Mapping[str, str | int]]]
    #: Bind-mount SRC on DST (repeatable).
    bind: Iterable[Path | tuple[Path, Path]]
    #: Bind-mount SRC on DST read-only, submounts included (repeatable).
    ro_bind: Iterable[Path | tuple[Path, Path]]
    #: Show LOWER on DIR, writable (overlayfs; repeatable): changes go to a private tmpfs and vanish, or to
    #: UPPER and stay.
    overlay: Iterable[Path | tuple[Path, Path] | tuple[Path, Path, Path]]
    #: Mount a minimal /dev on DIR: null, zero, full, random, urandom, tty, pts, shm (repeatable).
    dev: Iterable[Path]
    #: Create directory DIR (repeatable).
    dir: Iterable[Path]
    #: Create a symbolic link PATH to TARGET (repeatable).
    symlink: Iterable[str | tuple[Path, Path]]
    #: Remount PATH read-only inside, submounts included (repeatable); tmpfs, bind and ro-bind open holes in it.
    read_only: Iterable[Path]
    #: Create missing mount points, --dir and --symlink paths on the host's file systems too (they stay);
    #: without it only below a --tmpfs, --overlay or --dev.
    mkdir: bool
    #: How / is remounted inside: slave still sees the host's new mounts; private does not. Mounts made inside
    #: never reach the host.
    propagation: Literal["slave", "private"]
    #: Mount a fresh /proc for the new PID namespace (--no-proc: the host's /proc stays).
    proc: bool
    #: Make DIR the job's / (pivot_root; nothing of the host's stays mounted), with a fresh /proc and a minimal
    #: /dev in it. The other mount options' targets are paths in it, their sources the host's; --read-only /
    #: makes it read-only, --overlay DIR:/ throwaway. The job starts in its / unless --cwd says otherwise.
    root: str | None
    #: Network: the host's; none (a new namespace with only lo, up); veth (a new namespace joined to the host by
    #: a veth pair, addresses from 10.213.0.0/16 unless --ip; root only); bridge:NAME (the pair's host end on
    #: the existing bridge NAME; needs --ip); or join the named namespace made by 'ip netns add NAME'.
    net: str
    #: The job's IPv4 address and prefix with --net veth or bridge:NAME (default with veth: a /30 of
    #: 10.213.0.0/16 free on this host).
    ip: str | None
    #: With --net veth and --ip: the host end's address, in --ip's subnet; the job's default route goes via it
    #: (default: the subnet's first other address).
    host_ip: str | None
    #: With --net bridge:NAME: the job's default route goes via ADDR, in --ip's subnet (default: no default
    #: route).
    gateway: str | None
    #: Run in a new user namespace where the caller is mapped to --userns-uid/--userns-gid (default 0, root
    #: inside). Automatic when the caller is not root.
    userns: bool | None
    #: The uid the caller is mapped to inside the user namespace (implies --userns). Not a switch of user: its
    #: processes are still the caller on the host.
    userns_uid: int | None
    #: The gid the caller is mapped to inside the user namespace (implies --userns).
    userns_gid: int | None
    #: Set the hostname in a new UTS namespace.
    hostname: str | None
    #: Give the job new namespaces of these kinds too (repeatable, comma-separated): ipc (its own System V IPC
    #: and POSIX message queues), uts (its own hostname; --hostname implies it), cgroup (its cgroup is its /),
    #: time (its own clocks, for its processes; offsets 0). Mount and PID namespaces are always new.
    unshare: Iterable[str]
    #: Run the job as this user (name or uid): real, effective and saved uid, with its group and groups from the
    #: user database unless --group/--groups say otherwise; no capabilities unless --cap-keep names them. Root
    #: only; an ordinary user may name only themselves. In a user namespace the ids are the namespace's. Like
    #: setpriv --reuid --init-groups.
    user: str | int | None
    #: Run the job with this group (name or gid): real, effective and saved gid.
    group: str | int | None
    #: The job's supplementary groups, comma-separated ('' for none; default with --user: the user's groups from
    #: the group database).
    extra_groups: Iterable[str | int] | None
    #: Allow only these system calls, or with a leading ~ deny them (repeatable; systemd's SystemCallFilter=
    #: syntax): names and systemd's groups such as @mount, @module, @raw-io, @privileged, @system-service (see
    #: systemd-analyze syscall-filter). A refused call fails with --syscall-errno; a call of another
    #: architecture kills the process. Installed last before exec, with no_new_privs unless the job keeps
    #: CAP_SYS_ADMIN.
    syscall_filter: Iterable[str]
    #: With Landlock, let the job read and execute only beneath these paths (and the --landlock-write ones), as
    #: it sees them inside (repeatable). No Landlock in the kernel: exit 125.
    landlock_read: Iterable[Path]
    #: With Landlock, let the job write (create, remove, rename, truncate) only beneath these paths, which it
    #: may read too (repeatable). Entered with no_new_privs unless the job keeps CAP_SYS_ADMIN.
    landlock_write: Iterable[Path]
    #: The errno a call refused by --syscall-filter fails with (EPERM, EACCES, ENOSYS, ...).
    syscall_errno: str | int
    #: The job's niceness, -20 (first) to 19 (last), as systemd's Nice= (lower than the caller's needs root).
    #: Like nice(1).
    nice: int | None
    #: The job's I/O scheduling class: idle, best-effort[:LEVEL] or realtime[:LEVEL] (LEVEL 0 highest to 7,
    #: default 4; realtime needs root). Like ionice(1).
    ionice: str | None
    #: A resource limit of the job's processes, NAME=SOFT[:HARD] (repeatable): NOFILE, NPROC, CORE, AS, CPU,
    #: FSIZE, LOCKS, ... as in setrlimit(2); a size (512M) for byte limits; unlimited. SOFT alone sets both;
    #: SOFT: or :HARD keeps the other. Like prlimit(1).
    rlimit: Iterable[str | tuple[str, Limit]] | dict[str, Limit]
    #: The job's umask, in octal (default: the caller's).
    umask: int | str | None
    #: Set no_new_privs for the job: no setuid bit or file capability grants anything on exec. Like setpriv
    #: --no-new-privs.
    no_new_privs: bool
    #: Drop a capability (CAP_SYS_ADMIN, or ALL) from the job's processes: bounding, inheritable, ambient,
    #: permitted and effective sets (repeatable). Like setpriv's --bounding-set and --inh-caps.
    cap_drop: Iterable[str]
    #: Keep only these capabilities (repeatable) and drop every other one, as --cap-drop does (not with
    #: --cap-drop). Like setpriv --bounding-set -all,+CAP.
    cap_keep: Iterable[str]
    #: Memory limit of the whole sandbox (cgroup v2 memory.max; SIZE: 512M, 2G): past it the kernel kills a
    #: process of the job, reported as out of memory.
    memory_max: int | str | None
    #: Memory the sandbox may use before the kernel throttles and reclaims (memory.high).
    memory_high: int | str | None
    #: CPU share against other cgroups, 1 to 10000, default 100 (cpu.weight).
    cpu_weight: int | None
    #: CPU time the sandbox may use, in percent of one CPU (50%, or 200% for two CPUs: cpu.max).
    cpu_max: float | str | None
    #: I/O share against other cgroups, 1 to 10000, default 100 (io.weight).
    io_weight: int | None
    #: The most tasks (processes and threads, the reaper included) the sandbox may have at once (pids.max).
    pids_max: int | None
    #: Run COMMAND with /bin/sh -c outside the sandbox once its last process is gone, however it ended
    #: (repeatable, in order). It gets SANDBOXED_RUN_EXIT_CODE, _SIGNAL, _STATUS and _STOP_REASON; a failing
    #: hook is reported but does not change the exit status.
    on_exit: Iterable[str] | None
    #: List the sandbox under NAME while it runs (unique per user; default: a generated one), for --list,
    #: --enter and --stop.
    name: str | None

"""Every option of sandboxed-run, declared once: the table the command line and the API are built from.

An Option says its name (the API keyword; the command's flag is --name with "-" for "_"), its
default, how a value is checked (one function, whichever front end gave it, with errors worded in
that front end's own spelling: `tmpfs` in the API, `--tmpfs` on the command line), its help, and its
scope: "sandbox" options make up the SandboxSpec that travels to the reaper; "hooks" and the
command-line-only options are the launcher's business. sandbox/cli builds the click command from
OPTIONS, sandbox/api builds the keywords of run, Popen, Job and the asyncio variants from it, and
the wire carries SandboxSpec.to_wire(). Adding an option is one entry here plus its effect in the
reaper (helpers/reaper).
"""

from __future__ import annotations

import math
import os
import signal
import stat
from collections.abc import Callable, Iterable, Mapping

from . import durations, limits, records
from .errors import SandboxError, userns_unavailable
from .mountspec import (
    Step,
    absolute_path,
    bind_value,
    overlay_value,
    proc_self_problem,
    steps_of,
    symlink_value,
    tmpfs_value,
)
from .mountspec import check_host as check_mounts
from .records import Record
from .registry import name_problem
from .signals import parse_signal

TYPE_CHECKING = False  # typing stays out of the spawn server, whose every reaper is a fork of it
if TYPE_CHECKING:
    from typing import Any

PROPAGATIONS = ("slave", "private")
NETNS_DIR = "/run/netns"
# What lets a root job leave a --root: PID 1's descriptors, its memory, devices, modules, file handles, raw I/O.
ESCAPING_CAPS = frozenset({"CAP_SYS_PTRACE", "CAP_SYS_ADMIN", "CAP_MKNOD", "CAP_SYS_MODULE", "CAP_DAC_READ_SEARCH",
                           "CAP_SYS_RAWIO"})
MAX_ID = 2**32 - 2  # (uid_t)-1 means "no change" to the kernel

# How a front end names an option in its error messages.
API, CLI = "api", "cli"


# -- the checks: (value, the option as the caller spells it) -> the value to keep ---------------------

def duration(value: object, name: str) -> float:
    """Seconds >= 0 as a float: a number, or a string as durations.parse reads it (30, 1.5, 500ms, 10m,
    1h30m); infinity is allowed and means no limit.

    Every wait of ours is capped per step (linux.wait_seconds), so no finite value overflows a
    system call, however large.
    """
    if isinstance(value, str):
        return durations.parse(value, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or a duration such as '10m', not {value!r}")
    try:
        value = float(value)
    except OverflowError:  # an int past any float: longer than any wait, or below 0
        value = math.inf if value > 0 else -math.inf
    if math.isnan(value) or value < 0:
        raise ValueError(f"{name} must be a number of seconds >= 0, not {value!r}")
    return value


def _timeout(value: object, name: str) -> float | None:
    """A duration, or None for none (infinity means none too). 0 stays 0: the API's timeouts are
    subprocess's, where 0 means "do not wait"."""
    if value is None:
        return None
    seconds = duration(value, name)
    return None if math.isinf(seconds) else seconds


def _command_timeout(value: object, name: str) -> float | None:
    """--timeout: 0 means no timeout, as for coreutils' timeout and systemd's timeouts."""
    seconds = _timeout(value, name)
    return None if seconds == 0 else seconds


def _stop_signal(value: object, name: str) -> int:
    try:
        number = parse_signal(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be a signal name or number, not {value!r}") from None
    except ValueError:
        raise ValueError(f"{name}: unknown stop signal {value!r}") from None
    if number == signal.SIGSTOP:
        raise ValueError(f"{name} cannot be SIGSTOP: it does not end a process")
    return number


def _text(value: str) -> str:
    """A str subclass (an enum's member, say) as a plain str: the wire carries only plain data."""
    return str.__str__(value)


def _listed(item_check: Callable[[object, str], Any]) -> Callable[[object, str], tuple]:
    def check(values: object, name: str) -> tuple:
        if isinstance(values, (str, bytes, os.PathLike)):
            raise ValueError(f"{name} takes a list, not a single string: {values!r}")
        if not isinstance(values, Iterable):
            raise TypeError(f"{name} takes a list, not {values!r}")
        return tuple(item_check(value, name) for value in values)
    return check


_path = absolute_path


def _paths(values: object, name: str) -> tuple[str, ...]:
    return _listed(_path)(values, name)


def _choice(*choices: str) -> Callable[[object, str], str]:
    def check(value: object, name: str) -> str:
        if not isinstance(value, str) or value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
        return _text(value)
    return check


def _net(value: object, name: str) -> str:
    if isinstance(value, str):
        value = _text(value)
        if value in ("host", "none", "veth"):
            return value
        if value.startswith("netns:"):
            ns = value[len("netns:"):]
            if ns and "/" not in ns and "\0" not in ns and ns not in (".", ".."):
                return value
            raise ValueError(f"{name} {value}: NAME must be the name of a network namespace in {NETNS_DIR}")
        if value.startswith("bridge:"):
            from .addresses import interface

            interface(value[len("bridge:"):], f"{name} {value}")
            return value
    raise ValueError(f"{name}: unknown net mode {value!r}: use host, none, veth, bridge:NAME or netns:NAME")


def _flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, not {value!r}")
    return value


def _maybe_flag(value: object, name: str) -> bool | None:
    return None if value is None else _flag(value, name)


def _maybe_id(value: object, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a number, not {value!r}")
    if not 0 <= value <= MAX_ID:
        raise ValueError(f"{name} {value} is out of range (0 to {MAX_ID})")
    return value


def _hostname(value: object, name: str) -> str | None:
    if value is None:
        return None
    # ASCII only, so its length in bytes is len(): a lone surrogate (an undecodable byte) cannot be encoded.
    if not isinstance(value, str) or not 0 < len(value) <= 64 or not all(
            c.isascii() and (c.isalnum() or c in "-.") for c in value):
        raise ValueError(f"{name} {value!r}: use 1 to 64 letters, digits, '-' and '.'")
    return _text(value)


UNSHARED = ("ipc", "uts", "cgroup", "time")  # the namespaces --unshare makes; mount and PID are always new


def _unshare(values: object, name: str) -> tuple[str, ...]:
    """KIND[,KIND...] words (or a list of kinds) as the kinds asked for, each once, in UNSHARED's order."""
    if isinstance(values, (str, bytes, os.PathLike)):
        raise ValueError(f"{name} takes a list, not a single string: {values!r}")
    if not isinstance(values, Iterable):
        raise TypeError(f"{name} takes a list, not {values!r}")
    kinds: set[str] = set()
    for value in values:
        if not isinstance(value, str):
            raise TypeError(f"{name} takes namespace kinds ({', '.join(UNSHARED)}), not {value!r}")
        kinds.update(value.split(","))
    unknown = sorted(kinds - set(UNSHARED))
    if unknown:
        raise ValueError(f"{name}: unknown namespace kind {', '.join(map(repr, unknown))}: use "
                         f"{', '.join(UNSHARED)} (mount and PID are always new; --net and --userns make the others)")
    return tuple(kind for kind in UNSHARED if kind in kinds)


def _hook(value: object, name: str) -> str:
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise ValueError(f"{name}: an on-exit hook must be a non-empty shell command, not {value!r}")
    return _text(value)


def _hooks(values: object, name: str) -> tuple[str, ...]:
    return () if values is None else _listed(_hook)(values, name)


def _root(value: object, name: str) -> str | None:
    """--root DIR: an absolute path other than / (None: the host's root stays the job's)."""
    if value is None:
        return None
    path = absolute_path(value, name)
    if path == "/":
        raise ValueError(f"{name} /: that is the root already; leave {name} out")
    return path


def _maybe_path(value: object, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or "\0" in value:
        raise ValueError(f"{name} needs a path, not {value!r}")
    return _text(value)


def _setenv(value: object, name: str) -> tuple[str, str]:
    if not isinstance(value, str):
        raise TypeError(f"{name} takes NAME=VALUE, not {value!r}")
    key, sep, text = value.partition("=")
    if not sep or not key or "\0" in value:
        raise ValueError(f"{name}: {value!r} is not NAME=VALUE")
    return key, text


def _unsetenv(value: object, name: str) -> str:
    if not isinstance(value, str) or not value or "=" in value or "\0" in value:
        raise ValueError(f"{name}: {value!r} is not a variable name")
    return value


def _sandbox_name(value: object, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, not {value!r}")
    problem = name_problem(value)
    if problem:
        raise ValueError(f"{name} {value!r}: {problem}")
    return _text(value)


def _running_sandbox(value: object, name: str) -> str | None:
    """NAME, or OWNER/NAME (a user name or uid: root's way to pick one of several users' sandboxes)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, not {value!r}")
    owner, slash, short = value.rpartition("/")
    if slash and (not owner or "/" in owner or "\0" in owner):
        raise ValueError(f"{name} {value!r}: use NAME or OWNER/NAME")
    _sandbox_name(short, name)
    return _text(value)


def _later(module: str, function: str) -> Callable[[object, str], Any]:
    """A check that lives in a module imported only when a value is given: None and () (the defaults) cost
    nothing, so a run that does not use the option does not load its code or data."""
    def check(value: object, name: str) -> Any:
        if value is None or value == ():
            return value
        return getattr(__import__(f"{__package__}.{module}", fromlist=[function]), function)(value, name)
    return check


def _errno(value: object, name: str) -> int:
    if value == "EPERM":
        return 1  # the default, known without the module
    return _later("syscalls", "errno_value")(value, name)


def _comma_list(word: str) -> list[str]:
    """G[,G...] as a list (an empty word: none)."""
    return word.split(",") if word else []


MAX_FD = 2**31 - 1


def _maybe_fd(value: object, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_FD:
        raise ValueError(f"{name} must be a file descriptor number (0 to {MAX_FD}), not {value!r}")
    return value


def pass_fds(values: object, name: str) -> tuple[int, ...]:
    """Descriptors the job gets under the same numbers, as subprocess's pass_fds: each once, in order. 0, 1
    and 2 are the job's anyway (its stdin, stdout, stderr decide them): taken, and left out, as subprocess
    does. Whether each is open, the front end checks (the command: a usage error; the API: OSError EBADF)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise TypeError(f"{name} takes a list of file descriptor numbers, not {values!r}")
    numbers = set()
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} takes file descriptor numbers, not {value!r}")
        if not 0 <= value <= MAX_FD:
            raise ValueError(f"{name}: {value} is not a file descriptor number (0 to {MAX_FD})")
        numbers.add(value)
    return tuple(sorted(number for number in numbers if number > 2))


# -- the table ---------------------------------------------------------------------------------------

class Option(Record):
    name: str
    default: Any
    check: Callable[[Any, str], Any]
    help: str
    metavar: str | None = None
    scope: str = "sandbox"  # "sandbox": in SandboxSpec, for the reaper; "hooks"/"cli"/"api": the launcher's
    many: bool = False  # repeatable on the command line; a list in the API
    parse: Callable[[str], Any] | None = None  # a command-line word into what check takes (float, int)
    switch: bool = False  # a command-line flag without a value (--name / --no-name where the default is True)
    aliases: tuple[str, ...] = ()  # more command-line spellings
    short: str | None = None
    topic: str = "stopping"  # where --help lists it
    completes: str = ""  # what the shell completes its value with: "file", "dir", "sandbox" (a running one's name)
    cli_name: str | None = None  # the command line's name where it is not the keyword's (--groups: extra_groups=)

    @property
    def flag(self) -> str:
        return "--" + (self.cli_name or self.name.replace("_", "-"))

    @property
    def in_api(self) -> bool:
        return self.scope in ("sandbox", "hooks", "api")

    @property
    def in_cli(self) -> bool:
        return self.scope != "api"

    def spelled(self, spelling: str) -> str:
        """The option as a caller of that front end writes it, for error messages."""
        return self.flag if spelling == CLI else self.name


OPTIONS: tuple[Option, ...] = (
    # stopping
    Option("grace", 10.0, duration, "How long the job's processes get to clean up after the stop signal, before "
           "SIGKILL (30, 1.5, 500ms, 1m30s; inf: never SIGKILL).", "DURATION"),
    Option("stop_signal", "TERM", _stop_signal, "Signal that asks the job to stop (name or number; KILL leaves no "
           "trap a chance, and a warning says so).", "SIG"),
    Option("timeout", None, _command_timeout, "Stop the job after this long, then exit 124 (seconds or a span "
           "such as 10m, 1h30m; 0 or inf: no timeout). In the API: run()'s timeout.", "DURATION", scope="cli"),
    # mounts
    Option("tmpfs", (), _listed(tmpfs_value), "Mount a private tmpfs on DIR (repeatable); OPTS: size=64M,mode=0700.",
           "DIR[:OPTS]", many=True, topic="mounts", completes="dir"),
    Option("bind", (), _listed(bind_value), "Bind-mount SRC on DST (repeatable).", "SRC[:DST]", many=True,
           topic="mounts", completes="file"),
    Option("ro_bind", (), _listed(bind_value), "Bind-mount SRC on DST read-only, submounts included (repeatable).",
           "SRC[:DST]", many=True, topic="mounts", completes="file"),
    Option("overlay", (), _listed(overlay_value), "Show LOWER on DIR, writable (overlayfs; repeatable): changes go "
           "to a private tmpfs and vanish, or to UPPER and stay.", "LOWER:DIR[:UPPER]", many=True, topic="mounts",
           completes="dir"),
    Option("dev", (), _paths, "Mount a minimal /dev on DIR: null, zero, full, random, urandom, tty, pts, shm "
           "(repeatable).", "DIR", many=True, topic="mounts", completes="dir"),
    Option("dir", (), _paths, "Create directory DIR (repeatable).", "DIR", many=True, topic="mounts", completes="dir"),
    Option("symlink", (), _listed(symlink_value), "Create a symbolic link PATH to TARGET (repeatable).",
           "TARGET:PATH", many=True, topic="mounts", completes="file"),
    Option("read_only", (), _paths, "Remount PATH read-only inside, submounts included (repeatable); tmpfs, bind "
           "and ro-bind open holes in it.", "PATH", many=True, topic="mounts", completes="file"),
    Option("mkdir", False, _flag, "Create missing mount points, --dir and --symlink paths on the host's file "
           "systems too (they stay); without it only below a --tmpfs, --overlay or --dev.", switch=True,
           topic="mounts"),
    Option("propagation", "slave", _choice(*PROPAGATIONS), "How / is remounted inside: slave still sees the host's "
           "new mounts; private does not. Mounts made inside never reach the host.", "slave|private",
           topic="mounts"),
    Option("proc", True, _flag, "Mount a fresh /proc for the new PID namespace (--no-proc: the host's /proc "
           "stays).", switch=True, topic="mounts"),
    Option("root", None, _root, "Make DIR the job's / (pivot_root; nothing of the host's stays mounted), with a "
           "fresh /proc and a minimal /dev in it. The other mount options' targets are paths in it, their sources "
           "the host's; --read-only / makes it read-only, --overlay DIR:/ throwaway. The job starts in its / "
           "unless --cwd says otherwise.", "DIR", topic="mounts", completes="dir"),
    # isolation
    Option("net", "host", _net, "Network: the host's; none (a new namespace with only lo, up); veth (a new "
           "namespace joined to the host by a veth pair, addresses from 10.213.0.0/16 unless --ip; root only); "
           "bridge:NAME (the pair's host end on the existing bridge NAME; needs --ip); or join the named namespace "
           "made by 'ip netns add NAME'.", "host|none|veth|bridge:NAME|netns:NAME", topic="isolation"),
    Option("ip", None, _later("addresses", "network"), "The job's IPv4 address and prefix with --net veth or "
           "bridge:NAME (default with veth: a /30 of 10.213.0.0/16 free on this host).", "ADDR/PREFIX",
           topic="isolation"),
    Option("host_ip", None, _later("addresses", "host"), "With --net veth and --ip: the host end's address, in "
           "--ip's subnet; the job's default route goes via it (default: the subnet's first other address).",
           "ADDR", topic="isolation"),
    Option("gateway", None, _later("addresses", "host"), "With --net bridge:NAME: the job's default route goes via "
           "ADDR, in --ip's subnet (default: no default route).", "ADDR", topic="isolation"),
    Option("userns", None, _maybe_flag, "Run in a new user namespace where the caller is mapped to "
           "--userns-uid/--userns-gid (default 0, root inside). Automatic when the caller is not root.",
           switch=True, topic="isolation"),
    Option("userns_uid", None, _maybe_id, "The uid the caller is mapped to inside the user namespace (implies "
           "--userns). Not a switch of user: its processes are still the caller on the host.", "UID",
           parse=int, topic="isolation"),
    Option("userns_gid", None, _maybe_id, "The gid the caller is mapped to inside the user namespace (implies "
           "--userns).", "GID", parse=int, topic="isolation"),
    Option("hostname", None, _hostname, "Set the hostname in a new UTS namespace.", "NAME", topic="isolation"),
    Option("unshare", (), _unshare, "Give the job new namespaces of these kinds too (repeatable, comma-separated): "
           "ipc (its own System V IPC and POSIX message queues), uts (its own hostname; --hostname implies it), "
           "cgroup (its cgroup is its /), time (its own clocks, for its processes; offsets 0). Mount and PID "
           "namespaces are always new.", "KIND[,KIND...]", many=True, topic="isolation"),
    # confinement: set in the job's first process, after our own set-up and before exec; never the reaper's
    Option("user", None, _later("identity", "user"), "Run the job as this user (name or uid): real, effective and "
           "saved uid, with its group and groups from the user database unless --group/--groups say otherwise; no "
           "capabilities unless --cap-keep names them. Root only; an ordinary user may name only themselves. In a user "
           "namespace the ids are the namespace's. Like setpriv --reuid --init-groups.", "USER|UID",
           topic="confinement"),
    Option("group", None, _later("identity", "group"), "Run the job with this group (name or gid): real, effective "
           "and saved gid.", "GROUP|GID", topic="confinement"),
    Option("extra_groups", None, _later("identity", "groups"), "The job's supplementary groups, comma-separated "
           "('' for none; default with --user: the user's groups from the group database).", "G[,G...]",
           parse=_comma_list, topic="confinement", cli_name="groups"),
    Option("syscall_filter", (), _later("syscalls", "specs"), "Allow only these system calls, or with a leading ~ deny "
           "them (repeatable; systemd's SystemCallFilter= syntax): names and systemd's groups such as @mount, "
           "@module, @raw-io, @privileged, @system-service (see systemd-analyze syscall-filter). A refused call "
           "fails with --syscall-errno; a call of another architecture kills the process. Installed last before "
           "exec, with no_new_privs unless the job keeps CAP_SYS_ADMIN.", "SPEC", many=True,
           topic="confinement"),
    Option("landlock_read", (), _paths, "With Landlock, let the job read and execute only beneath these paths (and "
           "the --landlock-write ones), as it sees them inside (repeatable). No Landlock in the kernel: exit 125.",
           "PATH", many=True, topic="confinement", completes="file"),
    Option("landlock_write", (), _paths, "With Landlock, let the job write (create, remove, rename, truncate) only "
           "beneath these paths, which it may read too (repeatable). Entered with no_new_privs unless the job keeps "
           "CAP_SYS_ADMIN.", "PATH", many=True, topic="confinement", completes="file"),
    Option("syscall_errno", "EPERM", _errno, "The errno a call refused by --syscall-filter fails with (EPERM, "
           "EACCES, ENOSYS, ...).", "NAME", topic="confinement"),
    # the command
    Option("cwd", None, _maybe_path, "Working directory of the job, inside the sandbox (default: the current "
           "one). In the API: cwd.", "DIR", scope="cli", aliases=("--chdir",), topic="command",
           completes="dir"),
    Option("setenv", (), _listed(_setenv), "Set a variable for the job (repeatable). In the API: env.",
           "NAME=VALUE", scope="cli", many=True, topic="command"),
    Option("unsetenv", (), _listed(_unsetenv), "Remove a variable for the job (repeatable). In the API: env.",
           "NAME", scope="cli", many=True, topic="command"),
    Option("pass_fd", (), pass_fds, "Give the job this open descriptor of ours under the same number "
           "(repeatable); every other one above 2 is closed for it. In the API: pass_fds, as in subprocess.", "N",
           scope="cli", many=True, parse=int, topic="command"),
    Option("clearenv", False, _flag, "Start the job with an empty environment, but for --setenv and our marks "
           "(SANDBOXED_RUN, SANDBOXED_RUN_MNT_NS, SANDBOXED_RUN_BIN) and a PATH of the system's directories and "
           "ours. In the API: env={}.", scope="cli", switch=True, topic="command"),
    # limits and privileges: the job's process attributes, then the sandbox's cgroup
    Option("nice", None, limits.nice, "The job's niceness, -20 (first) to 19 (last), as systemd's Nice= (lower "
           "than the caller's needs root). Like nice(1).", "N", parse=int, topic="limits"),
    Option("ionice", None, limits.ionice, "The job's I/O scheduling class: idle, best-effort[:LEVEL] or "
           "realtime[:LEVEL] (LEVEL 0 highest to 7, default 4; realtime needs root). Like ionice(1).",
           "CLASS[:LEVEL]", topic="limits"),
    Option("rlimit", (), limits.rlimits, "A resource limit of the job's processes, NAME=SOFT[:HARD] (repeatable): "
           "NOFILE, NPROC, CORE, AS, CPU, FSIZE, LOCKS, ... as in setrlimit(2); a size (512M) for byte limits; "
           "unlimited. SOFT alone sets both; SOFT: or :HARD keeps the other. Like prlimit(1).", "NAME=SOFT[:HARD]",
           many=True, topic="limits"),
    Option("umask", None, limits.umask, "The job's umask, in octal (default: the caller's).", "MODE", topic="limits"),
    Option("no_new_privs", False, _flag, "Set no_new_privs for the job: no setuid bit or file capability grants "
           "anything on exec. Like setpriv --no-new-privs.", switch=True, topic="limits"),
    Option("cap_drop", (), limits.cap_drop, "Drop a capability (CAP_SYS_ADMIN, or ALL) from the job's processes: "
           "bounding, inheritable, ambient, permitted and effective sets (repeatable). Like setpriv's --bounding-set "
           "and --inh-caps.", "CAP", many=True, topic="limits"),
    Option("cap_keep", (), limits.cap_keep, "Keep only these capabilities (repeatable) and drop every other one, "
           "as --cap-drop does (not with --cap-drop). Like setpriv --bounding-set -all,+CAP.", "CAP", many=True,
           topic="limits"),
    Option("memory_max", None, limits.size, "Memory limit of the whole sandbox (cgroup v2 memory.max; SIZE: 512M, "
           "2G): past it the kernel kills a process of the job, reported as out of memory.", "SIZE", topic="limits"),
    Option("memory_high", None, limits.size, "Memory the sandbox may use before the kernel throttles and reclaims "
           "(memory.high).", "SIZE", topic="limits"),
    Option("cpu_weight", None, limits.weight, "CPU share against other cgroups, 1 to 10000, default 100 "
           "(cpu.weight).", "N", parse=int, topic="limits"),
    Option("cpu_max", None, limits.percent, "CPU time the sandbox may use, in percent of one CPU (50%, or 200% for "
           "two CPUs: cpu.max).", "PERCENT", topic="limits"),
    Option("io_weight", None, limits.weight, "I/O share against other cgroups, 1 to 10000, default 100 "
           "(io.weight).", "N", parse=int, topic="limits"),
    Option("pids_max", None, limits.count, "The most tasks (processes and threads, the reaper included) the "
           "sandbox may have at once (pids.max).", "N", parse=int, topic="limits"),
    # afterwards
    Option("on_exit", (), _hooks, "Run COMMAND with /bin/sh -c outside the sandbox once its last process is gone, "
           "however it ended (repeatable, in order). It gets SANDBOXED_RUN_EXIT_CODE, _SIGNAL, _STATUS and "
           "_STOP_REASON; a failing hook is reported but does not change the exit status.", "COMMAND",
           scope="hooks", many=True, topic="hooks"),
    Option("json_status", None, _maybe_path, "Write lifecycle events to FILE as JSON lines, 'finished' last (never "
           "through a symbolic link). In the API: on_event.", "FILE", scope="cli", topic="output",
           completes="file"),
    Option("json_status_fd", None, _maybe_fd, "Like --json-status, to the already open file descriptor N.", "N",
           scope="cli", parse=int, topic="output"),
    Option("verbose", False, _flag, "Print lifecycle events on stderr: started, signal forwarded, stopping and why, "
           "killed, exited, hook, finished.", scope="cli", switch=True, short="-v", topic="output"),
    Option("on_event", None, lambda value, name: _callable(value, name), "Called as on_event(name, fields) for each "
           "lifecycle event, 'finished' last. On the command line: --json-status.", scope="api", topic="output"),
    # running sandboxes (registry.py): the name a sandbox is listed under, and what one does with a listed one
    Option("name", None, _sandbox_name, "List the sandbox under NAME while it runs (unique per user; default: a "
           "generated one), for --list, --enter and --stop.", "NAME", topic="sandboxes"),
    Option("list", False, _flag, "List your running sandboxes (root: everyone's) and exit.", scope="cli",
           switch=True, topic="sandboxes"),
    Option("json", False, _flag, "With --list: as a JSON array.", scope="cli", switch=True, topic="sandboxes"),
    Option("enter", None, _running_sandbox, "Run COMMAND (default: $SHELL) inside the running sandbox NAME, as one "
           "of its processes, confined as its job is (capabilities, no_new_privs, limits, nice, umask).", "NAME",
           scope="cli", topic="sandboxes", completes="sandbox"),
    Option("stop", None, _running_sandbox, "Stop the running sandbox NAME as a timeout would (its stop signal, "
           "--grace if given, SIGKILL); exit once it is gone.", "NAME", scope="cli", topic="sandboxes",
           completes="sandbox"),
)

BY_NAME = {option.name: option for option in OPTIONS}
# Names that once meant what another option means now: refused with a line that says so. --uid and --gid
# looked like a switch of user, which they never were.
RENAMED = {"uid": "userns_uid", "gid": "userns_gid"}


def renamed(old: str, spelling: str) -> str:
    """The one line refusing an old option name: the new one, and why it changed."""
    new = BY_NAME[RENAMED[old]]
    shown = "--" + old if spelling == CLI else old
    what = "uid" if old == "uid" else "gid"
    return (f"{shown} is now {new.spelled(spelling)}: it maps the caller to that {what} inside a user namespace, "
            "and does not switch user (on the host the job's processes are still the caller)")
SANDBOX_FIELDS = tuple(o.name for o in OPTIONS if o.scope == "sandbox")
PROCESS_ATTRIBUTES = ("nice", "ionice", "rlimit", "no_new_privs", "cap_drop", "cap_keep",  # set between fork and exec
                      "user", "group", "extra_groups", "syscall_filter", "landlock_read", "landlock_write")
# What --list shows of a sandbox's confinement.
CONFINING = ("root", "net", "ip", "host_ip", "gateway", "unshare", "user", "group", "extra_groups", "syscall_filter",
             "landlock_read", "landlock_write")
CGROUP_LIMITS = ("memory_max", "memory_high", "cpu_weight", "cpu_max", "io_weight", "pids_max")
API_KEYWORDS = tuple(o.name for o in OPTIONS if o.in_api)


def check_timeout(value: object, name: str = "timeout") -> float | None:
    """A timeout as the API takes it (run, wait, communicate): seconds or a duration string, None or infinity
    for none; 0 is subprocess's "do not wait", and so is a negative number (a deadline computed once it passed),
    as subprocess takes it. A negative duration string is refused: subprocess has none."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        return 0.0
    return _timeout(value, name)


def check_grace(value: object, name: str = "grace") -> float | None:
    """A grace period given to a stop (None: the sandbox's own)."""
    return None if value is None else BY_NAME["grace"].check(value, name)


def _callable(value: object, name: str) -> Callable | None:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable, not {value!r}")
    return value  # type: ignore[return-value]


_DEFAULTS = {option.name: option.check(option.default, option.name) for option in OPTIONS}  # checked once


def check_api_options(given: Mapping[str, object], accepted: Iterable[str] = API_KEYWORDS) -> dict[str, Any]:
    """The API's keyword options checked (TypeError for an unknown one, as Python gives), defaults filled in."""
    accepted = tuple(accepted)
    for key in given:
        if key not in accepted:
            if RENAMED.get(key) in accepted:
                raise TypeError(renamed(key, API))
            raise TypeError(f"unexpected keyword argument {key!r}")
    return {name: BY_NAME[name].check(given[name], name) if name in given else _DEFAULTS[name] for name in accepted}


def _limits_processes(rlimit: tuple[tuple[str, int | None, int | None], ...]) -> bool:
    """Whether the checked rlimits set a finite RLIMIT_NPROC."""
    return any(name == "NPROC" and any(v is not None and v != limits.UNLIMITED for v in (soft, hard))
               for name, soft, hard in rlimit)


def _check_nr_open(soft: int | None, hard: int | None, name: str) -> None:
    """NOFILE above fs.nr_open is refused by the kernel even to root: say so, not "permission denied"."""
    try:
        with open("/proc/sys/fs/nr_open") as f:
            most = int(f.read())
    except (OSError, ValueError):
        return
    values = [value for value in (soft, hard) if value is not None]
    if any(value == limits.UNLIMITED or value > most for value in values):
        shown = "unlimited" if limits.UNLIMITED in values else str(max(values))
        raise SandboxError(f"{name} NOFILE={shown}: the most this machine allows is {most} open files "
                           "(fs.nr_open)")


# -- what the reaper gets ------------------------------------------------------------------------------

class SandboxSpec:
    """The checked "sandbox" options of one sandbox (one attribute per entry of OPTIONS with that scope),
    plus the signals the job inherits ignored. Built once by the front end, sent as to_wire() to the reaper.

    `userns` is resolved here: True whenever a user namespace will be made (asked for, implied by uid or
    gid, or because the caller is not root and could make no other namespace).
    """

    __slots__ = (*SANDBOX_FIELDS, "ignored_signals")
    # What each field holds once checked: from_wire() refuses anything else (a field of a new option needs one).
    grace: float
    stop_signal: int
    tmpfs: tuple[tuple[str, str | None, int | None], ...]
    bind: tuple[tuple[str, str], ...]
    ro_bind: tuple[tuple[str, str], ...]
    overlay: tuple[tuple[str, str, str | None], ...]
    dev: tuple[str, ...]
    dir: tuple[str, ...]
    symlink: tuple[tuple[str, str], ...]
    read_only: tuple[str, ...]
    mkdir: bool
    propagation: str
    proc: bool
    root: str | None
    net: str
    ip: str | None
    host_ip: str | None
    gateway: str | None
    userns: bool
    userns_uid: int | None
    userns_gid: int | None
    hostname: str | None
    nice: int | None
    ionice: tuple[int, int] | None
    rlimit: tuple[tuple[str, int | None, int | None], ...]
    umask: int | None
    no_new_privs: bool
    cap_drop: tuple[str, ...]
    cap_keep: tuple[str, ...]
    memory_max: int | None
    memory_high: int | None
    cpu_weight: int | None
    cpu_max: float | None
    io_weight: int | None
    pids_max: int | None
    name: str | None
    user: int | None
    group: int | None
    extra_groups: tuple[int, ...] | None
    syscall_filter: tuple[str, ...]
    landlock_read: tuple[str, ...]
    landlock_write: tuple[str, ...]
    syscall_errno: int
    unshare: tuple[str, ...]
    ignored_signals: tuple[int, ...]
    _converters: tuple | None = None

    def __init__(self, values: Mapping[str, Any]) -> None:
        for name in self.__slots__:
            object.__setattr__(self, name, values[name])

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("a SandboxSpec does not change")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SandboxSpec) and self.to_wire() == other.to_wire()

    def __hash__(self) -> int:
        return hash(self.to_wire())

    def __repr__(self) -> str:
        return "SandboxSpec(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__) + ")"

    @classmethod
    def build(cls, values: Mapping[str, object], spelling: str = API,
              ignored_signals: Iterable[int] = (), each_checked: bool = False) -> SandboxSpec:
        """Check each sandbox option on its own (unless each_checked: check_api_options did) and then together
        (ValueError, TypeError, worded for spelling); check_host() then checks them against the machine.
        values may hold other options: they are not ours."""
        checked: dict[str, Any] = {}
        for name in SANDBOX_FIELDS:
            if name not in values:
                checked[name] = _DEFAULTS[name]
            elif each_checked:
                checked[name] = values[name]
            else:
                checked[name] = BY_NAME[name].check(values[name], BY_NAME[name].spelled(spelling))
        mounts = [*(("tmpfs", p) for p, _, _ in checked["tmpfs"]), *(("bind", t) for _, t in checked["bind"]),
                  *(("ro_bind", t) for _, t in checked["ro_bind"]), *(("overlay", t) for _, t, _ in checked["overlay"]),
                  *(("dev", p) for p in checked["dev"]), *(("symlink", p) for _, p in checked["symlink"])]
        for name, target in [*mounts, *(("dir", p) for p in checked["dir"]),
                             *(("read_only", p) for p in checked["read_only"])]:
            problem = proc_self_problem(target)
            if problem:
                raise ValueError(f"{BY_NAME[name].spelled(spelling)} {target}: {problem}")
        root = checked["root"]
        if root is not None and not checked["proc"]:
            raise ValueError(f"{'--no-proc' if spelling == CLI else 'proc=False'} and "
                             f"{BY_NAME['root'].spelled(spelling)} exclude each other: the new root has no host's "
                             f"/proc to keep; hide its fresh one with {BY_NAME['tmpfs'].spelled(spelling)} /proc")
        for name, target in mounts:
            if target == "/" and root is not None:
                if name in ("tmpfs", "overlay"):
                    continue  # the new root's top mount, which becomes the job's /
                flag = BY_NAME["root"].spelled(spelling)
                raise ValueError(f"{BY_NAME[name].spelled(spelling)} /: with {flag} {root} the job's / is {root}; "
                                 f"give the directory to {flag} itself, or use {BY_NAME['overlay'].spelled(spelling)} "
                                 f"{root}:/ for a throwaway one")
            if target == "/proc" and name in ("dev", "overlay"):
                # Made with the help of our /proc (its /proc/self/fd), which their own tmpfs would hide first.
                raise ValueError(f"{BY_NAME[name].spelled(spelling)} /proc: cannot be made over /proc; "
                                 f"{BY_NAME['tmpfs'].spelled(spelling)} /proc hides it, "
                                 f"{BY_NAME['bind'].spelled(spelling)} shows a directory there")
            if target == "/":
                # It would not replace the root the job sees (its processes keep the old one), and the
                # job would write to the host's real / while looking at an empty tmpfs or a bind.
                raise ValueError(f"{BY_NAME[name].spelled(spelling)} /: cannot mount over /; mount on the "
                                 f"directories the job needs (with {BY_NAME['read_only'].spelled(spelling)} / to "
                                 "keep the rest unchanged)")
        paths = [*mounts, *(("dir", p) for p in checked["dir"]), *(("read_only", p) for p in checked["read_only"])]
        made_at: dict[str, str] = {}
        for target, link in checked["symlink"]:
            if made_at.setdefault(link, target) != target:
                raise ValueError(f"{BY_NAME['symlink'].spelled(spelling)} {target}:{link}: another link "
                                 f"{made_at[link]}:{link} is made at the same path")
            for name, path in paths:
                if path == link and name != "symlink":
                    # The link would fail at set-up with "something else exists there", naming only itself.
                    raise ValueError(f"{BY_NAME[name].spelled(spelling)} {path}: the link "
                                     f"{BY_NAME['symlink'].spelled(spelling)} {target}:{link} is made at the same "
                                     "path; a path is either the link or the other")
                if path.startswith(link.rstrip("/") + "/"):
                    # Made through the link, it would land wherever the link leads (on the host, even): the
                    # order of the steps (parents first) would also make the link's path a directory first.
                    raise ValueError(f"{BY_NAME[name].spelled(spelling)} {path}: lies below the link "
                                     f"{BY_NAME['symlink'].spelled(spelling)} {target}:{link}; give the path the "
                                     "link leads to")
        if checked["net"] == "veth" or checked["net"].startswith("bridge:") or checked["ip"] is not None \
                or checked["host_ip"] is not None or checked["gateway"] is not None:
            from .addresses import settle

            settle(checked, lambda n: BY_NAME[n].spelled(spelling))
        if checked["cap_drop"] and checked["cap_keep"]:
            raise ValueError(f"{BY_NAME['cap_drop'].spelled(spelling)} and {BY_NAME['cap_keep'].spelled(spelling)} "
                             "exclude each other: name what to drop, or what to keep")
        ids_given = checked["userns_uid"] is not None or checked["userns_gid"] is not None
        if checked["userns"] is False and ids_given:
            raise ValueError(f"{BY_NAME['userns_uid'].spelled(spelling)} and {BY_NAME['userns_gid'].spelled(spelling)} "
                             "need a user namespace")
        checked["userns"] = bool(checked["userns"] or ids_given or (checked["userns"] is None and os.geteuid() != 0))
        if checked["user"] is not None or checked["group"] is not None or checked["extra_groups"] is not None:
            from . import identity

            identity.settle(checked, lambda n: BY_NAME["extra_groups" if n == "groups" else n].spelled(spelling))
        if checked["userns"] and _limits_processes(checked["rlimit"]) and os.getuid() == 0:
            # The kernel never counts the processes of the host's root (kuid 0) against RLIMIT_NPROC, whatever
            # their capabilities, and a user namespace of root's maps its one uid to root.
            raise ValueError(f"{BY_NAME['rlimit'].spelled(spelling)} NPROC cannot limit this job: its processes are "
                             "the host's root (its user namespace maps them to uid 0), which the kernel never counts "
                             f"against RLIMIT_NPROC; {BY_NAME['pids_max'].spelled(spelling)} caps the sandbox's tasks")
        checked["ignored_signals"] = tuple(sorted({int(s) for s in ignored_signals}))
        return cls(checked)

    def to_wire(self) -> tuple:
        return tuple(getattr(self, name) for name in self.__slots__)

    @classmethod
    def from_wire(cls, fields: Any) -> SandboxSpec:
        """The spec to_wire() gave, each field checked and converted by its annotation; ValueError for anything
        else."""
        converters = SandboxSpec._converters
        if converters is None:
            converters = SandboxSpec._converters = records.converters(cls.__annotations__, cls.__slots__, __name__)
        if (type(fields) is not tuple and type(fields) is not list) or len(fields) != len(converters):
            raise ValueError("not a sandbox spec")
        spec = object.__new__(cls)
        put = object.__setattr__
        for name, (passes, convert), value in zip(cls.__slots__, converters, fields, strict=True):
            put(spec, name, value if type(value) in passes else convert(value))
        return spec

    def completed(self, **fields: Any) -> SandboxSpec:
        """This spec with these fields changed: what the reaper made of it (the addresses --net veth took)."""
        values = dict(zip(self.__slots__, self.to_wire(), strict=True))
        values.update(fields)
        return type(self)(values)

    @property
    def userns_ids(self) -> tuple[int, int] | None:
        """The uid and gid the caller becomes inside its user namespace; None for no user namespace."""
        if not self.userns:
            return None
        return (self.userns_uid or 0, self.userns_gid or 0)

    @property
    def process_attributes(self) -> bool:
        """Whether the job's processes get attributes of their own (set between fork and exec; umask aside)."""
        return self.nice is not None or self.ionice is not None or bool(self.rlimit or self.no_new_privs
                                                                          or self.cap_drop or self.cap_keep
                                                                          or self.syscall_filter or self.landlock_read
                                                                          or self.landlock_write) \
            or self.switches_user

    @property
    def linked(self) -> bool:
        """Whether the sandbox's network is joined to the host's by a veth pair (--net veth, bridge:NAME)."""
        return self.net == "veth" or self.net.startswith("bridge:")

    @property
    def switches_user(self) -> bool:
        """Whether the job's first process takes other ids (user, group or supplementary groups)."""
        return self.user is not None or self.group is not None or self.extra_groups is not None

    def confinement(self) -> dict[str, Any]:
        """The confining options this sandbox has (not at their defaults), by API keyword, as plain numbers,
        strings and lists of them: what --list and list_running() show. A value of another type (a forged
        answer's) is left out."""
        def plain(value: object) -> bool:
            return type(value) in (int, str) or (
                type(value) in (tuple, list) and all(type(v) in (int, str) for v in value))  # type: ignore[union-attr]

        found = {}
        for name in CONFINING:
            value = getattr(self, name, None)
            if name == "net" and not self.linked:
                continue  # none and netns:NAME confine nothing to show beside the namespaces
            if value is not None and value != _DEFAULTS[name] and plain(value):
                found[name] = list(value) if isinstance(value, (tuple, list)) else value
        return found

    @property
    def cgroup_limits(self) -> dict[str, int | float]:
        """The cgroup limits asked for (name -> value); none: the sandbox gets no cgroup of its own."""
        return {name: getattr(self, name) for name in CGROUP_LIMITS if getattr(self, name) is not None}

    @property
    def mounts(self) -> tuple[Step, ...]:
        """Every mount and path to make, in the order the reaper takes them (mountspec.steps_of): parents
        before children, so that a bind below a tmpfs lands on top of it; at one depth a read-only remount
        first, so that a mount on the same path opens a writable hole in it."""
        return steps_of(self.tmpfs, self.bind, self.ro_bind, self.overlay, self.dev, self.dir, self.symlink,
                        self.read_only, self.root is not None)

    def caveats(self, spelling: str = API) -> list[str]:
        """What these options will not do that one may think they do, one line each; the front end shows them
        before the job starts (the command on stderr, the API as RuntimeWarning) and the job starts all the
        same: a stop signal no trap can catch, a process limit that root's processes are exempt from, a
        capability to keep that the job cannot have."""
        found = []
        if self.stop_signal == signal.SIGKILL:
            found.append(f"{BY_NAME['stop_signal'].spelled(spelling)} KILL: no trap can run; every stop kills the "
                         "job's processes at once, without a grace period")
        if _limits_processes(self.rlimit) and os.getuid() == 0:
            found.append(f"{BY_NAME['rlimit'].spelled(spelling)} NPROC does not limit the job's processes that run "
                         "as root (the kernel never counts root's processes against RLIMIT_NPROC); it limits only "
                         "those that switch to another user")
        if self.cap_keep:
            found += self._caps_not_kept(BY_NAME["cap_keep"].spelled(spelling))
        if self.root is not None and self._job_keeps_hosts_root():
            found.append(f"{BY_NAME['root'].spelled(spelling)}: the job runs as root with the host's capabilities, "
                         "which no root directory holds in (it may read PID 1's descriptors of the host's, trace "
                         f"it, make device nodes, load modules); {BY_NAME['userns'].spelled(spelling)}, "
                         f"{BY_NAME['user'].spelled(spelling)} or {BY_NAME['cap_drop'].spelled(spelling)} ALL "
                         "keep it in")
        return found

    def _job_keeps_hosts_root(self) -> bool:
        """Whether the job is root in the host's user namespace with a capability that reaches past any root:
        CAP_SYS_PTRACE over PID 1 (its descriptors of the host's), CAP_SYS_ADMIN, CAP_MKNOD..."""
        if self.userns or os.geteuid() != 0 or self.user not in (None, 0):
            return False
        if self.cap_keep:
            return bool(ESCAPING_CAPS.intersection(self.cap_keep))
        return "ALL" not in self.cap_drop and not ESCAPING_CAPS.issubset(self.cap_drop)

    def _caps_not_kept(self, flag: str) -> list[str]:
        from . import linux  # here: ctypes stays out of a run that keeps no capability

        last = linux.last_cap()
        if self.userns and self.userns_uid and self.user is None:
            return [f"{flag}: the job runs as uid {self.userns_uid} in its user namespace, where an exec leaves no "
                    "capability (only uid 0 there keeps them): it has none of them"]
        found = []
        for name in self.cap_keep:
            number = limits.CAP_NAMES.index(name.removeprefix("CAP_"))
            if number > last:
                found.append(f"{flag} {name}: this kernel does not have it, so the job cannot either")
            elif not self.userns and not linux.in_bounding_set(number):
                # A new user namespace starts with every capability; without one the job has at most ours.
                found.append(f"{flag} {name}: the caller's bounding set lacks it (a container, systemd's "
                             "CapabilityBoundingSet= or setpriv dropped it), so the job cannot have it")
        return found

    def _check_link(self, spelling: str) -> None:
        """--net veth and bridge:NAME make a link in the host's network namespace: only a process with
        CAP_NET_ADMIN there may (root, outside any user namespace), and a bridge must be one."""
        flag = BY_NAME["net"].spelled(spelling)
        if self.userns:
            userns = BY_NAME["userns"].spelled(spelling)
            raise SandboxError(f"{flag} {self.net}: needs CAP_NET_ADMIN in the host's network namespace, which a "
                               f"user namespace does not give: run as root, without {userns} (or use {flag} none)")
        if self.net.startswith("bridge:"):
            name = self.net[len("bridge:"):]
            if not os.path.exists(f"/sys/class/net/{name}"):
                raise SandboxError(f"{flag} {self.net}: no interface {name!r} on this host (create the bridge "
                                   f"with: ip link add {name} type bridge && ip link set {name} up)")
            if not os.path.isdir(f"/sys/class/net/{name}/bridge"):
                raise SandboxError(f"{flag} {self.net}: {name!r} is not a bridge")

    def check_host(self, spelling: str = API) -> None:
        """Check the spec against this machine (SandboxError, one line each), so a typo fails before anything
        starts: the paths as the host sees them, the named network namespace, user namespaces allowed."""
        if self.net.startswith("netns:"):
            name = self.net[len("netns:"):]
            if not os.path.exists(os.path.join(NETNS_DIR, name)):
                raise SandboxError(f"{BY_NAME['net'].spelled(spelling)} {self.net}: no network namespace {name!r} "
                                   f"(no {NETNS_DIR}/{name}; create it with: ip netns add {name})")
        if self.linked:
            self._check_link(spelling)
        if self.userns:
            reason = userns_unavailable()
            if reason:
                raise SandboxError(f"cannot create a user namespace: {reason}")
            if self.switches_user:
                from . import identity

                refused = identity.refusal(self.user, self.group, self.userns_ids,  # type: ignore[arg-type]
                                           lambda n: BY_NAME["extra_groups" if n == "groups" else n].spelled(spelling))
                if refused:
                    raise SandboxError(refused)
        if self.landlock_read or self.landlock_write:
            from . import linux  # here: ctypes stays out of a run without Landlock

            if linux.landlock_abi() < 1:
                names = " and ".join(BY_NAME[n].spelled(spelling) for n in ("landlock_read", "landlock_write")
                                     if getattr(self, n))
                raise SandboxError(f"{names}: this kernel has no Landlock (Linux 5.13 and later, with landlock among "
                                   "its lsm= modules); the job would run unconfined")
        for resource, soft, hard in self.rlimit:
            if resource == "NOFILE":
                _check_nr_open(soft, hard, BY_NAME["rlimit"].spelled(spelling))
        if self.cgroup_limits:
            from .cgroups import unavailable

            reason = unavailable(self.cgroup_limits)
            if reason:
                names = " and ".join(BY_NAME[name].spelled(spelling) for name in self.cgroup_limits)
                raise SandboxError(f"{names}: {reason}")
        if self.root is not None:
            _check_root(self.root, BY_NAME["root"].spelled(spelling))
        check_mounts(self.mounts, self.mkdir, spelling, self.root)


def _check_root(root: str, name: str) -> None:
    try:
        found = os.stat(root)
    except FileNotFoundError:
        raise SandboxError(f"{name} {root}: does not exist") from None
    except OSError as exc:
        raise SandboxError(f"{name} {root}: {exc.strerror}") from None
    if not stat.S_ISDIR(found.st_mode):
        raise SandboxError(f"{name} {root}: not a directory")
    # As the reaper will find it: a link to / cannot be left by pivot_root, and /proc or /sys are the kernel's
    # (--mkdir there would make a cgroup of the root's /proc, say).
    real = os.path.realpath(root)
    if real == "/":
        raise SandboxError(f"{name} {root}: leads to / itself: leave {name} out")
    for kernel in ("/proc", "/sys"):
        if real == kernel or real.startswith(kernel + "/"):
            raise SandboxError(f"{name} {root}: lies in {kernel}, a kernel file system; give a directory of files")

"""The checks of the limit and privilege options (options.py lists them), and the kernel's names they use.

Two kinds of option: attributes of the job's processes (nice, ionice, rlimit, umask, no_new_privs,
cap_drop), which the reaper sets in each process it starts, between fork and exec; and cgroup v2
limits (memory_max, memory_high, cpu_weight, cpu_max, io_weight, pids_max), which the launcher sets on
the sandbox's own cgroup (cgroups.py). Every check takes (value, the option as the caller spells it)
and returns the plain value that travels to the reaper, or raises ValueError/TypeError naming the option.
"""

from __future__ import annotations

# The capabilities by number (linux/capability.h), without their CAP_ prefix.
CAP_NAMES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
    "CHECKPOINT_RESTORE",
)
ALL_CAPS = "ALL"

# setrlimit(2)'s resources by name and number, as <asm-generic/resource.h> numbers them. Python's resource
# module lacks some (RLIMIT_LOCKS); a few architectures (alpha, mips, sparc) number 5 to 9 otherwise, where
# the module's own constant, taken from the platform's headers, wins (rlimit_number). Those counted in bytes
# take a size with a suffix.
RLIMIT_NUMBERS = {"CPU": 0, "FSIZE": 1, "DATA": 2, "STACK": 3, "CORE": 4, "RSS": 5, "NPROC": 6, "NOFILE": 7,
                  "MEMLOCK": 8, "AS": 9, "LOCKS": 10, "SIGPENDING": 11, "MSGQUEUE": 12, "NICE": 13, "RTPRIO": 14,
                  "RTTIME": 15}
RLIMIT_NAMES = tuple(sorted(RLIMIT_NUMBERS))
BYTE_RLIMITS = ("AS", "CORE", "DATA", "FSIZE", "MEMLOCK", "MSGQUEUE", "RSS", "STACK")
UNLIMITED = -1  # RLIM_INFINITY as the resource module gives it on Linux

# ioprio_set(2)'s classes; best-effort and realtime take a level from 0 (highest) to 7.
IOPRIO_CLASSES = {"realtime": 1, "best-effort": 2, "idle": 3}
IOPRIO_ALIASES = {"rt": "realtime", "be": "best-effort", "1": "realtime", "2": "best-effort", "3": "idle"}
IOPRIO_DEFAULT_LEVEL = 4

MAX_WEIGHT = 10000
# The largest values the kernel (and systemd's 64-bit properties) take: a size or limit in a signed 64-bit
# number (setrlimit's finite limits, memory.max), pids.max up to PID_MAX_LIMIT, and a CPU share up to the
# most CPUs a kernel can be built for. Larger ones would overflow on their way, not mean "no limit".
MAX_SIZE = 2**63 - 1
MAX_PIDS = 4 * 1024 * 1024
MAX_CPUS = 8192
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}


def _integer(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a whole number, not {value!r}")
    return int(value)


def nice(value: object, name: str) -> int | None:
    """The job's niceness, -20 (first) to 19 (last), as systemd's Nice= (not added to the caller's)."""
    if value is None:
        return None
    value = _integer(value, name)
    if not -20 <= value <= 19:
        raise ValueError(f"{name} {value}: a niceness is from -20 to 19")
    return value


def ionice(value: object, name: str) -> tuple[int, int] | None:
    """CLASS[:LEVEL] as (class, level) for ioprio_set: idle, best-effort[:0-7], realtime[:0-7]."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} takes CLASS[:LEVEL] (idle, best-effort:N, realtime:N), not {value!r}")
    text, sep, level_text = value.strip().lower().partition(":")
    cls = IOPRIO_ALIASES.get(text, text)
    if cls not in IOPRIO_CLASSES:
        raise ValueError(f"{name} {value!r}: the class is idle, best-effort or realtime")
    if cls == "idle":
        if sep:
            raise ValueError(f"{name} {value!r}: the idle class has no level")
        return IOPRIO_CLASSES[cls], 0
    if not sep:
        return IOPRIO_CLASSES[cls], IOPRIO_DEFAULT_LEVEL
    if level_text not in tuple("01234567"):
        raise ValueError(f"{name} {value!r}: the level is 0 (highest) to 7 (lowest)")
    return IOPRIO_CLASSES[cls], int(level_text)


def umask(value: object, name: str) -> int | None:
    """An octal mode (the API also takes an int such as 0o077, and -1, subprocess's default: the caller's)."""
    if value is None or (value == -1 and type(value) is int):
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        text = text[2:] if text.startswith("0o") else text
        if not text or any(c not in "01234567" for c in text):
            raise ValueError(f"{name} {value!r}: a umask is an octal number such as 077")
        value = int(text, 8)
    value = _integer(value, name)
    if not 0 <= value <= 0o777:
        raise ValueError(f"{name} {oct(value)}: a umask is from 000 to 777 (octal)")
    return value


def _bytes(value: object, name: str) -> int:
    if isinstance(value, str):
        import re  # here: the command's start-up does without it

        match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:I?B)?", value.strip(), re.IGNORECASE)
        if not match:
            raise ValueError(f"{name} {value!r}: a size is a number of bytes with an optional K, M, G or T")
        value = int(float(match.group(1)) * _UNITS[match.group(2).upper()])
    value = _integer(value, name)
    if value < 0:
        raise ValueError(f"{name} {value}: a size cannot be negative")
    if value > MAX_SIZE:
        raise ValueError(f"{name} {value}: too large (the most is {MAX_SIZE} bytes, 8E)")
    return value


def size(value: object, name: str) -> int | None:
    """Bytes: a number, or a string with a suffix K, M, G, T (powers of 1024): 512M, 1.5G."""
    if value is None:
        return None
    value = _bytes(value, name)
    if value == 0:
        raise ValueError(f"{name} 0: a size must be more than 0")
    return value


def percent(value: object, name: str) -> float | None:
    """A share of one CPU in percent ("20%", 20, or 150 for one and a half CPUs), at least 1."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().removesuffix("%").strip()
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{name} {value!r}: give a percentage of one CPU, such as 50%") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a percentage of one CPU, not {value!r}")
    value = float(value)
    if not value >= 1 or value == float("inf"):
        raise ValueError(f"{name} {value:g}%: the least is 1% of one CPU")
    if value > MAX_CPUS * 100:
        raise ValueError(f"{name} {value:g}%: the most is {MAX_CPUS * 100}% ({MAX_CPUS} CPUs)")
    return value


def weight(value: object, name: str) -> int | None:
    """A cgroup weight, 1 to 10000 (100 is everyone's default)."""
    if value is None:
        return None
    value = _integer(value, name)
    if not 1 <= value <= MAX_WEIGHT:
        raise ValueError(f"{name} {value}: a weight is from 1 to {MAX_WEIGHT} (the default is 100)")
    return value


def count(value: object, name: str) -> int | None:
    if value is None:
        return None
    value = _integer(value, name)
    if value < 1:
        raise ValueError(f"{name} {value}: must be at least 1")
    if value > MAX_PIDS:
        raise ValueError(f"{name} {value}: the most is {MAX_PIDS} (as many PIDs as a kernel can have)")
    return value


def _rlimit_value(text: object, resource: str, name: str) -> int | None:
    """One side of a limit: a number (a size for the byte limits), unlimited, or empty (None: keep it)."""
    if text is None or text == "":
        return None
    if isinstance(text, str) and text.strip().lower() in ("unlimited", "infinity"):
        return UNLIMITED
    label = f"{name} {resource}"
    if resource in BYTE_RLIMITS:
        return _bytes(text, label)
    if isinstance(text, str):
        if not text.strip().isascii() or not text.strip().isdigit():
            raise ValueError(f"{label}={text}: a limit is a whole number or unlimited")
        value = int(text)
    else:
        value = _integer(text, label)
    if value < 0:
        raise ValueError(f"{label}={value}: a limit cannot be negative (use unlimited)")
    if value > MAX_SIZE:
        raise ValueError(f"{label}={value}: too large (the most is {MAX_SIZE}, or unlimited)")
    return value


def _rlimit_pair(resource: str, value: object, name: str) -> tuple[str, int | None, int | None]:
    if isinstance(value, str):
        soft_text, sep, hard_text = value.partition(":")
        soft = _rlimit_value(soft_text, resource, name)
        hard = _rlimit_value(hard_text, resource, name) if sep else soft
    elif isinstance(value, tuple) and len(value) == 2:
        soft, hard = (_rlimit_value(v, resource, name) for v in value)
    else:
        soft = hard = _rlimit_value(value, resource, name)
    if soft is None and hard is None:
        raise ValueError(f"{name} {resource}: give SOFT, SOFT:HARD, SOFT: or :HARD")
    if soft is not None and hard is not None and hard != UNLIMITED and (soft == UNLIMITED or soft > hard):
        raise ValueError(f"{name} {resource}: the soft limit is above the hard limit")
    return resource, soft, hard


def _rlimit_name(text: object, name: str) -> str:
    if not isinstance(text, str):
        raise TypeError(f"{name}: a resource is named by a string (NOFILE, NPROC, CORE, ...), not {text!r}")
    resource = text.strip().upper().removeprefix("RLIMIT_")
    if resource not in RLIMIT_NAMES:
        raise ValueError(f"{name}: unknown resource {text!r}; one of {', '.join(RLIMIT_NAMES)}")
    return resource


def rlimits(values: object, name: str) -> tuple[tuple[str, int | None, int | None], ...]:
    """NAME=SOFT[:HARD] strings (or, in the API, a mapping of NAME to a limit, or (NAME, limit) pairs, a limit
    being a number, "SOFT:HARD" or (soft, hard)) as (NAME, soft, hard), sorted, the last word for a resource
    winning. SOFT alone sets both, as prlimit(1) does; "SOFT:" and ":HARD" leave the other as it is;
    unlimited is RLIM_INFINITY (-1)."""
    if values is None:
        return ()
    chosen: dict[str, tuple[str, int | None, int | None]] = {}
    if isinstance(values, dict):
        items = list(values.items())
    elif isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{name} takes a list of NAME=SOFT[:HARD] or (NAME, limit) pairs, or a mapping, "
                        f"not {values!r}")
    else:
        items = []
        for item in values:
            if isinstance(item, tuple) and len(item) == 2:
                items.append(item)
            elif isinstance(item, str) and "=" in item:
                key, _, value = item.partition("=")
                items.append((key, value.strip()))
            else:
                raise ValueError(f"{name}: {item!r} is not NAME=SOFT[:HARD] nor a (NAME, limit) pair")
    for key, value in items:
        resource = _rlimit_name(key, name)
        chosen[resource] = _rlimit_pair(resource, value, name)
    return tuple(chosen[key] for key in sorted(chosen))


def rlimit_number(resource: str) -> int:
    """setrlimit(2)'s number of a checked resource name: the platform's own where Python knows it, else the
    kernel's generic one (setrlimit and prlimit take any number the kernel has)."""
    import resource as module  # here: only a job with limits needs it

    return getattr(module, "RLIMIT_" + resource, RLIMIT_NUMBERS[resource])


def cap_drop(values: object, name: str) -> tuple[str, ...]:
    """Capability names (CAP_SYS_ADMIN, sys_admin) or ALL, as canonical names in the kernel's order, or ("ALL",)."""
    if values is None:
        return ()
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ValueError(f"{name} takes a list of capabilities (or ALL), not a single value: {values!r}")
    numbers = set()
    every = False
    for value in values:
        if not isinstance(value, str):
            raise TypeError(f"{name}: a capability is named by a string, not {value!r}")
        text = value.strip().upper()
        if text == ALL_CAPS:
            every = True  # the rest are checked all the same: a misspelt name is a mistake beside ALL too
            continue
        text = text.removeprefix("CAP_")
        if text not in CAP_NAMES:
            raise ValueError(f"{name}: unknown capability {value!r} (see capabilities(7); or ALL)")
        numbers.add(CAP_NAMES.index(text))
    if every:
        return (ALL_CAPS,)
    return tuple("CAP_" + CAP_NAMES[n] for n in sorted(numbers))


def cap_keep(values: object, name: str) -> tuple[str, ...]:
    """Capability names to keep (every other one is dropped), as canonical names in the kernel's order."""
    names = cap_drop(values, name)
    if names == (ALL_CAPS,):
        raise ValueError(f"{name} ALL keeps every capability: leave the option out")
    return names


def cap_numbers(names: tuple[str, ...], last_cap: int, keep: bool = False) -> list[int]:
    """The numbers of checked capability names (ALL: every one this kernel has, up to last_cap); with keep,
    those of every other capability."""
    if names == (ALL_CAPS,):
        return list(range(last_cap + 1))
    numbers = [CAP_NAMES.index(c.removeprefix("CAP_")) for c in names]
    if keep:
        return [n for n in range(last_cap + 1) if n not in numbers]
    return [n for n in numbers if n <= last_cap]


def shown_size(value: int) -> str:
    """Bytes as a person reads them (and the options take them): 512M, 1.5G, 900."""
    for unit in ("P", "T", "G", "M", "K"):
        if value >= _UNITS[unit]:
            return f"{value / _UNITS[unit]:.1f}".removesuffix(".0") + unit
    return str(value)

"""The thin Linux layer: the few syscalls Python 3.11 lacks, called through ctypes.

Every function raises OSError with the kernel's errno; translating it into advice is
errors.py's job, because only the caller knows what it was trying to do.
"""

from __future__ import annotations

import _socket
import ctypes
import math
import os
import select
import struct
import time

CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19

MNT_DETACH = 2

MOUNT_ATTR_RDONLY = 0x1
AT_RECURSIVE = 0x8000
_SYS_MOUNT_SETATTR = 442  # one number on every architecture since the syscall table was unified
_SYS_OPEN_TREE = 428
OPEN_TREE_CLONE = 1

SFD_NONBLOCK = os.O_NONBLOCK
SFD_CLOEXEC = os.O_CLOEXEC


_libc = ctypes.CDLL(None, use_errno=True)
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.signalfd.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
_libc.syscall.restype = ctypes.c_long
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong]


# The longest single wait: poll() takes milliseconds in an int and select() rejects huge timeouts,
# so a long wait (a grace of 1e10 seconds) is a loop of these.
MAX_WAIT = 86400.0


def wait_seconds(deadline: float | None) -> float | None:
    """How long one wait step may block until deadline (time.monotonic(); None or inf: no deadline)."""
    if deadline is None or math.isinf(deadline):
        return None
    return min(MAX_WAIT, max(0.0, deadline - time.monotonic()))


def deadline_after(seconds: float | None) -> float | None:
    """The monotonic time `seconds` from now; None for no limit (None or infinity)."""
    if seconds is None or math.isinf(seconds):
        return None
    return time.monotonic() + seconds


NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3)
NAMESPACE_KINDS = {CLONE_NEWUSER: "user", CLONE_NEWPID: "pid", CLONE_NEWNS: "mnt", CLONE_NEWNET: "net",
                   CLONE_NEWUTS: "uts", CLONE_NEWIPC: "ipc", CLONE_NEWCGROUP: "cgroup", CLONE_NEWTIME: "time"}


NS_GET_PARENT = 0xB702  # _IO(0xb7, 0x2)


def parent_namespace(fd: int) -> int:
    """A descriptor (close-on-exec) of the parent of the PID (or user) namespace fd; EPERM at the top of what
    we may see (our own namespace's ancestors), EINVAL for a namespace kind without parents."""
    import fcntl

    return fcntl.ioctl(fd, NS_GET_PARENT)


def namespace_kind(fd: int) -> str | None:
    """The kind ("mnt", "user", ...) of the namespace a descriptor refers to, as the kernel says; None if it
    refers to none."""
    import fcntl

    try:
        return NAMESPACE_KINDS.get(fcntl.ioctl(fd, NS_GET_NSTYPE))
    except OSError:
        return None


def time_left(deadline: float | None) -> float | None:
    """Seconds until deadline (time.monotonic()), never below 0; None for no deadline."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _check(result: int, what: str, path: str | bytes | None = None) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path)
    return result


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def mount(source: bytes | None, target: bytes, fstype: bytes | None, flags: int, data: bytes | None = None) -> None:
    _check(_libc.mount(source, target, fstype, flags, data), "mount", target)


def umount(target: bytes, flags: int = 0) -> None:
    _check(_libc.umount2(target, flags), "umount", target)


def mount_setattr_readonly(path: bytes, recursive: bool = True) -> None:
    """Make a mount (and, recursively, those below it) read-only in one step, as MS_REMOUNT cannot."""
    attr = struct.pack("QQQQ", MOUNT_ATTR_RDONLY, 0, 0, 0)
    flags = AT_RECURSIVE if recursive else 0
    result = _libc.syscall(_SYS_MOUNT_SETATTR, -100, ctypes.c_char_p(path), flags, attr, len(attr))
    _check(result, "mount_setattr", path)


def mount_setattr_writable(path: bytes) -> None:
    """Clear the read-only flag of the one mount at path (a bind that copied it from a read-only parent)."""
    attr = struct.pack("QQQQ", 0, MOUNT_ATTR_RDONLY, 0, 0)
    result = _libc.syscall(_SYS_MOUNT_SETATTR, -100, ctypes.c_char_p(path), 0, attr, len(attr))
    _check(result, "mount_setattr", path)


# pivot_root has no glibc wrapper, and its number differs between architectures.
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "i686": 217, "armv7l": 218, "ppc64le": 203,
                   "s390x": 217}


def pivot_root(new_root: bytes, put_old: bytes) -> None:
    """Make new_root (a mount) the root of our mount namespace, the old one mounted at put_old (pivot_root(2))."""
    number = _SYS_PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise OSError(38, f"pivot_root: {os.strerror(38)} on {os.uname().machine}", new_root)  # ENOSYS
    _check(_libc.syscall(number, ctypes.c_char_p(new_root), ctypes.c_char_p(put_old)), "pivot_root", new_root)


def cloned_mount(path: bytes, recursive: bool = False) -> int:
    """A copy of the mount at path (recursive: and of those below it) that is attached nowhere, as a descriptor
    (O_PATH, close-on-exec) of its root: open_tree(OPEN_TREE_CLONE). No mount can be made on it or in it, and
    it keeps nobody's mount busy: whatever is mounted or unmounted at path later, below it is what was there
    now. In a user namespace a mount with mounts locked below it is copied only recursively (EINVAL)."""
    flags = OPEN_TREE_CLONE | os.O_CLOEXEC | (AT_RECURSIVE if recursive else 0)
    return _check(_libc.syscall(_SYS_OPEN_TREE, -100, ctypes.c_char_p(path), ctypes.c_uint(flags)), "open_tree", path)


def _sigset(signals: list[int] | tuple[int, ...] | frozenset[int] | set[int]) -> ctypes.Array:
    """A sigset_t (glibc's 128 bytes: 64-bit words, signal n at bit n - 1) with these signals, any of them."""
    mask = 0
    for sig in signals:
        mask |= 1 << (sig - 1)
    return ctypes.create_string_buffer(struct.pack("16Q", *((mask >> (64 * word)) & 0xFFFFFFFFFFFFFFFF
                                                             for word in range(16))), 128)


class SignalFd:
    """Signals as readable records, so a poll loop sees them with who sent them (si_code, si_pid).

    The caller blocks the signals first (signal.pthread_sigmask); they then queue here instead of
    running handlers, which is what lets us tell a terminal's Ctrl+C from a kill(1).
    """

    RECORD = struct.Struct("IiiIIiIIIIii")  # the leading fields of struct signalfd_siginfo
    SIZE = 128

    def __init__(self, signals: list[int] | tuple[int, ...]) -> None:
        self.fd = _check(_libc.signalfd(-1, _sigset(signals), SFD_NONBLOCK | SFD_CLOEXEC), "signalfd")

    def fileno(self) -> int:
        return self.fd

    def read(self) -> list[tuple[int, int, int]]:
        """Every pending signal as (signo, si_code, si_pid); empty when none is pending."""
        out = []
        while True:
            try:
                data = os.read(self.fd, self.SIZE * 16)
            except BlockingIOError:
                return out
            for offset in range(0, len(data), self.SIZE):
                signo, _errno, code, pid = self.RECORD.unpack_from(data, offset)[:4]
                out.append((signo, code, pid))

    def close(self) -> None:
        os.close(self.fd)


# posix_spawnattr_t and posix_spawn_file_actions_t are opaque: room for either on any architecture (glibc's are
# 336 and 80 bytes on x86_64).
_SPAWN_OBJECT = 1024
_POSIX_SPAWN_SETSIGDEF = 0x04
_POSIX_SPAWN_SETSIGMASK = 0x08
_POSIX_SPAWN_SETPGROUP = 0x02
_POSIX_SPAWN_SETSID = 0x80
_libc.posix_spawn.argtypes = [ctypes.POINTER(ctypes.c_int), ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p,
                              ctypes.c_void_p, ctypes.c_void_p]
_libc.posix_spawn_file_actions_adddup2.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
_libc.posix_spawn_file_actions_addclose.argtypes = [ctypes.c_void_p, ctypes.c_int]
_libc.posix_spawnattr_setflags.argtypes = [ctypes.c_void_p, ctypes.c_short]
_libc.posix_spawnattr_setpgroup.argtypes = [ctypes.c_void_p, ctypes.c_int]


def posix_spawn(path: bytes, argv: list[bytes], env: dict[bytes, bytes], file_actions: list[tuple],
                setsigdef: frozenset[int] | set[int], setsid: bool = False, pgroup: int = -1) -> int:
    """os.posix_spawn(path, argv, env, file_actions=..., setsigmask=(), setsigdef=..., setsid=...,
    setpgroup=...: None if pgroup is -1), but setsigdef may name
    the signals glibc keeps for itself (32 and 33): glibc's posix_spawn leaves those ignored in the child unless
    they are named there, and Python's conversion of setsigdef (sigaddset) refuses them. Returns the child's PID;
    OSError with posix_spawn's errno (ENOENT, EACCES, ... of the exec). argv and env hold no NUL (command.py)."""
    attr = ctypes.create_string_buffer(_SPAWN_OBJECT)
    actions = ctypes.create_string_buffer(_SPAWN_OBJECT)
    _libc.posix_spawnattr_init(attr)
    _libc.posix_spawn_file_actions_init(actions)
    try:
        for action in file_actions:
            if action[0] == os.POSIX_SPAWN_DUP2:
                err = _libc.posix_spawn_file_actions_adddup2(actions, action[1], action[2])
            else:
                err = _libc.posix_spawn_file_actions_addclose(actions, action[1])
            if err:
                raise OSError(err, os.strerror(err))
        # Copied as they are: glibc's setsigdefault takes the set's bytes, reserved signals included.
        _libc.posix_spawnattr_setsigdefault(attr, _sigset(setsigdef))
        _libc.posix_spawnattr_setsigmask(attr, ctypes.create_string_buffer(128))  # nothing blocked
        flags = _POSIX_SPAWN_SETSIGDEF | _POSIX_SPAWN_SETSIGMASK
        if setsid:
            flags |= _POSIX_SPAWN_SETSID
        elif pgroup >= 0:
            flags |= _POSIX_SPAWN_SETPGROUP
            _libc.posix_spawnattr_setpgroup(attr, pgroup)
        _libc.posix_spawnattr_setflags(attr, flags)
        pid = ctypes.c_int()
        err = _libc.posix_spawn(ctypes.byref(pid), path, actions, attr, _strings(argv),
                                _strings([k + b"=" + v for k, v in env.items()]))
        if err:
            raise OSError(err, os.strerror(err), path)
        return pid.value
    finally:
        _libc.posix_spawn_file_actions_destroy(actions)
        _libc.posix_spawnattr_destroy(attr)


def _strings(items: list[bytes]) -> ctypes.Array:
    """A NULL-terminated char *[] of items (the array holds them while it lives)."""
    array = (ctypes.c_char_p * (len(items) + 1))()
    array[:len(items)] = items
    return array


# rt_sigaction's number differs between architectures.
_SYS_RT_SIGACTION = {"x86_64": 13, "aarch64": 134, "riscv64": 134, "i686": 174, "armv7l": 174, "ppc64le": 173,
                     "s390x": 174}


def default_dispositions(signals: tuple[int, ...]) -> None:
    """Set signals to their default action through the kernel itself: glibc's sigaction refuses the signals it
    keeps for itself (32 and 33), which a process started by posix_spawn, or by one that was, has ignored; an
    exec keeps what is ignored. (On an architecture we do not know the number for, they stay as they are.)"""
    number = _SYS_RT_SIGACTION.get(os.uname().machine)
    if number is None:
        return
    default = ctypes.create_string_buffer(64)  # struct sigaction: SIG_DFL, no flags, nothing masked, in any layout
    for sig in signals:
        _check(_libc.syscall(number, sig, default, None, 8), "rt_sigaction")


def stat_fields(data: bytes) -> list[bytes]:
    """The fields of a /proc/PID/stat after the command name, which may hold spaces and ')': [0] is the state,
    field N of proc(5) is [N - 3]."""
    return data.rsplit(b")", 1)[1].split()


_arguments: tuple[int, int] | None = None  # where our command line lies; a fork's is at the same place


def set_command_line(title: str) -> None:
    """Show title as this process's command line (/proc/PID/cmdline, ps, pkill -f), by writing it over the
    arguments we were started with. A forked helper would otherwise show its launcher's command line,
    and `pkill -f` meant for the launcher would hit it too."""
    global _arguments
    if _arguments is None:
        with open("/proc/self/stat", "rb") as f:
            fields = stat_fields(f.read())
        _arguments = (int(fields[45]), int(fields[46]))  # arg_start and arg_end: fields 48 and 49 of proc(5)
    start, end = _arguments
    size = end - start
    if size > 0:
        ctypes.memmove(start, title.encode()[: size - 1].ljust(size, b"\0"), size)


def close_fds_except(keep: set[int]) -> None:
    """Close every descriptor above 2 except those in keep (one close_range call per gap)."""
    low = 3
    for fd in sorted(f for f in keep if f >= 3):
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 20)


def readable(fd: int) -> bool:
    """Whether fd has something to read now (a pidfd: its process has exited); poll, which takes any
    descriptor number (select stops at 1024)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def fd_is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def fill_closed_stdio() -> list[int]:
    """Put /dev/null (close-on-exec) on whichever of 0, 1, 2 is closed, and say which were: otherwise
    the next descriptor we open takes that number and is mistaken for a standard stream."""
    closed = [fd for fd in (0, 1, 2) if not fd_is_open(fd)]
    for fd in closed:
        placeholder = os.open(os.devnull, os.O_RDWR)
        if placeholder != fd:
            os.dup2(placeholder, fd, inheritable=False)
            os.close(placeholder)
        else:
            os.set_inheritable(fd, False)
    return closed


# ioprio_set's number differs between architectures (the generic table's 30 is arm64's and riscv's).
_SYS_IOPRIO_SET = {"x86_64": 251, "aarch64": 30, "riscv64": 30, "i686": 289, "armv7l": 314, "ppc64le": 273,
                   "s390x": 282}
IOPRIO_WHO_PROCESS = 1
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4


def ioprio_set(ioclass: int, level: int) -> None:
    """This process's I/O scheduling class and level (ioprio_set(2)), inherited by its children."""
    number = _SYS_IOPRIO_SET.get(os.uname().machine)
    if number is None:
        raise OSError(38, f"ioprio_set: not known on {os.uname().machine}")
    _check(_libc.syscall(number, IOPRIO_WHO_PROCESS, 0, (ioclass << 13) | level), "ioprio_set")


def ioprio_get() -> int:
    """This process's I/O priority as ioprio_get(2) gives it (class << 13 | level)."""
    number = _SYS_IOPRIO_SET.get(os.uname().machine)
    if number is None:
        raise OSError(38, f"ioprio_get: not known on {os.uname().machine}")
    result = _libc.syscall(number + 1, IOPRIO_WHO_PROCESS, 0)  # ioprio_get follows ioprio_set in every table
    _check(result, "ioprio_get")
    return int(result)


# kcmp's number differs between architectures too.
_SYS_KCMP = {"x86_64": 312, "aarch64": 272, "riscv64": 272, "i686": 349, "armv7l": 378, "ppc64le": 354, "s390x": 343}
_KCMP_VM = 1


def may_read(pid: int) -> bool | None:
    """Whether the calling thread may read process pid as ptrace would (PTRACE_MODE_READ, through kcmp(2), which
    compares nothing we need: its permission check is the answer). None if the kernel cannot say (no kcmp, pid
    gone). Ids and capabilities aside, what refuses it is a confinement the thread entered that pid is outside
    of: a Landlock domain, an LSM's."""
    number = _SYS_KCMP.get(os.uname().machine)
    if number is None:
        return None
    if _libc.syscall(number, os.getpid(), pid, _KCMP_VM, 0, 0) >= 0:
        return True
    return False if ctypes.get_errno() in (1, 13) else None  # EPERM, EACCES


PR_GET_SECUREBITS = 27
SECBIT_KEEP_CAPS = 1 << 4  # the one securebit an exec clears


def securebits() -> int:
    """The calling thread's securebits as an exec passes them on (SECBIT_NOROOT and the like; not KEEP_CAPS, which
    an exec clears). The kernel shows them nowhere but to the thread itself: no /proc file has them."""
    return _check(_libc.prctl(PR_GET_SECUREBITS, 0, 0, 0, 0), "prctl(PR_GET_SECUREBITS)") & ~SECBIT_KEEP_CAPS


def clear_ambient_caps() -> None:
    """Empty the ambient capability set (a kernel before 4.3 has none: nothing to clear)."""
    if _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 and ctypes.get_errno() != 22:
        _check(-1, "prctl(PR_CAP_AMBIENT)")


PR_CAPBSET_READ = 23


def last_cap() -> int:
    """The highest capability number this kernel knows (what /proc/sys/kernel/cap_last_cap says), asked of
    the kernel itself: the job's mounts may hide /proc, and its limits may leave no descriptor to read it."""
    low, high = 0, 63  # PR_CAPBSET_READ fails with EINVAL past the last one
    while low < high:
        middle = (low + high + 1) // 2
        if _libc.prctl(PR_CAPBSET_READ, middle, 0, 0, 0) < 0:
            high = middle - 1
        else:
            low = middle
    return low


def in_bounding_set(cap: int) -> bool:
    """Whether this process's bounding set holds the capability (False for one past the kernel's last)."""
    return _libc.prctl(PR_CAPBSET_READ, cap, 0, 0, 0) > 0


def raise_ambient_cap(cap: int) -> None:
    """Add a capability (in the permitted and inheritable sets already) to the ambient set, which an exec of a
    file without file capabilities keeps for a uid other than 0."""
    _check(_libc.prctl(PR_CAP_AMBIENT, 2, cap, 0, 0), "prctl(PR_CAP_AMBIENT_RAISE)")  # PR_CAP_AMBIENT_RAISE


def lower_ambient_cap(cap: int) -> None:
    if _libc.prctl(PR_CAP_AMBIENT, 3, cap, 0, 0) < 0 and ctypes.get_errno() != 22:  # PR_CAP_AMBIENT_LOWER
        _check(-1, "prctl(PR_CAP_AMBIENT)")


# Landlock (Linux 5.13 and later): one number on every architecture since the syscall table was unified.
_SYS_LANDLOCK_CREATE_RULESET, _SYS_LANDLOCK_ADD_RULE, _SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_LANDLOCK_RULE_PATH_BENEATH = 1


def landlock_abi() -> int:
    """The Landlock ABI version this kernel offers; 0 if it has none (not built in, or not in lsm=)."""
    version = _libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0),
                            ctypes.c_uint32(_LANDLOCK_CREATE_RULESET_VERSION))
    return max(int(version), 0)


def landlock_ruleset(handled_fs: int) -> int:
    """A new Landlock ruleset (a close-on-exec descriptor) that handles these file system rights."""
    attr = struct.pack("=Q", handled_fs)  # handled_access_fs alone: the kernel takes a shorter struct as zeros
    return _check(_libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, attr, ctypes.c_size_t(len(attr)), ctypes.c_uint32(0)),
                  "landlock_create_ruleset")


def landlock_allow_beneath(ruleset: int, path_fd: int, rights: int) -> None:
    """Allow these rights beneath the file or directory path_fd (an O_PATH descriptor) in the ruleset."""
    attr = struct.pack("=Qi", rights, path_fd)  # struct landlock_path_beneath_attr is packed
    _check(_libc.syscall(_SYS_LANDLOCK_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(_LANDLOCK_RULE_PATH_BENEATH),
                         attr, ctypes.c_uint32(0)), "landlock_add_rule")


def landlock_restrict_self(ruleset: int) -> None:
    """Enter the ruleset's domain, for good (the kernel wants no_new_privs or CAP_SYS_ADMIN first)."""
    _check(_libc.syscall(_SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)),
           "landlock_restrict_self")


_RUSAGE_CHILDREN = -1
_libc.getrusage.argtypes = [ctypes.c_int, ctypes.c_void_p]
# struct rusage: two timevals, then fourteen longs (ru_maxrss first). The type is made once, at import: a
# reaper forked from the spawn server would otherwise make it afresh on its caller's time.
_Rusage = ctypes.c_long * 18


def children_usage() -> tuple[float, float, int]:
    """CPU seconds in user and in system mode of every child this process has waited for (and of theirs,
    as each waited for its own), and the largest resident set among them in bytes: getrusage's
    RUSAGE_CHILDREN, without importing the resource module."""
    usage = _Rusage()
    _check(_libc.getrusage(_RUSAGE_CHILDREN, usage), "getrusage")
    return usage[0] + usage[1] / 1e6, usage[2] + usage[3] / 1e6, usage[4] * 1024


def current_umask() -> int:
    """The umask without the set-and-restore race of os.umask (threads may be spawning meanwhile)."""
    with open("/proc/self/status", "rb") as f:
        for line in f:
            if line.startswith(b"Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Where a unix socket's peer lives, as the kernel says (the reaper's registry socket asks).
SO_PEERPIDFD = 77  # Linux 6.5
PIDFD_GET_PID_NAMESPACE = 0xFF05  # _IO(PIDFS_IOCTL_MAGIC, 5), Linux 6.11
NS_GET_PID_IN_PIDNS = 0x8004B708  # _IOR(NSIO, 0x8, int), Linux 6.10


def peer_pidfd(sock: _socket.socket) -> int:
    """A pidfd of the process that connected the unix socket sock (SO_PEERPIDFD), wherever it lives; for a
    peer that has exited since, a pidfd that says so."""
    return struct.unpack("i", sock.getsockopt(_socket.SOL_SOCKET, SO_PEERPIDFD, 4))[0]


_libc.accept4.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]


def accept4(sock: _socket.socket, flags: int = _socket.SOCK_CLOEXEC | _socket.SOCK_NONBLOCK) -> int:
    """A connection waiting on the listening socket sock, as a descriptor with flags (default: close-on-exec and
    non-blocking) set as accept4(2) takes it: at once, so no fork between accept and fcntl inherits it and no
    read of ours on it blocks. The C module's socket has no public accept (socket.py's wraps its private
    _accept, which sets no O_NONBLOCK). OSError with accept's errno: BlockingIOError when nobody waits."""
    return _check(_libc.accept4(sock.fileno(), None, None, flags), "accept4")


def supports_peer_pidfd(sock: _socket.socket) -> bool:
    """Whether this kernel has SO_PEERPIDFD (Linux 6.5), asked of any unix socket (a listening one has no peer:
    ENODATA says the option exists)."""
    try:
        # A listening socket's peer is the process that called listen() (Linux 6.x): a pidfd of ourselves to close.
        os.close(peer_pidfd(sock))
    except OSError as exc:
        return exc.errno != 92  # ENOPROTOOPT
    return True


# sock_diag (netlink) for unix sockets: how ss(8) learns which socket is connected to which.
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 1
_NLMSG_ERROR = 2
_UDIAG_SHOW_PEER = 0x4
_UNIX_DIAG_PEER = 2
_NOCOOKIE = 0xFFFFFFFF
_NLMSG = struct.Struct("=IHHII")
_UNIX_DIAG_REQ = struct.Struct("=BBHIIIII")
_UNIX_DIAG_MSG = struct.Struct("=BBBBIII")


def unix_diag_socket() -> _socket.socket:
    """A netlink socket that asks the kernel about the unix sockets of the network namespace we are in now
    (unix_peer_inode); the answer covers only sockets made in that namespace."""
    return _socket.socket(_socket.AF_NETLINK, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC, _NETLINK_SOCK_DIAG)


def unix_peer_inode(diag: _socket.socket, sock: _socket.socket) -> int:
    """The inode of the socket at the other end of the connected unix socket sock: what /proc/PID/fd of the
    process holding it shows as socket:[INODE]. OSError if the kernel does not say (ENOENT: not a socket of
    diag's network namespace)."""
    inode = os.fstat(sock.fileno()).st_ino
    request = _UNIX_DIAG_REQ.pack(_socket.AF_UNIX, 0, 0, 0xFFFFFFFF, inode, _UDIAG_SHOW_PEER, _NOCOOKIE, _NOCOOKIE)
    diag.send(_NLMSG.pack(_NLMSG.size + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, 1, 0) + request)
    reply = diag.recv(8192)
    if len(reply) < _NLMSG.size:
        raise OSError(5, "sock_diag: a short answer")
    length, kind, _flags, _seq, _pid = _NLMSG.unpack_from(reply)
    if kind == _NLMSG_ERROR:
        err = -struct.unpack_from("=i", reply, _NLMSG.size)[0]
        raise OSError(err, f"sock_diag: {os.strerror(err)}")
    offset = _NLMSG.size + _UNIX_DIAG_MSG.size
    if _UNIX_DIAG_MSG.unpack_from(reply, _NLMSG.size)[4] != inode:
        raise OSError(5, "sock_diag: an answer about another socket")
    end = min(length, len(reply))
    while offset + 4 <= end:
        size, attribute = struct.unpack_from("=HH", reply, offset)
        if size < 4:
            break
        if attribute == _UNIX_DIAG_PEER and size >= 8:
            return struct.unpack_from("=I", reply, offset + 4)[0]
        offset += (size + 3) & ~3
    raise OSError(107, "sock_diag: the socket has no peer")  # ENOTCONN


def pid_namespace_of(pidfd: int) -> int:
    """A descriptor (close-on-exec) of the PID namespace the pidfd's process lives in. The kernel asks for the
    right to read that process as ptrace would (EACCES: a process in a user namespace asking about one
    outside it); ESRCH if it has exited."""
    return _check(_libc.ioctl(pidfd, PIDFD_GET_PID_NAMESPACE, 0), "ioctl(PIDFD_GET_PID_NAMESPACE)")


def pid_in_namespace(ns_fd: int, pid: int) -> int:
    """The number the process pid (numbered as our PID namespace does) has in the PID namespace ns_fd; 0 if
    it has none there (it lives neither there nor below)."""
    result = _libc.ioctl(ns_fd, NS_GET_PID_IN_PIDNS, pid)
    if result < 0 and ctypes.get_errno() == 3:  # ESRCH
        return 0
    return _check(result, "ioctl(NS_GET_PID_IN_PIDNS)")


def pidfd_target(fd: int) -> int | None:
    """The PID a pidfd refers to, as we see it (the kernel's fdinfo says so; -1: it has exited); None for a
    descriptor that is no pidfd."""
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            for line in f:
                if line.startswith("Pid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None

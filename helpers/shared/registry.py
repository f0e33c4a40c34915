"""Where running sandboxes are listed, and how a sandbox claims its name there.

Every sandbox's reaper holds a listening unix socket (SOCK_SEQPACKET) named after the sandbox, in its
owner's registry directory:

    root            /run/sandboxed-run/NAME
    any other uid   /run/user/UID/sandboxed-run/NAME   when /run/user/UID is that user's (logind's),
                    /tmp/sandboxed-run-UID/NAME        otherwise (a cron job of a user who is not logged in)

Not $XDG_RUNTIME_DIR: cron, su and system services run without it, and a place of the user's choosing
would hide the user's sandboxes from root's list. Each directory is its owner's alone (mode 0700):
only the owner and root can see the names in it or connect to them (the reaper checks its peer too).
Inside a sandbox these paths are empty directories of the sandbox's own (reaper/mounts.py): a job sees
no entry of the host's (and their reapers refuse it: reaper/peers.py), and a sandbox it starts
registers in there.

The registry is never stale, because the socket is the entry: its reaper holds the only descriptor
of it, so once the reaper is gone (even SIGKILLed) a connect() is refused, and whoever finds such a
file removes it. bind() creates the name or fails if it exists, so of two sandboxes that start with
one name at once only one can get it. Between its bind and its listen, though, a new entry refuses
connections as a dead one does; so a claim binds and listens under a shared flock() of the directory,
and whoever removes a dead entry (to take its name, or while listing) holds the exclusive lock and checks
again under it. Claims of different names never wait for each other; a removal, which is rare, waits
for the claims under way (microseconds), and they for it. The kernel releases the lock of a process
that dies holding it.
"""

from __future__ import annotations

import _socket as socket  # the C module: the command-line tool skips socket.py's enums
import errno
import fcntl
import os
import stat
import struct
import time

from .errors import EXIT_FAILURE, SandboxError

TYPE_CHECKING = False  # typing stays out of the spawn server, whose every reaper is a fork of it
if TYPE_CHECKING:
    from collections.abc import Callable

ROOT_DIRECTORY = "/run/sandboxed-run"
RUN_USER = "/run/user"
TMP_PREFIX = "/tmp/sandboxed-run-"

MAX_NAME = 64
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
NAME_RULE = f"1 to {MAX_NAME} letters, digits, '_', '-' and '.', starting with a letter or digit"
LOCK_WAIT = 5.0  # seconds a claim waits for the directory's lock, which nobody holds for longer than a bind
BACKLOG = 16


def name_problem(name: str) -> str | None:
    """Why name cannot be a sandbox's name (None: it can)."""
    if not 0 < len(name) <= MAX_NAME or not set(name) <= _NAME_CHARS or not name[0].isalnum():
        return f"use {NAME_RULE}"
    return None


def generated_name(argv0: bytes | None) -> str:
    """A name for a sandbox that was given none: its program's name and a random suffix (backup.sh-3fa2c1)."""
    base = os.path.basename(argv0 or b"").decode(errors="replace") if argv0 else "job"
    base = "".join(c for c in base if c in _NAME_CHARS).lstrip("_.-")[: MAX_NAME - 7] or "sandbox"
    return f"{base}-{os.urandom(3).hex()}"


# -- the directories ---------------------------------------------------------------------------------

def directory_for(uid: int) -> str:
    """The directory where a new sandbox of uid registers."""
    if uid == 0:
        return ROOT_DIRECTORY
    user_run = f"{RUN_USER}/{uid}"
    if _owned_directory(user_run, uid, private=False):
        return f"{user_run}/sandboxed-run"
    return f"{TMP_PREFIX}{uid}"


def directories_of(uid: int) -> list[str]:
    """Every directory where uid's sandboxes may be (one made while the user was logged in, one while not)."""
    if uid == 0:
        return [ROOT_DIRECTORY]
    return [f"{RUN_USER}/{uid}/sandboxed-run", f"{TMP_PREFIX}{uid}"]


def all_directories() -> list[tuple[int, str]]:
    """(owner, directory) for every user's registry on this machine: what root lists."""
    found = [(0, ROOT_DIRECTORY)]
    for parent, pattern in ((RUN_USER, "{}/sandboxed-run"), ("/tmp", None)):
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        for entry in sorted(names):
            if pattern is not None and entry.isdigit() and entry != "0":
                found.append((int(entry), f"{parent}/{pattern.format(entry)}"))
            elif pattern is None and entry.startswith("sandboxed-run-") and entry[14:].isdigit():
                found.append((int(entry[14:]), f"/tmp/{entry}"))
    return found


def _owned_directory(path: str, uid: int, private: bool = True) -> bool:
    """path is a directory (not a symbolic link) that uid owns, and if private, nobody else may enter."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == uid and not (private and st.st_mode & 0o077)


def trusted(path: str, uid: int) -> bool:
    """A registry directory we may believe: uid's own, private."""
    return _owned_directory(path, uid)


def prepare(uid: int | None = None) -> str:
    """Make sure the caller's registry directory exists and is the caller's alone; return its path.
    SandboxError (one line, what to do) if it cannot be used."""
    uid = os.geteuid() if uid is None else uid
    path = directory_for(uid)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise SandboxError(f"cannot make the registry of running sandboxes {path}: {exc.strerror}") from None
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise SandboxError(f"cannot use the registry of running sandboxes {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
        # Someone else made it first, in a directory anybody may write to: never register there.
        raise SandboxError(not_ours(path, uid) or f"the registry of running sandboxes {path} changed under us")
    if st.st_mode & 0o077:
        try:
            os.chmod(path, 0o700)
        except OSError as exc:
            raise SandboxError(f"cannot make {path} private: {exc.strerror}") from None
    return path


def not_ours(path: str, uid: int) -> str | None:
    """Why uid cannot use its registry directory path: someone else made it (or a link there) first, in /tmp,
    where anybody may. One line: whose it is and what uid can do, who cannot remove it. None: it is uid's
    directory, or it is not there."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if stat.S_ISDIR(st.st_mode) and st.st_uid == uid:
        return None
    kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a symbolic link" if stat.S_ISLNK(st.st_mode) \
        else "a file"
    said = f"the registry of running sandboxes {path} is {kind} of {_user(st.st_uid)}, not yours"
    if uid == 0:
        return f"{said}: remove it"
    if directory_for(uid) != path:
        return f"{said}: ask root to remove it"
    return (f"{said}: ask root to remove it, or log in (or enable lingering) so that {RUN_USER}/{uid} exists and "
            "sandboxes are listed there")


def _user(uid: int) -> str:
    import pwd  # here: only a registry that someone else took needs it

    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def place(name: str | None, warn: Callable[[str], None]) -> str | None:
    """The registry directory a new sandbox of ours goes in. If it cannot be used, a named sandbox fails
    (SandboxError); an unnamed one runs unlisted, and warn(message) says why. A name a live sandbox of ours
    holds in our other directory fails too (a cron job's, started while we were not logged in): claim()
    sees only its own directory."""
    try:
        directory = prepare()
    except SandboxError as exc:
        if name is not None:
            raise
        warn(f"the sandbox runs unlisted (sandboxed-run --list will not show it): {exc}")
        return None
    uid = os.geteuid()
    for other in directories_of(uid):
        if name is None or other == directory or not trusted(other, uid):
            continue
        sock = connect(os.path.join(other, name))
        if sock is not None:
            sock.close()
            raise SandboxError(in_use(name))
    return directory


def in_use(name: str) -> str:
    return (f"a sandbox named {name} is already running; choose another name, or stop that one first "
            f"(sandboxed-run --stop {name})")


def unreachable(name: str) -> str:
    """What a client inside a sandbox is told of a sandbox it may not reach (peers.py in the reaper)."""
    return (f"sandbox {name} cannot be reached from inside a sandbox: list, enter or stop it from where it "
            "was started")


# -- an entry ----------------------------------------------------------------------------------------

def entries(directory: str) -> list[tuple[str, int]]:
    """(name, owner uid) of every socket in a registry directory, dead ones included."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    found = []
    for name in sorted(names):
        if name_problem(name) is not None:
            continue
        try:
            st = os.lstat(os.path.join(directory, name))
        except OSError:
            continue
        if stat.S_ISSOCK(st.st_mode):
            found.append((name, st.st_uid))
    return found


def connect(path: str, timeout: float | None = None) -> socket.socket | None:
    """A connection to the reaper listening at path; None if nobody listens there (the entry is dead or gone).
    With timeout None, the socket is non-blocking (connect never waits: a unix connect completes or fails).
    If the reaper's backlog is full, someone listens: the socket is returned unconnected (connected() says
    so), after waiting up to timeout for room."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # to learn the job's PID as we see it
        sock.setblocking(False)
        try:
            sock.connect(path)
        except (BlockingIOError, InterruptedError):
            if timeout is None:
                return sock
            # A blocking unix connect waits for room in the backlog, for SO_SNDTIMEO at most.
            seconds = max(timeout, 0.001)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                            struct.pack("ll", int(seconds), int(seconds % 1 * 1_000_000)))
            sock.setblocking(True)
            try:
                sock.connect(path)
            except (BlockingIOError, InterruptedError, TimeoutError):
                pass
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK):
            return None
        raise
    if timeout is not None:
        sock.settimeout(timeout)
    return sock


def connect_entry(directory: str, owner: int, name: str, timeout: float | None = None) -> socket.socket | None:
    """connect() to the entry name of owner's registry directory, through that directory as it is now: opened
    without following a link, and still owner's alone. Its owner may replace it at any moment (with a link to
    root's registry, say), and root must never reach another sandbox than the one it named. None: nobody
    listens there, or the directory is no longer one to trust."""
    try:
        dirfd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(dirfd)
        if st.st_uid != owner or st.st_mode & 0o077:
            return None
        return connect(f"/proc/self/fd/{dirfd}/{name}", timeout)
    finally:
        os.close(dirfd)


def connected(sock: socket.socket) -> bool:
    try:
        sock.getpeername()
        return True
    except OSError:
        return False


def remove_if_dead(directory: str, name: str) -> bool:
    """Remove a dead entry (its reaper is gone); True if removed. Never waits for the lock: a claim holds
    it for a moment, and its sandbox is then alive anyway."""
    try:
        dirfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(dirfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        path = os.path.join(directory, name)
        sock = connect(path)
        if sock is not None:
            sock.close()
            return False
        try:
            os.unlink(name, dir_fd=dirfd)
            return True
        except OSError:
            return False
    finally:
        os.close(dirfd)  # and the lock with it


# -- the reaper's side -------------------------------------------------------------------------------

class Claim:
    """A name held by a reaper: its listening socket, and the directory it is in (a descriptor: the job
    may mount over the path, inside)."""

    def __init__(self, sock: socket.socket, dirfd: int, name: str, ino: int) -> None:
        self.sock = sock
        self.dirfd = dirfd
        self.name = name
        self.ino = ino

    def release(self) -> None:
        """Remove our entry, then stop listening. In that order: while we listen nobody else can have
        replaced the entry (a claim takes a name only from a dead socket), so what we remove is ours."""
        if self.dirfd < 0:
            return
        try:
            if os.stat(self.name, dir_fd=self.dirfd, follow_symlinks=False).st_ino == self.ino:
                os.unlink(self.name, dir_fd=self.dirfd)
        except OSError:
            pass
        self.sock.close()
        os.close(self.dirfd)
        self.dirfd = -1


def open_directory(directory: str) -> int | None:
    """A descriptor of a registry directory (None if it cannot be opened: claim then says why)."""
    try:
        return os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None


def claim(directory: str, name: str | None, argv0: bytes | None, dirfd: int) -> Claim:
    """Take name (None: a generated one) in directory, atomically: bind and listen under the directory's
    shared lock, a dead entry of that name replaced under its exclusive one. SandboxError (125) if a live
    sandbox has it, or if the directory cannot be used. Runs in the reaper, before anything of the job
    starts. dirfd: the directory as the launcher opened it, in the host's mount namespace (taken over:
    the Claim closes it), whose flags no mount inside the sandbox changes; never the path, which in there
    is an empty directory of the sandbox's own (reaper/mounts.py)."""
    try:
        for _attempt in range(8):
            chosen = name or generated_name(argv0)
            taken = _bind(dirfd, directory, chosen)
            if taken is not None:
                return taken
            if name is not None:
                raise SandboxError(in_use(name))
        raise SandboxError(f"cannot find a free generated name in {directory}")
    except BaseException:
        os.close(dirfd)
        raise


def _lock(dirfd: int, directory: str, kind: int) -> None:
    """The directory's lock (fcntl.LOCK_SH or LOCK_EX), waited for a bounded time (our signals stay queued
    meanwhile: a blocking flock would not hear them). Nobody holds it for longer than a bind and a listen,
    or a connect and an unlink, so the first pauses are short."""
    deadline = time.monotonic() + LOCK_WAIT
    pause = 0.00005
    while True:
        try:
            fcntl.flock(dirfd, kind | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise SandboxError(f"the registry of running sandboxes {directory} stayed locked for "
                                   f"{LOCK_WAIT:g} s (a stopped process holds it?)") from None
            time.sleep(pause)
            pause = min(pause * 2, 0.002)
        except OSError as exc:
            raise SandboxError(f"cannot lock the registry of running sandboxes {directory}: "
                               f"{exc.strerror}") from None


def _bind(dirfd: int, directory: str, name: str) -> Claim | None:
    """Bind and listen on name, replacing a dead entry; the Claim, or None if a live sandbox holds the name."""
    path = f"/proc/self/fd/{dirfd}/{name}"  # through the descriptor: the path we checked, whatever is mounted
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
    mask = os.umask(0o177)  # the owner alone may connect (root may anyway); we are single-threaded here
    try:
        _lock(dirfd, directory, fcntl.LOCK_SH)  # no remover may take a bound entry for a dead one
        try:
            sock.bind(path)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            # Taken, by a live sandbox or a dead one; a claim under way refuses connections too: ask again
            # under the exclusive lock, when no claim is between its bind and its listen.
            _lock(dirfd, directory, fcntl.LOCK_EX)
            other = connect(path)
            if other is not None:
                other.close()
                sock.close()
                return None
            os.unlink(name, dir_fd=dirfd)  # dead: its reaper was killed before it could remove it
            sock.bind(path)
        sock.listen(BACKLOG)
        ino = os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_ino
    except OSError as exc:
        sock.close()
        raise SandboxError(f"cannot register the sandbox as {name}: {exc.strerror}", EXIT_FAILURE,
                           exc.errno or 0) from None
    except BaseException:
        sock.close()
        raise
    finally:
        fcntl.flock(dirfd, fcntl.LOCK_UN)
        os.umask(mask)
    return Claim(sock, dirfd, name, ino)


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end, as our namespaces see them."""
    return struct.unpack("iII", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))

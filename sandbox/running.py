"""Running sandboxes seen from outside: sandbox.list_running() and sandbox.stop_running(), which
sandboxed-run --list, --stop and --enter use too.

Every sandbox is listed under a name in its owner's registry directory (the reaper's listening socket:
sandboxed_run_helpers.shared.registry). Everything shown comes from the reaper itself, asked over that
socket: an entry whose reaper is gone is never shown (and is removed), whoever killed it and how.
The caller sees its own sandboxes; root sees everyone's. Only the owner and root get details, and only
from where the sandbox was started: inside a sandbox, those started in there alone.
"""

from __future__ import annotations

import errno
import math
import os
import select
import socket
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from sandboxed_run_helpers.shared import linux, mountinfo, registry, unresponsive, wire
from sandboxed_run_helpers.shared.errors import EXIT_FAILURE, SandboxError, SandboxNotFound, SandboxNotPermitted
from sandboxed_run_helpers.shared.options import BY_NAME, check_grace
from sandboxed_run_helpers.shared.status import say

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing into the command-line tool
if TYPE_CHECKING:
    import _socket

QUERY_TIMEOUT = 3.0  # a reaper answers from its main loop at once; one that does not is stopped or frozen

NOT_RESPONDING = "not responding"


@dataclass(frozen=True)
class Mount:
    """One line of the sandbox's mount table, as its processes see it."""

    target: str
    source: str
    fstype: str
    options: str
    own: bool  # made for or inside the sandbox: the caller's own mount table has no such mount


@dataclass(frozen=True)
class RunningSandbox:
    """A running sandbox, as its reaper described it when asked.

    state is "running", "stopping" (stop_reason says why: "requested", "timeout", "main process exited",
    "caller died", ...) or "not responding" (the reaper did not answer: stopped with SIGSTOP, say; then
    only name, owner and reaper_pid are known, reaper_pid 0 if its backlog was full). command is None for a
    sandbox.Job (a session of many commands). Times are Unix seconds; PIDs are as the caller sees them.
    """

    name: str
    owner: int
    reaper_pid: int
    state: str
    job_pid: int | None = None
    started: float | None = None
    command: list[str] | None = None
    cwd: str | None = None
    stop_reason: str | None = None
    mounts: tuple[Mount, ...] = field(default=())
    confinement: dict[str, object] = field(default_factory=dict)  # what confines the job (user, ...), by API keyword

    @property
    def owner_name(self) -> str:
        return user_name(self.owner)

    @property
    def qualified_name(self) -> str:
        """OWNER/NAME: how root names one of several users' sandboxes of the same name."""
        return f"{self.owner_name}/{self.name}"

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "owner": self.owner, "owner_name": self.owner_name, "reaper_pid": self.reaper_pid,
                "job_pid": self.job_pid, "started": self.started, "command": self.command, "cwd": self.cwd,
                "state": self.state, "stop_reason": self.stop_reason,
                "mounts": [vars(m) for m in self.mounts], "confinement": self.confinement}


def list_running() -> list[RunningSandbox]:
    """Every running sandbox of the caller (root: of every user), ordered by owner and name.

    Each reaper is asked at once; one that does not answer within a few seconds is listed as "not
    responding". Entries whose reaper is gone (killed with everything else, even by SIGKILL) are never
    listed, and are removed on the way. If a registry directory of the caller's is someone else's (a
    /tmp/sandboxed-run-UID another user made first), sandboxes of the caller's may run unlisted: a
    RuntimeWarning says whose it is and what to do."""
    import warnings

    sandboxes, problems = survey()
    for problem in problems:
        warnings.warn(problem, RuntimeWarning, stacklevel=2)
    return sandboxes


def survey() -> tuple[list[RunningSandbox], list[str]]:
    """list_running()'s sandboxes, and why a registry directory of the caller's cannot be used (one line each;
    none: the listing is whole)."""
    uid = os.geteuid()
    problems = [problem for directory in registry.directories_of(uid) if (problem := registry.not_ours(directory, uid))]
    with _asked(_entries(None)) as answers:
        return [answer.sandbox() for answer in answers], problems


def stop_running(name: str, grace: float | str | None = None) -> None:
    """Stop the running sandbox name (or OWNER/NAME) as its timeout would: its stop signal, grace (seconds,
    or a duration such as "30s" or "1m"; None: the sandbox's own --grace), then SIGKILL; return once every
    process of it is gone and its mounts are dropped. Its status events say stopping with reason "requested".

    A sandbox whose PID 1 does not obey (it does not answer at all, or the sandbox is still there when the grace
    period and a few seconds more have passed: its job stopped it, through ptrace or the cgroup freezer) is
    ended by SIGKILL of that PID 1, which ends every process of it; one line on stderr says so.

    Raises SandboxNotFound (no running sandbox of that name that the caller may see), SandboxNotPermitted
    (another user's, or one the caller may not reach from inside a sandbox), SandboxError (what answers there is
    not a sandbox's PID 1, or it is still there a minute after it was killed), ValueError/TypeError for a bad name
    or grace.
    A KeyboardInterrupt ends the wait; the stop goes on without us."""
    stop(name, grace, "sandbox")


def stop(name: str, grace: float | str | None, prog: str) -> None:
    """stop_running, whose line on stderr begins with prog."""
    if name is None:
        raise TypeError("name must be a string, not None")
    name = BY_NAME["stop"].check(name, "name")
    grace = check_grace(grace)
    with found(name, deaf_ok=True) as answer:
        answer.send(wire.Stop(grace, wire.StopReason.REQUESTED, False))  # queued for a reaper that is stopped
        if answer.about is None:
            if not _is_a_pid1(answer.reaper_pid):
                pid = f" (reaper pid {answer.reaper_pid})" if answer.reaper_pid > 0 else ""
                raise SandboxError(f"sandbox {name}{pid} does not answer; is it stopped (SIGSTOP)?")
            answer.pidfd = _pidfd_of_a_pid1(answer, name)
            own = None
        else:
            own = answer.about.spec.grace
        if grace is None:
            grace = own if own is not None and type(own) in (int, float) and own >= 0 else BY_NAME["grace"].default
        if not _is_a_pid1(answer.reaper_pid):
            # Not a PID 1 of a namespace of its own: no reaper of ours (a user's own listener, say), not ours to kill.
            if not answer.wait_gone(grace + END_MARGIN):
                raise SandboxError(f"sandbox {name} did not end within {grace + END_MARGIN:g} s of the stop request: "
                                   f"its reaper (PID {answer.reaper_pid}) still runs; is it a sandbox of ours?")
            return
        due = unresponsive.due(grace)
        if answer.wait_gone(float("inf") if due is None else due - time.monotonic()):
            return
        _kill(answer, name, grace, prog)


# A PID 1 SIGKILLed ends once the kernel has killed and reaped every process of its namespace: moments. Whatever
# listens far longer after a stop request is no reaper of ours (a user's own listener, say).
END_MARGIN = 60.0


def names() -> list[str]:
    """The names in the registry that the caller may see, without asking their reapers (a dead entry's
    too, until a listing removes it): for completing a command line, where a wrong guess costs nothing."""
    return [name for name, _owner, _directory in _entries(None)]


def _kill(answer: Answer, name: str, grace: float, prog: str) -> None:
    """The sandbox's PID 1 did not obey the stop: SIGKILL it (and thaw what the freezer holds) until it is gone."""
    pid_ns = answer.about.namespaces.get("pid") if answer.about is not None else None
    pid_ns = unresponsive.pid_namespace(answer.reaper_pid) or pid_ns
    thawed = unresponsive.kill(answer.pidfd, answer.reaper_pid, pid_ns)
    say(f"sandbox {name}: " + unresponsive.line(answer.reaper_pid, grace + unresponsive.MARGIN, thawed), prog)
    end = time.monotonic() + END_MARGIN
    while not answer.wait_gone(unresponsive.RETHAW):
        if time.monotonic() >= end:
            raise SandboxError(f"sandbox {name} did not end within {END_MARGIN:g} s of the SIGKILL of its PID 1 "
                               f"(pid {answer.reaper_pid})")
        unresponsive.thaw(answer.reaper_pid, pid_ns)
    registry.remove_if_dead(answer.directory, answer.name)  # its reaper could not remove its entry


def _is_a_pid1(pid: int) -> bool:
    """Whether pid is the PID 1 of a PID namespace below ours, as the kernel says (/proc/PID/status, which
    anyone may read): a reaper, not some process that listens in a registry directory."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/status") as f:
            nspid = next((line.split()[1:] for line in f if line.startswith("NSpid:")), [])
    except OSError:
        return False
    return len(nspid) >= 2 and nspid[-1] == "1"


def _pidfd_of_a_pid1(answer: Answer, name: str) -> int:
    """A pidfd of the PID 1 that listens as sandbox name but does not answer, checked again once we hold it
    (its PID cannot be reused while we do): the listener's own where the kernel gives it, else one by PID."""
    pid = answer.reaper_pid
    try:
        pidfd = os.dup(answer.listener) if answer.listener >= 0 else os.pidfd_open(pid)
    except OSError:
        raise SandboxError(f"sandbox {name} (reaper pid {pid}) does not answer, and has exited") from None
    if answer.listener >= 0 and linux.pidfd_target(pidfd) != pid:
        os.close(pidfd)
        raise SandboxError(f"sandbox {name} (reaper pid {pid}) does not answer, and has exited")
    if not _is_a_pid1(pid):
        os.close(pidfd)
        raise SandboxError(f"sandbox {name} (reaper pid {pid}) does not answer, and has exited")
    return pidfd


# -- finding one ---------------------------------------------------------------------------------------


class Answer:
    """One registry entry, connected: the reaper's About (None: it did not answer), its pidfd, the job's PID."""

    def __init__(self, name: str, owner: int, directory: str, sock: _socket.socket) -> None:
        self.name = name
        self.owner = owner
        self.directory = directory
        self.reaper_pid = registry.peer_credentials(sock)[0]  # the kernel's word: the process that listened
        # That process, as a pidfd (SO_PEERPIDFD): a PID is the listener's only while it lives, and the socket may
        # outlive it in another process's hands, its PID then any process's (-1: the kernel cannot say).
        self.listener = -1
        self.gone = False  # the process that listened has exited: whoever answers now is no reaper of ours
        try:
            self.listener = linux.peer_pidfd(sock)
        except OSError as exc:
            # Before 6.5 (ENOPROTOOPT) the kernel cannot say, nor of a socket a full backlog left unconnected.
            self.gone = exc.errno not in (errno.ENOPROTOOPT, errno.ENOTCONN, errno.ENODATA)
        else:
            self.gone = linux.pidfd_target(self.listener) != self.reaper_pid
        self.sock = sock
        self.about: wire.About | None = None
        self.refused: wire.Failed | None = None
        self.pidfd = -1
        self.namespace_fds: dict[str, int] = {}  # kind -> a descriptor of the reaper's namespace, as it sent them
        self.root_fd = -1  # the reaper's root directory, as it sent it (O_PATH)
        self.job_pid: int | None = None
        # Whether to keep the namespaces and root the reaper sends (to enter it): only then are they looked at.
        self.entering = False

    def send(self, message: wire.Message) -> bool:
        """Ask the reaper, with a pidfd of ourselves: on a kernel without SO_PEERPIDFD (before 6.5) it is how the
        reaper learns where we live (helpers/reaper/peers.py)."""
        try:
            own = os.pidfd_open(os.getpid())
        except OSError:
            return False
        try:
            wire.send(self.sock, message, [own])
            return True
        except OSError:
            return False
        finally:
            os.close(own)

    def take(self, message: wire.Message, fds: list[int], pid: int | None) -> None:
        # Whoever owns a registry directory may listen there with a program of their own, and root lists and enters
        # everyone's: recv() gave an About of the types a reaper of ours sends, and its start must be a time.
        if isinstance(message, wire.About) and math.isfinite(message.started) and fds \
                and linux.pidfd_target(fds[0]) == self.reaper_pid \
                and (self.listener < 0 or linux.pidfd_target(self.listener) == self.reaper_pid):
            self.about, self.job_pid = message, pid
            self.pidfd = fds.pop(0)
            if self.entering:
                self._keep_namespaces(message, fds)
                self._keep_root(fds)
        elif isinstance(message, wire.Failed):
            self.refused = message
        wire.discard(fds)  # whoever listens there may send anything, a descriptor whose close waits too

    def _keep_namespaces(self, about: wire.About, fds: list[int]) -> None:
        """Take from fds those that are the namespaces the About names (kind and inode as the kernel says)."""
        for fd in list(fds):
            if not wire.harmless(fd):
                continue  # no namespace; and not to be asked (a file of a FUSE mount would make us wait)
            kind = linux.namespace_kind(fd)
            if kind is not None and kind not in self.namespace_fds \
                    and about.namespaces.get(kind) == os.fstat(fd).st_ino:
                self.namespace_fds[kind] = fd
                fds.remove(fd)

    def _keep_root(self, fds: list[int]) -> None:
        """Take from fds the first directory: the reaper's root."""
        for fd in fds:
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                self.root_fd = fd
                fds.remove(fd)
                return

    def sandbox(self) -> RunningSandbox:
        about = self.about
        if about is None:
            return RunningSandbox(self.name, self.owner, self.reaper_pid, NOT_RESPONDING)
        return RunningSandbox(
            self.name, self.owner, self.reaper_pid, about.state, self.job_pid, about.started,
            [os.fsdecode(a) for a in about.command] if about.command is not None else None, os.fsdecode(about.cwd),
            about.reason, tuple(mounts_of(about.mountinfo)), about.spec.confinement())

    def wait_gone(self, within: float) -> bool:
        """Until the reaper has exited (then every process of the sandbox is gone: PID 1 exits last), at most
        within seconds (inf: no limit); whether it has."""
        deadline = time.monotonic() + within
        while True:
            left = deadline - time.monotonic()
            if select.select([self.pidfd], [], [], max(0.0, min(left, 3600.0)))[0]:
                return True
            if left <= 0:
                return False

    def close(self) -> None:
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1
        if self.listener >= 0:
            os.close(self.listener)
            self.listener = -1
        wire.discard(self.namespace_fds.values(), at_once=True)
        self.namespace_fds = {}
        if self.root_fd >= 0:
            os.close(self.root_fd)
            self.root_fd = -1
        self.sock.close()


class _asked:
    """Connect to every entry, ask each at once, collect the answers until all came or QUERY_TIMEOUT passed."""

    def __init__(self, entries: list[tuple[str, int, str]], entering: bool = False) -> None:
        self.entries = entries
        self.entering = entering  # keep what each reaper sends to be entered (its namespaces, its root)
        self.answers: list[Answer] = []

    def __enter__(self) -> list[Answer]:
        pending: dict[int, Answer] = {}
        deadline = time.monotonic() + QUERY_TIMEOUT
        try:
            for name, owner, directory in self.entries:
                sock = registry.connect_entry(directory, owner, name, max(0.0, deadline - time.monotonic()))
                if sock is None:
                    registry.remove_if_dead(directory, name)
                    continue
                try:
                    answer = Answer(name, owner, directory, sock)
                    answer.entering = self.entering
                except OSError:
                    sock.close()
                    continue
                if answer.gone:
                    answer.close()  # its socket outlived the process that listened: no reaper of ours (alive)
                    continue
                if not registry.connected(sock):
                    self.answers.append(answer)  # its backlog is full (clients that never ask): alive, deaf
                    continue
                if answer.reaper_pid <= 0:
                    # Its reaper lives neither in our PID namespace nor below: we are inside a sandbox it was
                    # not started from, and it would refuse us (peers.py); no need to ask.
                    answer.refused = wire.Failed(EXIT_FAILURE, registry.unreachable(name), errno.EACCES)
                    self.answers.append(answer)
                    continue
                self.answers.append(answer)
                if answer.send(wire.Query()):
                    pending[sock.fileno()] = answer
            while pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                for fd in select.select(list(pending), [], [], left)[0]:
                    answer = pending[fd]
                    try:
                        message, fds, pid = wire.recv(answer.sock, socket.MSG_DONTWAIT)
                    except BlockingIOError:
                        continue
                    except (wire.Closed, ConnectionError, ValueError):
                        del pending[fd]  # it ended while we asked: gone
                        self.answers.remove(answer)
                        answer.close()
                        continue
                    answer.take(message, fds, pid)
                    if answer.about is not None or answer.refused is not None:
                        del pending[fd]
        except BaseException:
            self.__exit__()
            raise
        return [a for a in self.answers if a.refused is None]

    def __exit__(self, *exc: object) -> None:
        for answer in self.answers:
            answer.close()


class found:
    """The running sandbox name (or OWNER/NAME), asked and answered (an Answer with about and pidfd set)."""

    def __init__(self, name: str, deaf_ok: bool = False, entering: bool = False) -> None:
        self.name = name
        self.deaf_ok = deaf_ok  # an answer whose reaper does not answer (about None) will do
        self.entering = entering  # its namespaces and root kept (namespace_fds, root_fd)
        self.asked: _asked | None = None

    def __enter__(self) -> Answer:
        owner, _, short = self.name.rpartition("/")
        uid = os.geteuid()
        owner_uid = uid_of(owner) if owner else None
        if owner_uid is not None and uid != 0 and owner_uid != uid:
            raise SandboxNotPermitted(f"sandbox {self.name} is not yours: only its owner and root may list, enter "
                                      "or stop it")
        entries = [e for e in _entries(owner_uid) if e[0] == short]
        if uid == 0 and owner_uid is None and len({e[1] for e in entries}) > 1:
            own = [e for e in entries if e[1] == 0]
            if not own:
                names = ", ".join(sorted(f"{user_name(o)}/{short}" for _, o, _ in entries))
                raise SandboxError(f"several users' sandboxes are named {short} ({names}): say which, as OWNER/NAME")
            entries = own
        self.asked = _asked(entries, self.entering)
        answers = self.asked.__enter__()
        if not answers:
            refused = [a.refused.message for a in self.asked.answers if a.refused is not None]
            self.asked.__exit__()
            if refused:
                raise SandboxNotPermitted(refused[0])
            whose = "" if uid == 0 else " of yours"
            raise SandboxNotFound(f"no running sandbox named {self.name}{whose} (sandboxed-run --list shows them)")
        answer = answers[0]
        if answer.about is None and not self.deaf_ok:
            self.asked.__exit__()
            pid = f" (reaper pid {answer.reaper_pid})" if answer.reaper_pid > 0 else ""
            raise SandboxError(f"sandbox {self.name}{pid} does not answer; is it stopped (SIGSTOP)?")
        return answer

    def __exit__(self, *exc: object) -> None:
        if self.asked is not None:
            self.asked.__exit__()


def _entries(owner: int | None) -> list[tuple[str, int, str]]:
    """(name, owner, directory) of every entry the caller may see (owner: only that user's)."""
    uid = os.geteuid()
    if uid == 0:
        directories = [(o, d) for o, d in registry.all_directories() if owner is None or o == owner]
    else:
        directories = [(uid, d) for d in registry.directories_of(uid)]
    found_: list[tuple[str, int, str]] = []
    seen: set[tuple[int, int]] = set()
    for dir_owner, directory in directories:
        try:
            st = os.stat(directory)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in seen or not registry.trusted(directory, dir_owner):
            continue
        seen.add((st.st_dev, st.st_ino))
        found_.extend((name, dir_owner, directory) for name, file_owner in registry.entries(directory)
                      if file_owner == dir_owner)
    found_.sort(key=lambda e: (e[1], e[0]))
    return found_


# -- users and mounts ------------------------------------------------------------------------------------


def user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def uid_of(owner: str) -> int:
    if owner.isdigit():
        return int(owner)
    import pwd

    try:
        return pwd.getpwnam(owner).pw_uid
    except KeyError:
        raise SandboxNotFound(f"no user named {owner}") from None


_host_keys: tuple[float, set[tuple[str, ...]]] | None = None


def mounts_of(table: bytes) -> Iterator[Mount]:
    """The sandbox's mount table (its mountinfo); `own` marks the mounts ours has not (the sandbox's, and its
    job's)."""
    global _host_keys
    if _host_keys is None or time.monotonic() - _host_keys[0] > 1.0:
        try:
            _host_keys = (time.monotonic(), {entry.key for entry in mountinfo.read()})
        except OSError:
            _host_keys = (time.monotonic(), set())
    for entry in mountinfo.parse(table):
        key = entry.key
        if entry.fstype in CGROUP_FS and key not in _host_keys[1]:
            # In a cgroup namespace (--unshare cgroup) the kernel writes a cgroup mount's root relative to it.
            key = next((k for k in _host_keys[1] if k[0] == key[0] and k[2:] == key[2:]), key)
        yield Mount(entry.target, entry.source, entry.fstype, entry.options, key not in _host_keys[1])


CGROUP_FS = ("cgroup", "cgroup2")

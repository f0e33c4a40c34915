"""The reaper: PID 1 of a sandbox's PID namespace, and the owner of its mount namespace.

Its life, one method a step (launch.py forks it): arm() ties it to its launcher; prepare() and setup()
build the mount namespace; spawn() starts the job as PID 2; the loop forwards what the launcher asks, reaps
every process, and stops them all (stop signal, grace, SIGKILL) when the job's main process
ends, the launcher asks, or the launcher dies; finish() reports and exits, and the kernel
then kills whatever is left in the namespace and drops its mounts.

The job must never be PID 1: PID 1 of a namespace silently drops signals it has no handler for.
"""

from __future__ import annotations

import _socket as socket  # the C module: the command-line tool skips socket.py's enums
import errno
import fcntl
import os
import select
import signal
import stat
import sys
import time
from collections import deque

import prctl

from sandbox import linux, protocol
from sandbox.errors import EXIT_FAILURE, EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, SandboxError, mount_error, namespace_error
from sandbox.relay import Relays
from sandbox.signals import (
    CALLER_GONE,
    ENDING,
    FORWARDED,
    PARENT_GONE,
    describe_status,
    reset_for_helper,
    signal_name,
)

from . import inside, network

# The reaper reads these from a signalfd: blocked, never handled, so its loop sees them in order.
WATCHED = (signal.SIGCHLD, PARENT_GONE, CALLER_GONE, *FORWARDED)
# Ctrl+C pressed this often within IMPATIENT_WINDOW seconds SIGKILLs the whole sandbox.
IMPATIENT_PRESSES = 3
IMPATIENT_WINDOW = 5.0
DEFAULT_PATH = b"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CATCHABLE = frozenset(signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP})


class Command:
    """A process the launcher asked for: where its reports go, and how it ended."""

    __slots__ = ("pid", "sock", "status", "kill_at", "started")

    def __init__(self, pid: int, sock: socket.socket, started: float) -> None:
        self.pid = pid
        self.sock = sock
        self.status: int | None = None
        self.kill_at: float | None = None  # a stop asked for this command alone: SIGKILL it then
        self.started = started  # signals that arrived before this were not the command's


class Reaper:
    """PID 1 of one sandbox.

    It runs either one job (its main process's exit stops everything left, as the CLI and
    sandbox.run want) or a session (sandbox.Job): commands come one by one over the control
    socket, each with a socket of its own for its reports, and the namespace lives until the
    launcher stops it or dies.
    """

    def __init__(self, sock: socket.socket, parent_pidfd: int) -> None:
        self.sock = sock
        self.parent_pidfd = parent_pidfd
        self.proc_dir: str | int = "/proc"  # where we count our processes (a handle on it after --no-proc)
        self.reopen: set[str] = set()
        self.request: dict = {}
        self.session = False
        self.main: Command | None = None
        self.commands: dict[int, Command] = {}  # not yet reaped
        self.stopping: str | None = None
        self.deadline: float | None = None
        self.caller_gone = False
        self.sock_closed = False  # our launcher's end is gone: nobody to report to
        # A signal that asks for an end reached the job (from a terminal, a group, a cgroup, or us):
        # a stop on the caller's behalf then adds no stop signal on top of it, which would cut its cleanup.
        self.asked_to_end = False
        self.interrupts: deque[float] = deque()  # SIGINTs that reached the job, for IMPATIENT_PRESSES
        self.arrived: list[tuple[int, float]] = []  # signals read, not yet handled, and when we read them
        self.relays = Relays()  # signals our launcher passes on, unless the job got them by itself
        self.sigfd: linux.SignalFd | None = None
        self.all_gone = False  # waitpid said ECHILD: as PID 1 we inherit every orphan, so nothing is left
        self.grace = 0.0
        self.stop_signal = signal.SIGTERM
        self.poller = select.poll()
        self.mnt_ns = self.pid_ns = 0  # the inodes of our namespaces, once prepare() made them

    # -- life --------------------------------------------------------------------------------------

    def run(self) -> int:
        self.arm()
        failure = None
        try:
            self.prepare()
        except SandboxError as exc:
            failure = exc  # told to whoever sends the job
        stdio = self.receive_job()
        if stdio is None:
            return EXIT_FAILURE
        try:
            if failure is not None:
                raise failure
            self.setup()
            if not self.session:
                self.main = self.spawn(self.request, stdio, self.sock)
        except SandboxError as exc:
            self.send(self.sock, ("error", exc.exit_code, exc.message, exc.errno or 0))
            return exc.exit_code
        if self.session:
            self.event(self.sock, "ready", mnt_ns=self.mnt_ns, pid_ns=self.pid_ns)
        self.loop()
        return 0

    def arm(self) -> None:
        """Tie ourselves to the launcher before doing anything that could outlive it."""
        reset_for_helper()
        signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
        self.sigfd = linux.SignalFd(WATCHED)
        prctl.set_pdeathsig(PARENT_GONE)
        prctl.set_name("sandbox-reaper")
        # The launcher may have died before PDEATHSIG was armed; then no signal will ever come.
        if select.select([self.parent_pidfd], [], [], 0)[0]:
            os._exit(EXIT_FAILURE)
        linux.close_fds_except({self.sock.fileno(), self.sigfd.fileno()})

    def prepare(self) -> None:
        """What every sandbox needs, done before the job is known: a mount namespace, / slave, a fresh /proc."""
        try:
            linux.unshare(linux.CLONE_NEWNS)
        except OSError as exc:
            raise namespace_error(exc, "a mount namespace") from None
        try:
            linux.mount(None, b"/", None, linux.MS_REC | linux.MS_SLAVE)
        except OSError as exc:
            raise mount_error(exc, "make mounts slave under", "/") from None
        try:
            linux.mount(b"proc", b"/proc", b"proc", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
        except OSError as exc:
            raise mount_error(exc, "mount a fresh proc on", "/proc") from None
        self.mnt_ns = os.stat("/proc/self/ns/mnt").st_ino
        self.pid_ns = os.stat("/proc/self/ns/pid").st_ino
        _warm_up(self.mnt_ns)

    def receive_job(self) -> tuple[int | None, ...] | None:
        """Wait for the job (or session) and its descriptors; None if the launcher went away first."""
        while True:
            ready = select.select([self.sock, self.sigfd.fileno()], [], [])[0]
            if any(signo in (PARENT_GONE, CALLER_GONE) for signo, _, _ in self.sigfd.read()):
                return None
            if self.sock in ready:
                try:
                    message, fds, _ = protocol.recv(self.sock)
                except (protocol.Closed, ConnectionError):
                    return None
                except ValueError:
                    continue
                if message[0] not in ("job", "session"):
                    for fd in fds:
                        os.close(fd)
                    continue
                self.session = message[0] == "session"
                self.request = message[1]
                spec = self.request["spec"]
                self.grace = spec["grace"]
                self.stop_signal = spec["stop_signal"]
                return _stdio(message[2], fds)

    def setup(self) -> None:
        spec = self.request["spec"]
        self.isolate(spec)
        if spec["propagation"] == "private":
            try:
                linux.mount(None, b"/", None, linux.MS_REC | linux.MS_PRIVATE)
            except OSError as exc:
                raise mount_error(exc, "make mounts private under", "/") from None
        # A bind below a --read-only path copies its read-only flag: reopen it if its source is writable.
        self.reopen = {source for kind, _, source in spec["mounts"] if kind == "bind"
                       and any(k == "read-only" for k, _, _ in spec["mounts"])
                       and not os.statvfs(source).f_flag & os.ST_RDONLY}
        for kind, target, source in spec["mounts"]:
            self.mount(kind, target, source)
        if not spec.get("proc", True):
            self.drop_proc()

    def isolate(self, spec: dict) -> None:
        """The namespaces a request may add to the prepared ones: network and UTS."""
        net = spec.get("net", "host")
        if net == "none":
            try:
                linux.unshare(linux.CLONE_NEWNET)
            except OSError as exc:
                raise namespace_error(exc, "a network namespace") from None
            network.loopback_up()
        elif net.startswith("netns:"):
            network.join_netns(net[len("netns:"):], self.request["spec"].get("userns") is not None)
        hostname = spec.get("hostname")
        if hostname:
            try:
                linux.unshare(linux.CLONE_NEWUTS)
            except OSError as exc:
                raise namespace_error(exc, "a UTS namespace") from None
            socket.sethostname(hostname)

    def drop_proc(self) -> None:
        """--no-proc: take the fresh /proc away (the host's shows again), keeping a handle on ours."""
        try:
            self.proc_dir = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            linux.umount(b"/proc", linux.MNT_DETACH)
        except OSError as exc:
            raise mount_error(exc, "unmount the fresh proc from", "/proc") from None

    def mount(self, kind: str, target: str, source: str | None) -> None:
        path = os.fsencode(target)
        try:
            if kind == "read-only":
                if path != b"/":  # / is a mount already; a bind stacked on it would not be seen
                    linux.mount(path, path, None, linux.MS_BIND | linux.MS_REC)
                linux.mount_setattr_readonly(path)
                return
            if kind == "tmpfs":
                mode = stat.S_IMODE(os.stat(path).st_mode)
                options = b"mode=%o" % mode
                linux.mount(b"tmpfs", path, b"tmpfs", linux.MS_NOSUID | linux.MS_NODEV, options)
            else:
                linux.mount(os.fsencode(source), path, None, linux.MS_BIND | linux.MS_REC)
                if kind == "ro-bind":
                    linux.mount_setattr_readonly(path)
                elif source in self.reopen:
                    linux.mount_setattr_writable(path)
        except OSError as exc:
            raise mount_error(exc, f"mount --{kind} on", target) from None

    def spawn(self, request: dict, stdio: tuple[int | None, ...], sock: socket.socket) -> Command:
        """Start one process as the request says; its reports go to sock. Raises SandboxError (126, 127, 125)."""
        cwd = request["cwd"]
        try:
            os.chdir(cwd)
        except OSError as exc:
            raise SandboxError(f"cannot change to directory {os.fsdecode(cwd)}: {exc.strerror}") from None
        os.umask(request["umask"])
        argv = request["argv"]
        env = inside.mark_environment(request["env"], self.mnt_ns)  # lets sandbox-mount-image and co. check
        path = _resolve(argv[0], env.get(b"PATH", DEFAULT_PATH))
        file_actions = []
        copies = []
        for target, fd in enumerate(stdio):
            if fd is None:
                if target < 3:
                    file_actions.append((os.POSIX_SPAWN_CLOSE, target))
            else:
                # Above every target, so that no dup2 overwrites a descriptor a later one still needs.
                high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, max(3, len(stdio)))
                copies.append(high)
                file_actions.append((os.POSIX_SPAWN_DUP2, high, target))
        ignored = set(self.request["spec"]["ignored_signals"])
        for sig in ignored:
            signal.signal(sig, signal.SIG_IGN)
        defaults = CATCHABLE - ignored
        # Signals that reached us before the command existed were not sent to it.
        self.take_signals()
        started = time.monotonic()
        try:
            try:
                pid = os.posix_spawn(path, argv, env, file_actions=file_actions, setsigmask=(), setsigdef=defaults)
            except OSError as exc:
                name = os.fsdecode(argv[0])
                if exc.errno == errno.ENOENT:
                    raise SandboxError(f"{name}: command not found", EXIT_NOT_FOUND) from None
                raise SandboxError(f"{name}: cannot execute: {exc.strerror}", EXIT_NOT_EXECUTABLE,
                                   exc.errno or 0) from None
        finally:
            # Only the job may hold its pipes, or a caller reading them to the end would wait on us.
            for fd in copies + [fd for fd in stdio if fd is not None]:
                os.close(fd)
        command = Command(pid, sock, started)
        self.commands[pid] = command
        self.event(sock, "started", creds_pid=pid, job_pid=None, mnt_ns=self.mnt_ns, pid_ns=self.pid_ns)
        return command

    def loop(self) -> None:
        self.poller.register(self.sigfd.fileno(), select.POLLIN)
        self.poller.register(self.sock.fileno(), select.POLLIN)
        listening = True
        while True:
            if self.caller_gone and listening:
                self.poller.unregister(self.sock.fileno())  # its end of file would wake us forever
                listening = False
            deadlines = [d for d in (self.deadline, self.relays.next_due(),
                                     *(c.kill_at for c in self.commands.values())) if d is not None]
            wait = linux.wait_seconds(min(deadlines) if deadlines else None)
            ready = dict(self.poller.poll(None if wait is None else wait * 1000))
            # Signals first: a relay from the launcher must be matched against a group-wide signal that
            # is already queued for us.
            self.read_signals()
            if listening and self.sock.fileno() in ready and not self.caller_gone:
                self.read_messages(self.sock, self.main)
            for command in list(self.commands.values()):
                if command.sock is not self.sock and command.sock.fileno() in ready:
                    self.read_messages(command.sock, command)
            for relay in self.relays.take_due():
                self.forward(relay.target, relay.signo, "launcher")
            now = time.monotonic()
            for command in list(self.commands.values()):
                if command.kill_at is not None and now >= command.kill_at:
                    command.kill_at = None
                    _kill(command.pid, signal.SIGKILL)
            if self.deadline is not None and now >= self.deadline:
                self.kill_all("grace period over")
            if self.all_gone and (self.stopping or (self.main is not None and self.main.status is not None)):
                self.finish()

    def finish(self) -> None:
        status = self.main.status if self.main is not None and self.main.status is not None else 0
        self.send(self.sock, ("exited", status))
        os._exit(0)

    # -- what arrives ------------------------------------------------------------------------------

    def take_signals(self) -> None:
        """Move what the signalfd holds into self.arrived, stamped with the time we learnt of it."""
        now = time.monotonic()
        self.arrived.extend((signo, now) for signo, _code, _pid in self.sigfd.read())

    def read_signals(self) -> None:
        self.take_signals()
        arrived, self.arrived = self.arrived, []
        for signo, when in arrived:
            if signo == signal.SIGCHLD:
                self.reap()
            elif signo == PARENT_GONE:
                # The API's reaper belongs to the caller holding its socket, not to the spawn server that
                # forked it: if the server dies, the caller is still there to wait for the job.
                if self.request.get("lifeline", "parent") == "parent":
                    self.launcher_died()
            elif signo == CALLER_GONE:
                self.launcher_died()
            else:
                self.from_outside(signo, when)

    def from_outside(self, signo: int, when: float) -> None:
        """A signal reached us: sent to our process group or cgroup, it reached the job as well."""
        self.relays.arrived(signo, when)
        if any(self.relays.reached(command, signo) for command in self.commands.values()):
            self.delivered(signo)

    def delivered(self, signo: int) -> None:
        """signo reached the job (from outside, or from us)."""
        if signo in ENDING or signo == self.stop_signal:
            self.asked_to_end = True
        if signo == signal.SIGINT:
            self.note_interrupt(time.monotonic())

    def read_messages(self, sock: socket.socket, command: Command | None) -> None:
        """What a launcher asks, on the control socket (command: the main one, if any) or a command's."""
        control = sock is self.sock
        while True:
            try:
                message, fds, _ = protocol.recv(sock, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except ValueError:
                continue  # not one of ours; the sender learns nothing from us
            except (protocol.Closed, ConnectionError):
                if control:
                    self.launcher_died()
                else:
                    self.poller.unregister(sock.fileno())  # the caller let go of this command; it runs on
                return
            kind = message[0]
            if kind == "command" and control and self.session:
                self.start_command(message[1], message[2], fds)
                continue
            for fd in fds:
                os.close(fd)
            if kind == "signal" and command is not None:
                self.forward(command, message[1], message[2])
            elif kind == "relay" and command is not None:
                self.relay(command, message[1])
            elif kind == "stop":
                grace = self.grace if message[1] is None else message[1]
                # A stop that follows the caller's Ctrl+C or cancellation adds no signal to one that
                # already reached the job: it is cleaning up, and a second signal would cut that short.
                signal_it = not (message[3] and self.asked_to_end)
                if control:
                    self.begin_stop(message[2], grace, send_signal=signal_it)
                elif command is not None:
                    self.stop_command(command, grace, signal_it)

    def start_command(self, request: dict, present: list[bool], fds: list[int]) -> None:
        """A session's next command: the last descriptor is the socket for its reports."""
        if not fds or self.stopping:
            for fd in fds:
                os.close(fd)
            return
        sock = socket.socket(fileno=fds[-1])
        stdio = _stdio(present, fds[:-1])
        try:
            command = self.spawn(request, stdio, sock)
        except SandboxError as exc:
            self.send(sock, ("error", exc.exit_code, exc.message, exc.errno or 0))
            sock.close()
            return
        self.poller.register(sock.fileno(), select.POLLIN)
        if command.status is not None:
            self.report_exit(command)

    def relay(self, command: Command, signo: int) -> None:
        """The launcher got signo and passes it on, unless the same signal reached the job by itself."""
        if command.status is None:
            self.relays.request(command, signo)

    def forward(self, command: Command, sig: int, origin: str) -> None:
        if command.status is not None or command.pid not in self.commands:
            return
        if not _kill(command.pid, sig):
            return
        self.event(command.sock, "signal", signal=signal_name(sig), origin=origin)
        self.delivered(sig)

    def note_interrupt(self, now: float) -> None:
        self.interrupts.append(now)
        while now - self.interrupts[0] > IMPATIENT_WINDOW:
            self.interrupts.popleft()
        if len(self.interrupts) >= IMPATIENT_PRESSES:
            self.event(self.sock, "stopping", reason="interrupted repeatedly", grace=0.0, signal=None)
            self.kill_all("interrupted repeatedly")

    def launcher_died(self) -> None:
        if self.caller_gone:
            return
        self.caller_gone = True
        # A job already asked to end (a Ctrl+C, a group's SIGTERM) is cleaning up: a stop signal on top
        # would cut bash's trap.
        self.begin_stop("caller died", self.grace, send_signal=not self.asked_to_end)

    # -- stopping ----------------------------------------------------------------------------------

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.all_gone = True
                break
            if pid == 0:
                break
            command = self.commands.get(pid)
            if command is not None:
                command.status = status
                self.report_exit(command)
        main = self.main
        if main is not None and main.status is not None and not self.all_gone and self.stopping is None:
            self.begin_stop("main process exited", self.grace)

    def report_exit(self, command: Command) -> None:
        self.commands.pop(command.pid, None)
        self.event(command.sock, "exited", **describe_status(command.status))
        if command.sock is not self.sock:
            self.send(command.sock, ("exited", command.status))
            self.poller_forget(command.sock)
            command.sock.close()

    def poller_forget(self, sock: socket.socket) -> None:
        try:
            self.poller.unregister(sock.fileno())
        except KeyError:
            pass

    def stop_command(self, command: Command, grace: float, signal_it: bool = True) -> None:
        if command.status is not None or command.kill_at is not None:
            return
        sig = self.stop_signal if signal_it else None
        self.event(command.sock, "stopping", reason="requested", grace=_shown(grace),
                   signal=signal_name(sig) if sig else None)
        if sig is not None:
            _kill(command.pid, sig)
            _kill(command.pid, signal.SIGCONT)
        command.kill_at = time.monotonic() + grace

    def begin_stop(self, reason: str, grace: float, send_signal: bool = True) -> None:
        if self.stopping is not None:
            if self.deadline is not None:
                self.deadline = min(self.deadline, time.monotonic() + grace)
            return
        self.stopping = reason
        sig = self.stop_signal if send_signal else None
        self.event(self.sock, "stopping", reason=reason, grace=_shown(grace), signal=signal_name(sig) if sig else None)
        if sig is not None:
            for s in (sig, signal.SIGCONT):  # a stopped process would not see the stop signal until resumed
                if not _kill(-1, s):
                    break
        self.deadline = time.monotonic() + grace
        if grace <= 0:
            self.kill_all(reason)

    def kill_all(self, reason: str) -> None:
        count = sum(1 for name in os.listdir(self.proc_dir) if name.isdigit()) - 1
        if not _kill(-1, signal.SIGKILL):
            count = 0
        if count > 0:
            self.event(self.sock, "killed", count=count, reason=reason)
        self.deadline = None
        # Those the launcher waits for learn how they ended; the kernel reaps the rest when we exit.
        for command in list(self.commands.values()):
            _, command.status = os.waitpid(command.pid, 0)
            self.report_exit(command)
        self.finish()

    # -- talking to the launcher -------------------------------------------------------------------

    def send(self, sock: socket.socket, message: tuple, creds_pid: int | None = None) -> None:
        if sock is self.sock and self.sock_closed:
            return
        try:
            protocol.send(sock, message, creds_pid=creds_pid)
        except OSError:
            if sock is self.sock:
                self.sock_closed = True
                self.launcher_died()  # nobody listens any more: the same as the launcher's death

    def event(self, sock: socket.socket, name: str, creds_pid: int | None = None, **fields) -> None:
        fields["time"] = time.time()
        # A started event names the process by its PID in here; the kernel translates it for the receiver.
        self.send(sock, ("event", name, fields), creds_pid=creds_pid)


def _warm_up(mnt_ns: int) -> None:
    """Run the job's start-up path once while we wait for the job. A forked reaper copies every page
    its first run writes to (refcounts, caches): better now, while idle, than on the caller's time."""
    try:
        _resolve(b"sh", DEFAULT_PATH)
    except SandboxError:
        pass
    inside.mark_environment({b"PATH": DEFAULT_PATH}, mnt_ns)
    protocol.encode(("event", "started", {"job_pid": None, "mnt_ns": mnt_ns, "time": time.time()}))
    describe_status(0)


def _shown(grace: float) -> float | None:
    """A grace period as the events show it: null for no limit (JSON has no infinity)."""
    return None if grace == float("inf") else grace


def _stdio(present: list[bool], fds: list[int]) -> tuple[int | None, ...]:
    it = iter(fds)
    return tuple(next(it) if flag else None for flag in present)


def _kill(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def _resolve(name: bytes, search_path: bytes) -> bytes:
    """Find the program as a shell would, telling 'not found' (127) from 'not executable' (126)."""
    if b"/" in name:
        candidates = [name]
    else:
        candidates = [os.path.join(d or b".", name) for d in search_path.split(b":")]
    denied = None
    for candidate in candidates:
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and os.access(candidate, os.X_OK):
            return candidate
        denied = denied or candidate
    shown = os.fsdecode(name)
    if denied is not None:
        what = "is a directory" if os.path.isdir(denied) else "permission denied"
        raise SandboxError(f"{shown}: cannot execute: {what}", EXIT_NOT_EXECUTABLE)
    raise SandboxError(f"{shown}: command not found", EXIT_NOT_FOUND)


if __name__ == "__main__":
    sys.exit("the reaper is started by sandboxed-run, not on its own")

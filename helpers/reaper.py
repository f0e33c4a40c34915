"""The reaper: PID 1 of a sandbox's PID namespace, and the owner of its mount namespace.

Its life, one function a step: start() forks it from a launcher; setup() builds the mount
namespace; spawn() starts the job as PID 2; the loop forwards what the launcher asks, reaps
every process, and stops them all (stop signal, grace, SIGKILL) when the job's main process
ends, the launcher asks, or the launcher dies; finish() reports and exits, and the kernel
then kills whatever is left in the namespace and drops its mounts.

The job must never be PID 1: PID 1 of a namespace silently drops signals it has no handler for.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import socket
import stat
import sys
import time
from collections import deque

import prctl

from sandbox import linux, protocol
from sandbox.errors import EXIT_FAILURE, EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, SandboxError, mount_error, namespace_error
from sandbox.signals import FORWARDED, PARENT_GONE, signal_name

# The reaper reads these from a signalfd: blocked, never handled, so it learns who sent each one.
WATCHED = (signal.SIGCHLD, PARENT_GONE, *FORWARDED)
# Ctrl+C pressed this often within IMPATIENT_WINDOW seconds SIGKILLs the whole sandbox.
IMPATIENT_PRESSES = 3
IMPATIENT_WINDOW = 5.0
# A launcher that got SIGINT tells us; if the terminal sent it, the job has it already.
TTY_MATCH_WINDOW = 2.0
DEFAULT_PATH = b"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_own_pidns: tuple[int, int] | None = None  # (pid of the process that opened it, fd)
_own_pidfd: tuple[int, int] | None = None


def _cached_fd(cache: tuple[int, int] | None, opener) -> tuple[int, int]:
    pid = os.getpid()
    if cache is None or cache[0] != pid:
        cache = (pid, opener())
    return cache


def fork(userns: tuple[int, int] | list[int] | None = None) -> tuple[int, int, socket.socket]:
    """Fork a reaper as PID 1 of a new PID namespace; return its PID, a pidfd for it and our socket to it.

    Runs in a single-threaded launcher (the CLI, or the spawn server). The launcher enters the new
    PID namespace only for this one fork and goes straight back, so it can start the next sandbox.
    The reaper prepares its namespaces at once and then waits for its job (send_job), so a spawn
    server can keep one ready before anybody asks.

    With userns (the uid and gid the caller becomes inside), the reaper is cloned into a new user
    namespace and its PID namespace at once: the only way an unprivileged launcher gets a PID 1, and
    the launcher's own namespaces never change.
    """
    global _own_pidns, _own_pidfd
    _own_pidns = _cached_fd(_own_pidns, lambda: os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC))
    _own_pidfd = _cached_fd(_own_pidfd, lambda: os.pidfd_open(os.getpid()))
    ours, theirs = protocol.pair()
    mapping = None if userns is None else (userns[0], userns[1], os.geteuid(), os.getegid())
    if mapping is not None:
        pid = _clone_userns(ours, theirs)
    else:
        try:
            linux.unshare(linux.CLONE_NEWPID)
        except OSError as exc:
            ours.close()
            theirs.close()
            raise namespace_error(exc, "a PID namespace") from None
        try:
            pid = os.fork()
        except BaseException:
            linux.setns(_own_pidns[1], linux.CLONE_NEWPID)
            ours.close()
            theirs.close()
            raise
    if pid == 0:
        code = EXIT_FAILURE
        try:
            code = Reaper(theirs, _own_pidfd[1], mapping).run()
        except BaseException as exc:  # never return into the launcher's code from here
            try:
                protocol.send(theirs, ("error", EXIT_FAILURE, f"sandbox helper failed: {exc!r}"))
            except BaseException:
                pass
        finally:
            os._exit(code)
    if mapping is None:
        linux.setns(_own_pidns[1], linux.CLONE_NEWPID)
    theirs.close()
    return pid, os.pidfd_open(pid), ours


def _clone_userns(ours: socket.socket, theirs: socket.socket) -> int:
    try:
        return linux.clone_fork(linux.CLONE_NEWUSER | linux.CLONE_NEWPID)
    except OSError as exc:
        ours.close()
        theirs.close()
        raise namespace_error(exc, "a user namespace") from None


def send_job(sock: socket.socket, pid: int, request: dict, stdio: tuple[int | None, int | None, int | None]) -> None:
    """Give a forked reaper its job: the request and the descriptors that become the job's 0, 1, 2."""
    pgid = request.get("pgid")
    if pgid:
        # The job belongs in the caller's process group, where the terminal's Ctrl+C and Ctrl+Z land.
        try:
            os.setpgid(pid, pgid)
        except OSError:
            pass
    protocol.send(sock, ("job", request, [fd is not None for fd in stdio]), fds=[fd for fd in stdio if fd is not None])


def start(request: dict, stdio: tuple[int | None, int | None, int | None]) -> tuple[int, int, socket.socket]:
    """fork() and send_job() in one: a reaper for this job, now."""
    pid, pidfd, sock = fork(request["spec"].get("userns"))
    try:
        send_job(sock, pid, request, stdio)
    except OSError:
        pass  # it died already; the caller learns that from the socket
    return pid, pidfd, sock


class Reaper:
    def __init__(self, sock: socket.socket, parent_pidfd: int,
                 userns: tuple[int, int, int, int] | None = None) -> None:
        self.sock = sock
        self.parent_pidfd = parent_pidfd
        self.userns = userns  # (uid inside, gid inside, the caller's uid, its gid): we are in a new user namespace
        self.proc_dir: str | int = "/proc"  # where we count our processes (a handle on it after --no-proc)
        self.reopen: set[str] = set()
        self.request: dict = {}
        self.stdio: tuple[int | None, ...] = (None, None, None)
        self.main_pid = 0
        self.main_status: int | None = None
        self.stopping: str | None = None
        self.deadline: float | None = None
        self.caller_gone = False
        self.interrupted = False  # an interrupt reached the job: never add the stop signal on top of it
        self.tty_interrupts: deque[float] = deque()  # terminal SIGINTs no launcher has claimed yet
        self.interrupts: deque[float] = deque()
        self.sigfd: linux.SignalFd | None = None
        self.all_gone = False  # waitpid said ECHILD: as PID 1 we inherit every orphan, so nothing is left
        self.grace = 0.0
        self.stop_signal = signal.SIGTERM

    # -- life --------------------------------------------------------------------------------------

    def run(self) -> int:
        self.arm()
        failure = None
        try:
            self.enter_userns()
            self.prepare()
        except SandboxError as exc:
            failure = exc  # told to whoever sends the job
        if not self.receive_job():
            return EXIT_FAILURE
        try:
            if failure is not None:
                raise failure
            self.setup()
            self.spawn()
        except SandboxError as exc:
            self.send(("error", exc.exit_code, exc.message))
            return exc.exit_code
        self.loop()
        return 0

    def arm(self) -> None:
        """Tie ourselves to the launcher before doing anything that could outlive it."""
        signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
        self.sigfd = linux.SignalFd(WATCHED)
        prctl.set_pdeathsig(PARENT_GONE)
        prctl.set_name("sandbox-reaper")
        # The launcher may have died before PDEATHSIG was armed; then no signal will ever come.
        if select.select([self.parent_pidfd], [], [], 0)[0]:
            os._exit(EXIT_FAILURE)
        keep = {self.sock.fileno(), self.sigfd.fileno()}
        linux.close_fds_except(keep | {self.parent_pidfd} if self.userns is not None else keep)

    def enter_userns(self) -> None:
        """Map the caller's uid and gid to the ones asked for inside; we keep every capability in here."""
        if self.userns is None:
            return
        inside_uid, inside_gid, uid, gid = self.userns
        try:
            for name, text in (("setgroups", "deny"), ("uid_map", f"{inside_uid} {uid} 1"),
                               ("gid_map", f"{inside_gid} {gid} 1")):
                with open(f"/proc/self/{name}", "w") as f:
                    f.write(text)
        except OSError as exc:
            raise SandboxError(f"cannot map uid {uid} and gid {gid} into the user namespace: {exc.strerror}") from None
        # The kernel clears PDEATHSIG when credentials change: make sure it is armed, and the launcher still lives.
        if prctl.get_pdeathsig() != PARENT_GONE:
            prctl.set_pdeathsig(PARENT_GONE)
        if select.select([self.parent_pidfd], [], [], 0)[0]:
            os._exit(EXIT_FAILURE)
        os.close(self.parent_pidfd)

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

    def receive_job(self) -> bool:
        """Wait for the job; False if the launcher went away first (then there is nothing to clean up)."""
        while True:
            ready = select.select([self.sock, self.sigfd.fileno()], [], [])[0]
            if any(signo == PARENT_GONE for signo, _, _ in self.sigfd.read()):
                return False
            if self.sock in ready:
                try:
                    message, fds, _ = protocol.recv(self.sock)
                except (protocol.Closed, ConnectionError):
                    return False
                if message[0] != "job":
                    for fd in fds:
                        os.close(fd)
                    continue
                self.request = message[1]
                it = iter(fds)
                self.stdio = tuple(next(it) if flag else None for flag in message[2])
                spec = self.request["spec"]
                self.grace = spec["grace"]
                self.stop_signal = spec["stop_signal"]
                return True

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
        cwd = self.request["cwd"]
        try:
            os.chdir(cwd)
        except OSError as exc:
            raise SandboxError(f"cannot change to directory {os.fsdecode(cwd)}: {exc.strerror}") from None
        os.umask(self.request["umask"])

    def isolate(self, spec: dict) -> None:
        """The namespaces a request may add to the prepared ones: network and UTS."""
        net = spec.get("net", "host")
        if net == "none":
            try:
                linux.unshare(linux.CLONE_NEWNET)
            except OSError as exc:
                raise namespace_error(exc, "a network namespace") from None
            _loopback_up()
        elif net.startswith("netns:"):
            _join_netns(net[len("netns:"):], self.userns is not None)
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

    def spawn(self) -> None:
        argv = self.request["argv"]
        env = self.request["env"]
        path = _resolve(argv[0], env.get(b"PATH", DEFAULT_PATH))
        file_actions = []
        copies = []
        for target, fd in enumerate(self.stdio):
            if fd is None:
                file_actions.append((os.POSIX_SPAWN_CLOSE, target))
            else:
                # Above 2, so that no dup2 onto 0-2 overwrites a descriptor a later one still needs.
                high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
                copies.append(high)
                file_actions.append((os.POSIX_SPAWN_DUP2, high, target))
        ignored = set(self.request["spec"]["ignored_signals"])
        for sig in ignored:
            signal.signal(sig, signal.SIG_IGN)
        defaults = signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP} - ignored
        try:
            self.main_pid = os.posix_spawn(path, argv, env, file_actions=file_actions,
                                           setsigmask=(), setsigdef=defaults)
        except OSError as exc:
            name = os.fsdecode(argv[0])
            if exc.errno == errno.ENOENT:
                raise SandboxError(f"{name}: command not found", EXIT_NOT_FOUND) from None
            raise SandboxError(f"{name}: cannot execute: {exc.strerror}", EXIT_NOT_EXECUTABLE) from None
        # Only the job may hold its pipes, or a caller reading them to the end would wait on us.
        for fd in copies + [fd for fd in self.stdio if fd is not None and fd > 2]:
            os.close(fd)
        self.event("started", job_pid=None, mnt_ns=os.stat("/proc/self/ns/mnt").st_ino,
                   pid_ns=os.stat("/proc/self/ns/pid").st_ino)

    def loop(self) -> None:
        poller = select.poll()
        poller.register(self.sigfd.fileno(), select.POLLIN)
        poller.register(self.sock.fileno(), select.POLLIN)
        listening = True
        while True:
            if self.caller_gone and listening:
                poller.unregister(self.sock.fileno())  # its end of file would wake us forever
                listening = False
            timeout = None if self.deadline is None else max(0, (self.deadline - time.monotonic()) * 1000)
            ready = dict(poller.poll(timeout))
            # Signals first: a launcher's "I got SIGINT" must be matched against a terminal SIGINT
            # that is already queued for us.
            self.read_signals()
            if listening and self.sock.fileno() in ready and not self.caller_gone:
                self.read_commands()
            if self.deadline is not None and time.monotonic() >= self.deadline:
                self.kill_all("grace period over")
            if self.main_status is not None and self.all_gone:
                self.finish()

    def finish(self) -> None:
        status = self.main_status if self.main_status is not None else 0
        self.send(("exited", status))
        os._exit(0)

    # -- what arrives ------------------------------------------------------------------------------

    def read_signals(self) -> None:
        for signo, code, _pid in self.sigfd.read():
            if signo == signal.SIGCHLD:
                self.reap()
            elif signo == PARENT_GONE:
                self.launcher_died()
            elif signo == signal.SIGINT and code == linux.SI_KERNEL:
                # The terminal sent Ctrl+C to the whole foreground process group: the job has it already.
                now = time.monotonic()
                self.tty_interrupts.append(now)
                self.note_interrupt(now)
            # Anything else sent to us directly reached the job's process group too, or is not meant for it.

    def read_commands(self) -> None:
        while True:
            try:
                message, fds, _ = protocol.recv(self.sock, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except (protocol.Closed, ConnectionError):
                self.launcher_died()
                return
            for fd in fds:
                os.close(fd)
            kind = message[0]
            if kind == "signal":
                self.forward(message[1], message[2])
            elif kind == "interrupt":
                self.read_signals()
                now = time.monotonic()
                while self.tty_interrupts and now - self.tty_interrupts[0] > TTY_MATCH_WINDOW:
                    self.tty_interrupts.popleft()
                if self.tty_interrupts:
                    self.tty_interrupts.popleft()
                else:
                    self.forward(signal.SIGINT, "launcher")
            elif kind == "stop":
                grace = self.grace if message[1] is None else message[1]
                self.begin_stop(message[2], grace)

    def forward(self, sig: int, origin: str) -> None:
        if self.main_status is not None:
            return
        try:
            os.kill(self.main_pid, sig)
        except ProcessLookupError:
            return
        self.event("signal", signal=signal_name(sig), origin=origin)
        if sig == signal.SIGINT:
            self.note_interrupt(time.monotonic())

    def note_interrupt(self, now: float) -> None:
        self.interrupted = True
        self.interrupts.append(now)
        while now - self.interrupts[0] > IMPATIENT_WINDOW:
            self.interrupts.popleft()
        if len(self.interrupts) >= IMPATIENT_PRESSES:
            self.event("stopping", reason="interrupted repeatedly", grace=0.0, signal=None)
            self.kill_all("interrupted repeatedly")

    def launcher_died(self) -> None:
        if self.caller_gone:
            return
        self.caller_gone = True
        # A job already handling Ctrl+C is cleaning up: a SIGTERM landing in bash's EXIT trap would cut it.
        self.begin_stop("caller died", self.grace, send_signal=not self.interrupted)

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
            if pid == self.main_pid:
                self.main_status = status
                self.event("exited", **_describe_status(status))
        if self.main_status is not None and not self.all_gone and self.stopping is None:
            self.begin_stop("main process exited", self.grace)

    def begin_stop(self, reason: str, grace: float, send_signal: bool = True) -> None:
        if self.stopping is not None:
            if self.deadline is not None:
                self.deadline = min(self.deadline, time.monotonic() + grace)
            return
        self.stopping = reason
        sig = self.stop_signal if send_signal else None
        self.event("stopping", reason=reason, grace=grace, signal=signal_name(sig) if sig else None)
        if sig is not None:
            for s in (sig, signal.SIGCONT):  # a stopped process would not see the stop signal until resumed
                try:
                    os.kill(-1, s)
                except ProcessLookupError:
                    break
        self.deadline = time.monotonic() + grace
        if grace <= 0:
            self.kill_all(reason)

    def kill_all(self, reason: str) -> None:
        count = sum(1 for name in os.listdir(self.proc_dir) if name.isdigit()) - 1
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            count = 0
        if count > 0:
            self.event("killed", count=count, reason=reason)
        self.deadline = None
        if self.main_status is None and self.main_pid:
            _, self.main_status = os.waitpid(self.main_pid, 0)
            self.event("exited", **_describe_status(self.main_status))
        self.finish()

    # -- talking to the launcher -------------------------------------------------------------------

    def send(self, message: tuple, creds_pid: int | None = None) -> None:
        if self.caller_gone:
            return
        try:
            protocol.send(self.sock, message, creds_pid=creds_pid)
        except OSError:
            self.launcher_died()  # nobody listens any more: the same as the launcher's death

    def event(self, name: str, **fields) -> None:
        fields["time"] = time.time()
        # The started event names the job by its PID in here; the kernel translates it for the receiver.
        self.send(("event", name, fields), creds_pid=self.main_pid if name == "started" else None)


def _loopback_up() -> None:
    """Bring lo up in a new network namespace (it starts down). pyroute2 loads here, never in the launcher.

    A synchronous IPRoute raises inside a running asyncio loop: none runs here (the reaper is a fork of
    the CLI or of the spawn server, never of the API's caller). NetNS is not used: it forks a helper,
    and we are in the namespace already, so a plain IPRoute's socket is bound to it.
    """
    try:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
    except Exception as exc:  # noqa: BLE001 - whatever pyroute2 raises, the sandbox cannot start
        raise SandboxError(f"--net none: cannot bring the loopback interface up: {exc}") from None


def _join_netns(name: str, in_userns: bool) -> None:
    path = f"/run/netns/{name}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise SandboxError(f"--net netns:{name}: cannot open {path}: {exc.strerror}") from None
    try:
        linux.setns(fd, linux.CLONE_NEWNET)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            reason = f"{path} is not a network namespace"
        elif exc.errno == errno.EPERM and in_userns:
            reason = "not permitted from a user namespace (a namespace made by the host's root needs root)"
        else:
            reason = exc.strerror
        raise SandboxError(f"--net netns:{name}: cannot join the network namespace: {reason}") from None
    finally:
        os.close(fd)


def _describe_status(status: int) -> dict:
    if os.WIFSIGNALED(status):
        return {"signal": signal_name(os.WTERMSIG(status)), "code": None}
    return {"signal": None, "code": os.waitstatus_to_exitcode(status)}


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

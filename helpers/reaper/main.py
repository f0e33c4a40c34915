"""The reaper: PID 1 of a sandbox's PID namespace, and the owner of its mount namespace.

Its life, top to bottom in main(): tie itself to the launcher; prepare the namespaces (before the
order comes, so that a spawn server can keep a reaper ready); receive the order (an Order, or a Session
for sandbox.Job); complete the sandbox as the order's spec says (mounts.py); start the job
(commands.py); then the loop: reap every process, pass on what the launcher asks, and stop them all
(stopping.py) when the main process ends, when the launcher asks, or when the caller dies. The loop
returns the status to exit with; once we have exited, the kernel kills whatever is left in the
namespace and drops its mounts.
"""

from __future__ import annotations

import _socket as socket  # the C module: the command-line tool skips socket.py's enums
import os
import select
import signal
import sys
import time

import prctl

from ..shared import linux, wire
from ..shared.command import Command
from ..shared.errors import EXIT_FAILURE, SandboxError, unshare
from ..shared.options import SandboxSpec
from ..shared.relay import Relays
from ..shared.signals import (
    CALLER_GONE,
    ENDING,
    FORWARDED,
    PARENT_GONE,
    SI_KERNEL,
    describe_status,
    die_of_faults,
    from_outside,
    reset_for_helper,
    signal_name,
)
from . import accounting, commands, listing, mounts
from .accounting import Accounting
from .commands import DEFAULTED, Process
from .entered import Entered
from .procfs import OwnProc
from .stopping import Stopping, kill

# Read from a signalfd: blocked, never handled, so the loop sees them in order with everything else.
WATCHED = (signal.SIGCHLD, PARENT_GONE, CALLER_GONE, *FORWARDED)
# How long a stop on behalf of a caller that is gone waits for the hangup of a terminal it led, unless the kernel
# says first that it has died (PARENT_GONE): its end of our socket closes, and the spawn server may say CALLER_GONE,
# a moment before the kernel hangs up the terminal (a dying process's files close first).
HANGUP_SETTLE = 0.25
# After the final SIGKILL we reap what is left ourselves (what we reap is what the usage counts), but wait no
# longer than this for a process stuck in the kernel: the kernel reaps it after we exit.
REAP_AFTER_KILL = 5.0


def main(sock: socket.socket, parent_pidfd: int, owner: int | None = None) -> int:
    """The whole life of PID 1; returns the status to exit with. owner: the host's uid the sandbox belongs
    to, when we are in a user namespace made for it (None: we are not)."""
    sigfd = tie_to_launcher(sock, parent_pidfd)
    try:
        mnt_ns, pid_ns, procs = mounts.prepare(owner)
        warm_up(mnt_ns, pid_ns)
        failure = None
    except SandboxError as exc:
        failure = exc  # told to whoever sends the order
        mnt_ns = pid_ns = 0
        procs = mounts.Procs(OwnProc(-1), None)
    received = receive_order(sock, sigfd)
    if received is None:
        return EXIT_FAILURE  # the launcher went away first
    pristine: Pristine | None = None
    while True:
        order, stdio, registry_fd, owner_fd, caller = received
        if caller is not None and failure is None and pristine is None:
            pristine = Pristine(procs)
        status, kept = serve(Reaper(caller or sock, sigfd, order, mnt_ns, pid_ns, procs, owner_fd, pristine),
                             order, stdio, registry_fd, failure)
        if not kept or pristine is None:
            return status
        if not pristine.rest(sigfd, order.spec):
            return 0
        try:
            # Out of the caller's process group until its next job (hand_over puts us back): a stop or a
            # Ctrl+C meant for the group must not reach a reaper that has no job.
            os.setpgid(0, 0)
        except OSError:
            return 0
        try:
            # Before the caller's socket closes (its end of the job): its next request finds us idle.
            wire.send(sock, wire.Idle())
        except OSError:
            return 0  # the spawn server is gone
        finally:
            caller.close()  # (kept: the caller had every report, Exited last)
        received = receive_order(sock, sigfd)
        if received is None or received[4] is None:
            return 0  # the spawn server let us go (or sent what it never sends)


def serve(reaper: Reaper, order: wire.Order | wire.Session, stdio: tuple[int | None, ...], registry_fd: int | None,
          failure: SandboxError | None) -> tuple[int, bool]:
    """One sandbox, from its order to its end: the status to exit with, and whether we were kept for the next."""
    sock = reaper.sock
    try:
        try:
            if failure is not None:
                raise failure
            if reaper.pristine is not None:
                reaper.mnt_ns = reaper.pristine.fresh_copy()  # what this job mounts dies with it
            procs = reaper.procs
            launcher = procs.launcher if reaper.pristine is None or procs.launcher is None else os.dup(procs.launcher)
            # The name first: a clash must fail before anything of the job exists.
            reaper.listing, registry_fd = listing.claim(order, registry_fd, launcher, procs.own), None
            reaper.spec = mounts.set_up(order.spec)
            if order.spec.landlock_read or order.spec.landlock_write:
                from ..shared.landlock import resolved

                reaper.spec = resolved(reaper.spec)  # before anything of the job runs (its links lead nowhere then)
            if isinstance(order, wire.Order):
                reaper.main = reaper.start(order.command, stdio, sock)
        except SandboxError as exc:
            reaper.send(sock, wire.Failed(exc.exit_code, exc.message, exc.errno or 0))
            return exc.exit_code, False
        if isinstance(order, wire.Session):
            reaper.accounting.start()
            reaper.report(None, wire.EventName.READY, mnt_ns=reaper.mnt_ns, pid_ns=reaper.pid_ns, name=reaper.name)
        status = reaper.loop()
        return status, reaper.kept
    finally:
        if reaper.listing is not None:
            reaper.listing.release()  # our entry goes before we do; a SIGKILLed reaper's is refused, then removed
        if order.spec.linked:
            from . import veth

            veth.release()  # the host end goes before we do; a SIGKILLed reaper's goes with the namespace


class Pristine:
    """A reaper that serves one caller's jobs in turn (an Order that serves_more): the mount namespace we
    prepared, kept as it was, that each job's is a fresh copy of (nothing a job mounts reaches the next);
    and what a job may change in us, as it was before the first (signal dispositions, umask), or what we
    would pass on to the next job that a privileged job can change from outside (inheritable())."""

    def __init__(self, procs: mounts.Procs) -> None:
        self.fd = os.open("self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC, dir_fd=procs.own.fd)
        # setns to a mount namespace makes the namespace's own root our / and cwd: a caller in a chroot (a build
        # chroot, a VM's initramfs that chroots into its system) would see its jobs leave it. We take ours back.
        self.root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self.cwd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self.own = procs.own
        self.dispositions = {sig: signal.getsignal(sig) for sig in DEFAULTED}
        self.umask = os.umask(0o022)
        os.umask(self.umask)
        self.attributes = self.inheritable()
        # Its mount table, as it is now. A root job can reach the prepared namespace itself (setns through
        # /proc/1/fd, with CAP_SYS_PTRACE) and mount there; the kernel says so by POLLPRI on this descriptor.
        self.mounts = os.open("self/mountinfo", os.O_RDONLY | os.O_CLOEXEC, dir_fd=procs.own.fd)

    def inheritable(self) -> tuple:
        """What every process we start inherits from us and a root job can change in PID 1 without being it
        (prlimit --pid 1, renice, chrt, taskset, ionice, /proc/1/oom_score_adj, a move to another cgroup): as
        the kernel says it now. A change is not undone but ends us: the next job gets a fresh reaper."""
        try:
            ioprio = linux.ioprio_get()
        except OSError:
            ioprio = None
        files = []
        for name in INHERITED_FILES:
            try:
                fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=self.own.fd)
            except OSError:
                files.append(None)
                continue
            try:
                files.append(os.read(fd, 8192))
            except OSError:
                files.append(None)
            finally:
                os.close(fd)
        return (os.getpriority(os.PRIO_PROCESS, 0), os.sched_getscheduler(0), os.sched_getparam(0).sched_priority,
                os.sched_getaffinity(0), ioprio, *files)

    def fresh_copy(self) -> int:
        """Enter a new copy of the prepared mount namespace; its inode number."""
        self._enter()
        unshare(linux.CLONE_NEWNS, "a mount namespace")  # our root and cwd move to their copies
        return os.stat("self/ns/mnt", dir_fd=self.own.fd).st_ino

    def mounts_changed(self) -> bool:
        """Whether a mount came or went in the prepared namespace since we prepared it (then no job may have a
        copy of it: we end)."""
        poller = select.poll()
        poller.register(self.mounts, select.POLLPRI)
        return bool(poller.poll(0))

    def leave(self) -> bool:
        """Back to the prepared namespace, once every process of the job is gone: the job's goes with it."""
        try:
            self._enter()
            return True
        except OSError:
            return False

    def _enter(self) -> None:
        """Into the prepared namespace, with the root and working directory we had there."""
        linux.setns(self.fd, linux.CLONE_NEWNS)
        os.fchdir(self.root)
        os.chroot(".")
        os.fchdir(self.cwd)

    def rest(self, sigfd: linux.SignalFd, spec: SandboxSpec) -> bool:
        """Undo what the last job (of spec) changed in us: the signals commands.start ignored for it, the umask;
        drop the signals that came for it. False if the launcher's death is among them, or if the job changed
        what we pass on (inheritable()): then we end."""
        if self.inheritable() != self.attributes or self.mounts_changed():
            return False
        for sig in spec.ignored_signals:
            disposition = self.dispositions.get(sig)
            if disposition is not None and signal.getsignal(sig) is not disposition:
                signal.signal(sig, disposition)
        os.umask(self.umask)
        return not any(signo in (PARENT_GONE, CALLER_GONE) and from_outside(code, sender)
                       for signo, code, sender in sigfd.read())


def warm_up(mnt_ns: int, pid_ns: int) -> None:
    """Run the job's start-up path once while we wait for the order. A reaper forked ahead of time shares
    its pages with the spawn server until it writes to them (reference counts, caches): better it copies
    the ones the start touches now, while idle, than on the caller's time. (Warming the whole path of a
    job measured slower: it costs more CPU than it saves time.)"""
    commands.warm_up(mnt_ns)
    _default_spec()
    wire.encode(wire.Event(wire.EventName.STARTED, {"job_pid": None, "mnt_ns": mnt_ns, "pid_ns": pid_ns,
                                                    "name": "warm-up"}))
    accounting.warm_up()


def tie_to_launcher(sock: socket.socket, parent_pidfd: int) -> linux.SignalFd:
    """Tie ourselves to the launcher before doing anything that could outlive it."""
    refuse_tracers()
    reset_for_helper(blocked=WATCHED)
    sigfd = linux.SignalFd(WATCHED)
    prctl.set_pdeathsig(PARENT_GONE)
    prctl.set_name("sandbox-reaper")
    linux.set_command_line("sandbox-reaper")
    die_of_faults()
    # The launcher may have died before PDEATHSIG was armed; then no signal will ever come.
    if select.select([parent_pidfd], [], [], 0)[0]:
        os._exit(EXIT_FAILURE)
    linux.close_fds_except({sock.fileno(), sigfd.fileno()})
    return sigfd


def refuse_tracers() -> None:
    """Not dumpable: the kernel then lets only a process with CAP_SYS_PTRACE in the user namespace we were
    started in (the host's) ptrace us, read our memory or our /proc/1/ns, environ, fd: a job of the same
    user (an ordinary user's, or one in a user namespace) or a root job without CAP_SYS_PTRACE can no longer
    stop PID 1 in a tracing stop. A root job that keeps CAP_SYS_PTRACE still can: the watchdog of whoever
    waits outside covers that (shared/unresponsive.py). The job's own exec makes it dumpable again."""
    prctl.set_dumpable(False)


def receive_order(sock: socket.socket, sigfd: linux.SignalFd) -> tuple[
        wire.Order | wire.Session, tuple[int | None, ...], int | None, int | None, socket.socket | None] | None:
    """Wait for the order, the job's descriptors, the registry directory's (launch.hand_over), a session's
    owner's (its caller's /proc/PID/status) and, for an Order that serves_more, the caller's socket; None if
    the launcher went away first."""
    while True:
        ready = select.select([sock, sigfd.fileno()], [], [])[0]
        if any(signo in (PARENT_GONE, CALLER_GONE) and from_outside(code, sender)
               for signo, code, sender in sigfd.read()):
            return None
        if sock in ready:
            try:
                received = wire.recv_kind(sock, (wire.Order, wire.Session), socket.MSG_DONTWAIT, lost=True)
            except BlockingIOError:
                continue
            if received is None:
                return None
            order, fds = received
            caller = None
            if isinstance(order, wire.Order) and order.serves_more:
                if not fds:
                    return None  # no caller's socket: nobody to serve
                caller = socket.socket(fileno=fds.pop())
            stdio = stdio_of(order.stdio, fds) if isinstance(order, wire.Order) else (None, None, None)
            extra = fds[sum(order.stdio):] if isinstance(order, wire.Order) else fds
            registry_fd = extra.pop() if extra and order.registry is not None else None
            owner_fd = extra.pop() if extra and isinstance(order, wire.Session) and order.owner is not None else None
            wire.discard(extra, at_once=True)
            return order, stdio, registry_fd, owner_fd, caller


def stdio_of(present: tuple[bool, ...], fds: list[int]) -> tuple[int | None, ...]:
    """The descriptors for 0, 1, 2 as the order says which came (None: not one; also for one it said came but
    that is missing)."""
    it = iter(fds)
    return tuple(next(it, None) if flag else None for flag in present)


class Reaper:
    """PID 1 at work: one job (its main process's exit stops everything left, as the command and
    sandbox.run want) or a session (sandbox.Job: commands come one by one over the control socket, each
    with a socket of its own for its reports, and the namespace lives until the launcher stops it or dies).
    """

    def __init__(self, sock: socket.socket, sigfd: linux.SignalFd, order: wire.Order | wire.Session,
                 mnt_ns: int, pid_ns: int, procs: mounts.Procs, owner_fd: int | None = None,
                 pristine: Pristine | None = None) -> None:
        self.sock = sock
        self.pristine = pristine  # serving one caller's jobs in turn: what each job's namespace is copied from
        self.kept = False  # this job is over and we serve the next (Exited said so)
        self.sigfd = sigfd
        self.spec: SandboxSpec = order.spec
        self.lifeline = order.lifeline
        self.session = isinstance(order, wire.Session)
        self.inherited = order.inherited  # the API's caller's attributes where they differ from ours
        # A session's owner: its caller's credentials when it asked, and their /proc file to read them again.
        self.owner = (order.owner, owner_fd) if self.session and owner_fd is not None else None
        self.mnt_ns, self.pid_ns = mnt_ns, pid_ns
        self.procs = procs  # ours, never the job's view of /proc: what we count, what we show
        self.main: Process | None = None
        self.processes: dict[int, Process] = {}  # not yet reaped
        self.stopping = Stopping(self.spec.stop_signal, self.spec.grace, self.report)
        self.caller_gone = False
        self.caller_left_by: float | None = None  # the caller is gone: by then we stop on its behalf (HANGUP_SETTLE)
        self.sock_closed = False  # our launcher's end is gone: nobody to report to
        # Signals read from the signalfd but not handled yet (a start reads them early), when we read them, and
        # whether the kernel sent them: the loop must not wait on the signalfd while some are here.
        self.arrived: list[tuple[int, float, bool]] = []
        self.relays = Relays()  # signals our launcher passes on, unless the job got them by itself
        self.all_gone = False  # waitpid said ECHILD: as PID 1 we inherit every orphan, so nothing is left
        self.done = False
        self.poller = select.poll()
        self.listing: listing.Listing | None = None  # our entry in the registry of running sandboxes
        self.command: Command | None = order.command if isinstance(order, wire.Order) else None
        self.entered = Entered(procs.own)  # processes in here that are not our children (--enter)
        self.accounting = Accounting(self.spec, pristine is not None)  # before the job's mounts hide /sys/fs/cgroup
        # The timeout, enforced here too: a job can stop its launcher (kill -STOP 0), never its PID 1.
        self.timeout_at: float | None = getattr(order, "deadline", None)

    @property
    def name(self) -> str | None:
        return self.listing.name if self.listing is not None else None

    def start(self, command: Command, stdio: tuple[int | None, ...], sock: socket.socket) -> Process:
        # Signals that reached us before the process existed were not sent to it. Those read right after it
        # started may have come just before: counted as not its own, a relay of one reaches it (a
        # double at worst, never none).
        self.take_signals()
        process = commands.start(command, stdio, self.spec.ignored_signals, self.mnt_ns, sock, self.spec,
                                 self.accounting.oom_score_adj, self.inherited)
        self.take_signals()
        process.started = time.monotonic()
        self.accounting.start()
        self.processes[process.pid] = process
        self.report(sock, wire.EventName.STARTED, creds_pid=process.pid, job_pid=None, mnt_ns=self.mnt_ns,
                    pid_ns=self.pid_ns, name=self.name)
        return process

    def loop(self) -> int:
        """Until every process is gone and the sandbox was stopped (or its main process ended)."""
        self.poller.register(self.sigfd.fileno(), select.POLLIN)
        self.poller.register(self.sock.fileno(), select.POLLIN)
        if self.listing is not None:
            self.poller.register(self.listing.fd, select.POLLIN)
        listening = True
        while not self.done:
            if (self.caller_gone or self.caller_left_by is not None) and listening:
                self.poller.unregister(self.sock.fileno())  # its end of file would wake us forever
                listening = False
            deadlines = [d for d in (self.stopping.deadline, self.relays.next_due(), self.caller_left_by,
                                     self.timeout_at,
                                     self.listing.deadline() if self.listing is not None else None,
                                     *(p.kill_at for p in self.processes.values())) if d is not None]
            wait = 0.0 if self.arrived else linux.wait_seconds(min(deadlines) if deadlines else None)
            ready = dict(self.poller.poll(None if wait is None else wait * 1000))
            # Signals first: a relay from the launcher must be matched against a group-wide signal that
            # is already queued for us.
            self.read_signals()
            if listening and self.sock.fileno() in ready and not self.caller_gone:
                self.read_messages(self.sock, self.main)
            for process in list(self.processes.values()):
                if process.sock is not self.sock and process.sock.fileno() in ready:
                    self.read_messages(process.sock, process)
            if self.listing is not None:
                self.serve_queries(ready)
            if self.entered.any_ready(ready):
                self.reap()
            for relay in self.relays.take_due():
                self.forward(relay.target, relay.signo, "launcher")
            now = time.monotonic()
            if self.caller_left_by is not None and now >= self.caller_left_by:
                self.caller_died()
            for process in list(self.processes.values()):
                if process.kill_at is not None and now >= process.kill_at:
                    process.kill_at = None
                    kill(process.pid, signal.SIGKILL)
            if self.timeout_at is not None and now >= self.timeout_at:
                self.time_is_up()
            if self.stopping.expired(now):
                self.kill_all(wire.StopReason.GRACE_OVER)
            if self.all_gone and (self.stopping.reason or (self.main is not None and self.main.status is not None)):
                self.done = True
        status = self.main.status if self.main is not None and self.main.status is not None else 0
        if self.stopping.reason in CONTINUED_AT_THE_END:
            continue_our_group()
        self.kept = self.fit_for_next() and self.pristine is not None and self.pristine.leave()
        self.send(self.sock, wire.Exited(status, self.accounting.total(), self.kept))
        self.accounting.leave()
        return 0

    def fit_for_next(self) -> bool:
        """Whether we may serve the caller's next job: we reaped every process of this one (as PID 1, nothing
        else is left in our PID namespace), nothing entered from outside, the caller still listens, and the
        sandbox changed nothing in us that a mount namespace of its own does not hold (reusable()). Nothing else
        means our /proc lists no other process: one that joined our PID namespace from outside (setns through
        a job's /proc/PID/ns/pid, as nsenter does) is no child of ours, and no wait tells of it."""
        return (self.pristine is not None and self.all_gone and not self.session and not self.sock_closed
                and not self.caller_gone and self.caller_left_by is None and reusable(self.spec)
                and (self.listing is None or not self.listing.answered) and self.alone())

    def alone(self) -> bool:
        try:
            return self.procs.own.pids() == [1]
        except OSError:
            return False

    # -- what arrives ------------------------------------------------------------------------------

    def take_signals(self) -> None:
        """Move what the signalfd holds into self.arrived, stamped with the time we learnt of it. The caller's
        death counts only as the kernel tells it: a process in here may send PARENT_GONE or CALLER_GONE too."""
        now = time.monotonic()
        self.arrived.extend((signo, now, code == SI_KERNEL) for signo, code, sender in self.sigfd.read()
                            if signo not in (PARENT_GONE, CALLER_GONE) or from_outside(code, sender))

    def read_signals(self) -> None:
        self.take_signals()
        arrived, self.arrived = self.arrived, []
        for signo, when, by_kernel in arrived:
            if signo == signal.SIGCHLD:
                self.reap()
            elif signo == PARENT_GONE:
                # The API's reaper belongs to the caller holding its socket, not to the spawn server that
                # forked it: if the server dies, the caller is still there to wait for the job.
                if self.lifeline == "parent":
                    self.caller_died()
            elif signo == CALLER_GONE:
                self.caller_left()
            else:
                self.arrival(signo, when, by_kernel)

    def arrival(self, signo: int, when: float, by_kernel: bool) -> None:
        """A signal reached us. Only if the launcher relays it too was it sent to the whole group (relay.py)."""
        if self.relays.arrived(signo, when, by_kernel) is not None:
            self.delivered(signo)

    def confirm(self, by_kernel: bool = False) -> None:
        """The caller stops after its Ctrl+C, or died (of a signal, perhaps): the ending signals that reached
        us lately reached the job as well (by_kernel: those the kernel sent our group)."""
        for process in list(self.processes.values()):
            for signo in self.relays.confirm(process, (*ENDING, self.spec.stop_signal), by_kernel):
                self.delivered(signo)

    def delivered(self, signo: int) -> None:
        if self.stopping.delivered(signo):
            self.kill_all(wire.StopReason.INTERRUPTED_REPEATEDLY)

    def read_messages(self, sock: socket.socket, process: Process | None) -> None:
        """What a launcher asks, on the control socket (process: the main one, if any) or a command's own."""
        control = sock is self.sock
        while not self.done:
            try:
                message, fds, _ = wire.recv(sock, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except ValueError:
                continue  # not one of ours; the sender learns nothing from us
            except (wire.Closed, ConnectionError):
                if control:
                    self.caller_left()
                else:
                    self.poller.unregister(sock.fileno())  # the caller let go of this command; it runs on
                return
            if isinstance(message, wire.Run) and control and self.session:
                self.run_command(message, fds)
                continue
            wire.discard(fds, at_once=True)
            if isinstance(message, (wire.Signal, wire.Relay)) and not 0 < message.signo <= signal.SIGRTMAX:
                continue  # no signal: os.kill would raise in PID 1, whose end SIGKILLs the job
            if isinstance(message, wire.Signal) and process is not None:
                self.forward(process, message.signo, message.origin)
            elif isinstance(message, wire.Relay) and process is not None and process.status is None:
                if self.relays.request(process, message.signo):
                    self.delivered(message.signo)
            elif isinstance(message, wire.Stop):
                if message.after_interrupt:
                    self.confirm()
                signal_it = self.stopping.signal_wanted(message.after_interrupt)
                if control:
                    self.begin_stop(message.reason, message.grace, signal_it)
                elif process is not None:
                    self.stopping.begin_for(process, message.grace, signal_it)

    # -- the registry of running sandboxes (listing.py) ---------------------------------------------------

    def serve_queries(self, ready: dict[int, int]) -> None:
        assert self.listing is not None
        if self.listing.fd in ready:
            self.listing.accept(self.poller)
        for fd in list(self.listing.connections):
            if fd in ready and fd in self.listing.connections:
                self.listing.serve(fd, self.poller, self.about, self.stop_requested)
        self.listing.expire(time.monotonic(), self.poller)

    def about(self) -> tuple[wire.About, int | None]:
        """What we tell sandboxed-run --list and co., and the main process's PID (None: it has ended)."""
        main = self.main if self.main is not None and self.main.status is None else None
        reason = self.stopping.reason
        about = wire.About(self.name or "", self.listing.started if self.listing else time.time(),
                           list(self.command.argv) if self.command is not None else None, self.job_cwd(main),
                           "stopping" if reason else "running", str(reason) if reason else None, self.spec,
                           self.procs.own.namespaces(), self.procs.own.mount_table())
        return about, main.pid if main is not None else None

    def job_cwd(self, main: Process | None) -> bytes:
        """Where the job is: its main process's working directory now, else where its last command started."""
        if main is not None:
            try:
                return self.procs.own.cwd(main.pid)
            except OSError:
                pass
        if self.command is not None:
            return self.command.cwd
        try:
            return os.getcwdb()  # commands.start went there for the last command
        except OSError:
            return b"/"

    def time_is_up(self) -> None:
        """The order's deadline passed: the same stop as the launcher asks for at its timeout, which it may
        not be able to ask (stopped by the job, say). Our process group is the launcher's (hand_over): once
        continued, it can follow the stop and report it."""
        self.timeout_at = None
        self.begin_stop(wire.StopReason.TIMEOUT)
        continue_our_group()

    def stop_requested(self, grace: float | None) -> None:
        """sandboxed-run --stop: the same stop as a timeout's, for its own reason."""
        self.begin_stop(wire.StopReason.REQUESTED, grace)

    def begin_stop(self, reason: wire.StopReason, grace: float | None = None, send_signal: bool = True) -> None:
        """Stop the whole sandbox (stopping.begin); SIGKILL at once for no grace period."""
        self.stopping.begin(reason, grace, send_signal)
        if self.stopping.expired(time.monotonic()):
            self.kill_all(reason)
        else:
            # Nothing may be left to get the stop signal (a session that ran no command, or whose commands
            # have all ended before any reap found none): no SIGCHLD would come to say so, and we would wait
            # the whole grace period for nothing.
            self.reap()

    def run_command(self, message: wire.Run, fds: list[int]) -> None:
        """A session's next command: the last descriptor is the socket for its reports."""
        if not fds or self.stopping.reason:
            wire.discard(fds, at_once=True)
            return
        sock = socket.socket(fileno=fds.pop())
        stdio = stdio_of(message.stdio, fds)
        wire.discard([fd for fd in fds if fd not in stdio], at_once=True)  # more than the Run said: nobody's
        try:
            try:
                self.check_owner()
            except SandboxError:
                wire.discard([fd for fd in stdio if fd is not None], at_once=True)
                raise
            self.start(message.command, stdio, sock)  # it takes the stdio descriptors over
        except SandboxError as exc:
            self.send(sock, wire.Failed(exc.exit_code, exc.message, exc.errno or 0))
            sock.close()
            return
        self.poller.register(sock.fileno(), select.POLLIN)

    def check_owner(self) -> None:
        """A session's commands are the caller's: refused once the caller's credentials are no longer those the
        session was started with (a program that dropped privileges must not get them back through it)."""
        if self.owner is None:
            return
        from ..shared import credentials

        expected, fd = self.owner
        try:
            now = credentials.status_fields(credentials.read_file(fd))
        except OSError:
            raise SandboxError("refused: the caller of this sandbox.Job has ended") from None
        changed = credentials.difference(expected, now)
        if changed is not None:
            raise SandboxError(f"refused: the caller's {changed} changed since this sandbox.Job started, and it "
                               "lends none of its own; start a new sandbox.Job for this command")

    def forward(self, process: Process, sig: int, origin: str) -> None:
        if process.status is not None or process.pid not in self.processes:
            return
        if not kill(process.pid, sig):
            return
        self.report(process.sock, wire.EventName.SIGNAL, signal=signal_name(sig), origin=origin)
        self.delivered(sig)

    def caller_left(self) -> None:
        """The caller is gone (its end of our socket closed, or the spawn server says so). A hangup of the terminal
        it led may still be on its way, which says whether the job has its stop signal already: we stop on its
        behalf once PARENT_GONE comes (the kernel sends it after the hangup), or HANGUP_SETTLE seconds passed.
        Without a grace period the stop is SIGKILL whatever reached the job: at once."""
        if self.caller_left_by is None and not self.caller_gone:
            if self.spec.grace == 0:
                self.caller_died()
                return
            self.caller_left_by = time.monotonic() + HANGUP_SETTLE

    def caller_died(self) -> None:
        if self.caller_gone:
            return
        self.caller_gone = True
        self.caller_left_by = None
        # The caller of the API dies of SIGTERM or SIGHUP by default: the job got it too. The command dies of
        # nothing it could pass on, only SIGKILL; then what the kernel sent our group reached the job (the hangup
        # of the terminal the command led: ssh -t, tmux, script).
        self.confirm(by_kernel=self.lifeline != "socket")
        # A job already asked to end (a Ctrl+C, a group's SIGTERM) is cleaning up: a stop signal on top
        # would cut bash's trap.
        self.begin_stop(wire.StopReason.CALLER_DIED, send_signal=self.stopping.signal_wanted(True))

    # -- what ends -----------------------------------------------------------------------------------

    def reap(self) -> None:
        while True:
            try:
                # A session's commands each report their own usage: wait4 says what each used.
                pid, status, rusage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                # A process in here that is not our child came through our pidfd (--enter), which only a
                # client we answered got: without one, no child of ours means nothing is left.
                self.all_gone = not (self.listing is not None and self.listing.answered
                                  and self.entered.alive(self.poller))
                break
            if pid == 0:
                break
            self.accounting.reaped(rusage)
            process = self.processes.get(pid)
            if process is not None:
                process.status = status
                self.report_exit(process, rusage)
        main = self.main
        if main is not None and main.status is not None and not self.all_gone and self.stopping.reason is None:
            reason = wire.StopReason.OUT_OF_MEMORY if main.out_of_memory else wire.StopReason.MAIN_EXITED
            self.stopping.begin(reason)
            if self.stopping.expired(time.monotonic()):
                self.kill_all(reason)

    def report_exit(self, process: Process, rusage: object = None) -> None:
        self.processes.pop(process.pid, None)
        fields = describe_status(process.status)
        if not self.done and self.accounting.killed_for_memory(process.status):
            process.out_of_memory = True
            fields["reason"] = wire.StopReason.OUT_OF_MEMORY
        self.report(process.sock, wire.EventName.EXITED, **fields)
        if process.sock is not self.sock:
            usage = self.accounting.of_command(process.started, rusage) if self.session else None
            self.send(process.sock, wire.Exited(process.status, usage))  # type: ignore[arg-type]
            try:
                self.poller.unregister(process.sock.fileno())
            except KeyError:
                pass
            process.sock.close()

    def kill_all(self, reason: wire.StopReason) -> None:
        """SIGKILL everything and reap it; the processes the launcher waits for learn how they ended, and we
        are done. (A process stuck in the kernel past REAP_AFTER_KILL is left to the kernel, which reaps it
        when we exit, unless the launcher waits for it.)"""
        self.stopping.kill_all(self.procs.own, reason)
        self.done = True  # from here on a SIGKILL is ours, never the OOM killer's
        deadline = time.monotonic() + REAP_AFTER_KILL
        while True:
            self.reap()
            if self.all_gone or (not self.processes and time.monotonic() >= deadline):
                break
            wait = 1.0 if self.processes else max(0.0, deadline - time.monotonic())
            # Entered processes are not our children (no SIGCHLD): their pidfds say when they are gone.
            select.select([self.sigfd.fileno(), *self.entered.fds()], [], [], wait)
            self.take_signals()  # nothing but the end matters now

    # -- talking to the launcher -------------------------------------------------------------------

    def send(self, sock: socket.socket, message: wire.Message, creds_pid: int | None = None) -> None:
        if sock is self.sock and self.sock_closed:
            return
        try:
            wire.send(sock, message, creds_pid=creds_pid)
        except OSError:
            if sock is self.sock:
                self.sock_closed = True
                self.caller_left()  # nobody listens any more: the same as the caller's death

    def report(self, sock: socket.socket | None, event: wire.EventName, creds_pid: int | None = None,
               **fields: object) -> None:
        """An event, to sock (None: the control socket). A started event names the process by its PID in here;
        the kernel translates it for the receiver."""
        fields["time"] = time.time()
        self.send(sock or self.sock, wire.Event(event, fields), creds_pid=creds_pid)


# /proc/self files of what our children inherit from us that another process may change (Pristine.inheritable).
INHERITED_FILES = ("self/limits", "self/oom_score_adj", "self/coredump_filter", "self/timerslack_ns", "self/cgroup")

# What a job of a reaper serving more may ask for: all of it lives in the job's processes or its mount namespace.
# Anything else (a network, a user namespace, a cgroup, other namespaces, a hostname, a new option) takes a
# reaper of its own, which ends with the sandbox.
PER_JOB = frozenset({"name", "grace", "stop_signal", "ignored_signals", "umask", "tmpfs", "bind", "ro_bind", "dir",
                     "symlink", "read_only", "mkdir", "propagation", "proc", "nice", "ionice", "rlimit",
                     "no_new_privs", "cap_drop", "cap_keep", "user", "group", "extra_groups", "syscall_filter",
                     "landlock_read", "landlock_write", "syscall_errno"})


def reusable(spec: SandboxSpec) -> bool:
    """Whether a reaper that ran a sandbox of this spec may serve another: every option not PER_JOB unused."""
    default = _default_spec()
    return all(getattr(spec, name) == getattr(default, name) for name in SandboxSpec.__slots__
               if name not in PER_JOB and not name.startswith("_"))


_DEFAULT: list[SandboxSpec] = []


def _default_spec() -> SandboxSpec:
    if not _DEFAULT:
        _DEFAULT.append(SandboxSpec.build({}))
    return _DEFAULT[0]


# Stops decided outside the job: once the sandbox is gone, whoever waits for it (the launcher, the caller of
# the API, its spawn server, the hook monitor) must be able to report, even if the job stopped them.
CONTINUED_AT_THE_END = (wire.StopReason.TIMEOUT, wire.StopReason.REQUESTED, wire.StopReason.CALLER_DIED)


def continue_our_group() -> None:
    """SIGCONT to our process group: the launcher's (or the API caller's), which the job shares and can stop
    with kill -STOP 0 (as a terminal's Ctrl+Z stops it). We cannot name the launcher (it is outside our
    PID namespace), but the kernel delivers to the group across namespaces, and SIGCONT within a session
    needs no other permission."""
    try:
        os.kill(0, signal.SIGCONT)
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit("the reaper is started by sandboxed-run, not on its own")

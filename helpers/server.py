"""The spawn server: a small single-threaded process that forks reapers for the Python API.

A program using the API may be large and multi-threaded; forking reapers from it would be slow,
and PR_SET_PDEATHSIG would follow whichever of its threads asked. So the API starts this server
once per process (a fresh interpreter, over an inherited socketpair that only the caller holds)
and asks it for each sandbox. The server hands the new reaper's socket and pidfd straight to the
caller, who then talks to the reaper directly: a reaper of the API belongs to its caller, and
outlives this server if the server is killed.

The server refuses to outlive its caller: it watches a pidfd of the caller's process (and has
PDEATHSIG armed), and when the caller is gone, or closes the channel, it tells every reaper, waits
for them, and exits. A reaper that has not ended its sandbox within the grace period and a margin
(its job stopped it: ptrace, the cgroup freezer) is SIGKILLed then (shared/unresponsive.py).
A request that fails (a descriptor that is not open, a reaper that cannot be made) fails alone: the
answer is an error for that request, and the other sandboxes go on.

On-exit hooks: the caller runs a job's hooks when it collects the job, and first claims them here.
Hooks nobody claimed when the caller died run here once their sandbox is gone: exactly once, either way.

The server lends nothing of its own: it serves a request only if the kernel says it comes from the caller,
whose thread still holds the credentials the server was started for (caller.py); the job takes the
caller's nice, resource limits and oom_score_adj where they differ from ours. When the caller's
credentials change, the API starts another server and retires this one (Retire): it takes no more
requests, and goes on serving what it started (the reapers' caller-death notice, the hooks, the claims)
until all of it is over.
"""

from __future__ import annotations

import errno
import gc
import os
import select
import signal
import socket
import sys
import time

import prctl

from . import launch
from .caller import Caller, Refused
from .reaper.main import reusable
from .shared import hooks, linux, unresponsive, wire
from .shared.errors import EXIT_FAILURE, SandboxError, host_error
from .shared.signals import CALLER_GONE, FORWARDED, PARENT_GONE, SI_USER, reset_for_helper

# Reapers that served a job and wait for the caller's next, at most: as many as run at once in a busy caller
# (its threads, or its tasks); beyond that they end. Each holds its memory: one that waited IDLE_FOR seconds ends.
MAX_IDLE = 8
IDLE_FOR = 2.0

TYPE_CHECKING = False  # typing stays out of the server, whose every reaper is a fork of it
if TYPE_CHECKING:
    from .scope import Cgroup


def main(channel_fd: int, caller_pidfd: int, caller_pid: int, starter: int) -> None:
    """Serve the caller (caller_pid, with a pidfd of it) over channel_fd; starter: the caller's thread that
    started us, whose credentials are those we have (and lend to no other)."""
    for sig in FORWARDED:
        # A Ctrl+C, or a signal to the caller's whole process group, is the caller's business and its
        # jobs'; we only go when the caller goes.
        signal.signal(sig, signal.SIG_IGN)
    reset_for_helper()
    linux.fill_closed_stdio()  # our signalfd and sockets must not become some reaper's stderr
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD, PARENT_GONE})
    sigfd = linux.SignalFd((signal.SIGCHLD, PARENT_GONE))
    prctl.set_pdeathsig(PARENT_GONE)
    prctl.set_name("sandbox-server")
    linux.set_command_line("sandbox-server")
    channel = socket.socket(fileno=channel_fd)
    channel.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # before Ready: the kernel names every sender
    if select.select([caller_pidfd], [], [], 0)[0]:
        return  # the caller died before PDEATHSIG was armed
    caller = Caller(caller_pid, caller_pidfd, starter)
    gc.freeze()  # forked reapers then share the heap instead of copying every page a collection touches
    server = Server(channel, caller, sigfd)
    wire.send(channel, wire.Ready(os.getpid()))
    server.make_spare()
    server.serve()


class Served:
    """A reaper we forked, and what we keep for its sandbox until we reap it: one record per sandbox."""

    __slots__ = ("pid", "pidfd", "grace", "cgroup", "ticket", "through_parent", "control", "mounts_seen", "idle_until")

    def __init__(self, pid: int, pidfd: int, mounts_seen: int = 0) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.control: socket.socket | None = None  # our socket to it, kept while it serves the caller's jobs in turn
        self.mounts_seen = mounts_seen  # how many changes of our mount table its copy includes (Spare.changes)
        self.idle_until = 0.0  # once idle: when it ends unless the caller's next job came
        self.grace: float | None = None  # its sandbox's grace period, once it has an order (None: the spare)
        self.cgroup: Cgroup | None = None  # its sandbox's cgroup, removed once it is reaped
        self.ticket = 0  # the ticket of its on-exit hooks (0: none)
        self.through_parent = False  # pid is a user-namespace parent that forked the reaper, not the reaper


class KeptHooks:
    """On-exit hooks by ticket (sent with Spawned; PIDs get reused) until the caller claims them, and the tickets
    whose sandbox is gone: those a dead caller never claimed run here, exactly once."""

    def __init__(self) -> None:
        self.waiting: dict[int, list[str]] = {}
        self.ended: set[int] = set()
        self.next_ticket = 1

    def __bool__(self) -> bool:
        return bool(self.waiting)

    def keep(self, on_exit: tuple[str, ...]) -> int:
        ticket, self.next_ticket = self.next_ticket, self.next_ticket + 1
        self.waiting[ticket] = list(on_exit)
        return ticket

    def claim(self, ticket: int) -> None:
        """The caller runs them itself."""
        self.waiting.pop(ticket, None)
        self.ended.discard(ticket)

    def sandbox_ended(self, ticket: int) -> bool:
        """Their sandbox is gone; True if the hooks are still unclaimed."""
        if ticket in self.waiting:
            self.ended.add(ticket)
            return True
        return False

    def run_ended(self) -> None:
        """The unclaimed hooks of the sandboxes that are gone. The job's status went to the caller, so only the
        stop reason is known."""
        for ticket in sorted(self.ended):
            commands = self.waiting.pop(ticket)
            try:
                hooks.run_hooks(commands, hooks.environment(None, None, wire.StopReason.CALLER_DIED), None,
                                prog="sandbox")
            except BaseException:  # noqa: BLE001 - a hook must never take the server, and the other sandboxes, down
                pass
        self.ended.clear()


class Spare:
    """A reaper forked ahead of the next request, its namespaces ready: the fork and the namespace set-up are
    then off the caller's path. Its mount table is a copy made when it was forked, so it is only used if ours
    has not changed since (the mountinfo file polls POLLPRI on a change)."""

    def __init__(self) -> None:
        self.ready: tuple[int, int, socket.socket] | None = None
        self.ready_seen = 0
        self.mountinfo = os.open("/proc/self/mountinfo", os.O_RDONLY | os.O_CLOEXEC)
        self.mount_watch = select.poll()
        self.mount_watch.register(self.mountinfo, select.POLLPRI | select.POLLERR)
        self.changes = 0  # changes of our mount table seen so far (a poll reports each once)

    def seen(self) -> int:
        """How many changes of our mount table there have been: a reaper forked now has them all in its copy."""
        if self.mount_watch.poll(0):
            self.changes += 1
        return self.changes

    def take(self) -> tuple[int, int, socket.socket] | None:
        """The spare, if it is still as good as a fresh one; None otherwise (a stale one is dropped)."""
        spare, self.ready = self.ready, None
        if spare is not None:
            pid, pidfd, sock = spare
            stale = self.seen() != self.ready_seen or select.select([pidfd], [], [], 0)[0]
            if not stale:
                return spare
            sock.close()  # it sees end of file and exits; SIGCHLD reaps it
        return None

    def drop(self) -> None:
        if self.ready is not None:
            self.ready[2].close()  # it sees end of file and exits; SIGCHLD reaps it
            self.ready = None


class Overdue:
    """Once released: the reapers told to stop, each until it ends, for at most its grace and the margin; past
    that, SIGKILLed (and thawed) again and again, said once each (shared/unresponsive.py)."""

    def __init__(self) -> None:
        self.watched: dict[int, tuple[int, float, float]] = {}  # pidfd -> (pid, when it is overdue, how long it had)
        self.told: set[int] = set()

    def __bool__(self) -> bool:
        return bool(self.watched)

    def watch(self, reaper: int, pidfd: int, grace: float, poller: select.poll) -> None:
        """Watch this reaper (the pidfd is taken over) until it ends."""
        due = unresponsive.due(grace)
        if due is None:
            os.close(pidfd)  # a grace without limit: it has all the time it wants
            return
        self.watched[pidfd] = (reaper, due, due - time.monotonic())
        poller.register(pidfd, select.POLLIN)

    def next_due(self) -> float | None:
        return min((due for _, due, _ in self.watched.values()), default=None)

    def check(self, ready: dict[int, int], poller: select.poll) -> None:
        """Forget the reapers that ended; SIGKILL (and thaw) those past their time, saying so once each."""
        now = time.monotonic()
        for pidfd, (reaper, due, allowed) in list(self.watched.items()):
            if pidfd in ready or select.select([pidfd], [], [], 0)[0]:
                poller.unregister(pidfd)
                os.close(pidfd)
                del self.watched[pidfd]
                self.told.discard(pidfd)
            elif now >= due:
                thawed = unresponsive.kill(pidfd, reaper)
                self.watched[pidfd] = (reaper, now + unresponsive.RETHAW, allowed)
                if pidfd not in self.told:
                    self.told.add(pidfd)
                    from .shared.status import say

                    say(unresponsive.line(reaper, allowed, thawed), "sandbox")


class Server:
    """The caller's requests, the sandboxes it started, and the caller's end."""

    def __init__(self, channel: socket.socket, caller: Caller, sigfd: linux.SignalFd) -> None:
        self.channel = channel
        # PARENT_GONE counts only as the kernel sends it: from the dying caller, named by its PID. (If the caller
        # died before this, its pidfd says so.)
        self.caller = caller
        self.caller_pidfd = caller.pidfd
        self.sigfd = sigfd
        self.sandboxes: dict[int, Served] = {}  # by pid: the reapers (or their parents) not yet reaped
        self.hooks = KeptHooks()
        self.spare = Spare()
        self.overdue = Overdue()
        self.released = False  # the channel is closed: no more requests, every sandbox is stopped
        self.retired = False  # another server takes the caller's requests: we serve what we started, and go
        self.caller_dead = False
        self.netlink_loaded: set[str] = set()  # "lo", "veth": what load_netlink brought in
        self.poller = select.poll()
        self.idle: list[Served] = []  # reapers that served a job of the caller and wait for its next (Idle)
        self.controls: dict[int, Served] = {}  # by our socket's descriptor: the reapers we keep a socket to

    def serve(self) -> None:
        poller = self.poller
        for fd in (self.channel.fileno(), self.caller_pidfd, self.sigfd.fileno()):
            poller.register(fd, select.POLLIN)
        # Done once nothing of ours runs and no unclaimed hooks wait to see whether the caller lives.
        while not ((self.released or self.retired) and not self.sandboxes and not self.overdue
                   and (self.caller_dead or not self.hooks)):
            wake = self.overdue.next_due()
            if self.idle and (wake is None or self.idle[0].idle_until < wake):
                wake = self.idle[0].idle_until  # the one idle longest ends first
            ready = dict(poller.poll(None if wake is None else (linux.wait_seconds(wake) or 0.0) * 1000))
            while self.idle and self.idle[0].idle_until <= time.monotonic():
                self.let_go(self.idle[0])
            if self.overdue:
                self.overdue.check(ready, poller)
            for signo, code, sender in self.sigfd.read():
                if signo == signal.SIGCHLD:
                    self.reap()
                elif signo == PARENT_GONE and code == SI_USER and sender == self.caller.pid:
                    self.release(poller)
            if self.caller_pidfd in ready and not self.caller_dead:
                self.caller_dead = True
                poller.unregister(self.caller_pidfd)
                self.release(poller)
                self.run_orphaned_hooks()
            for fd in [fd for fd in ready if fd in self.controls]:
                self.hear_reaper(self.controls[fd])  # before a request: an Idle said first is taken first
            if not self.released and self.channel.fileno() in ready:
                self.serve_request(poller)

    def serve_request(self, poller: select.poll) -> None:
        try:
            message, fds, sender = wire.recv_from(self.channel)
        except (wire.Closed, ConnectionError):
            self.release(poller)
            return
        except ValueError:
            return
        if isinstance(message, wire.TakeHooks):
            self.hooks.claim(message.ticket)
        elif isinstance(message, wire.Retire):
            self.retire()
        elif isinstance(message, wire.Spawn):
            self.spawn(message, fds, sender)
            self.make_spare()
        wire.discard(fds, at_once=True)

    def spawn(self, request: wire.Spawn, fds: list[int], sender: tuple[int, int, int] | None) -> None:
        owner_fd = None
        try:
            if self.retired:
                raise Refused("refused: this sandbox spawn server was retired (its caller's credentials changed); "
                              "ask through the sandbox API, which has started another")
            inherited = self.caller.check(sender, request.tid)
            # The order's fields that say what the job inherits are ours to fill, never the request's.
            if isinstance(request.order, wire.Session):
                owner, owner_fd = self.caller.owner()
                order = request.order.replace(inherited=inherited, owner=owner)
                fds = [owner_fd]  # a session's commands bring their descriptors later; this one comes first
            else:
                order = request.order.replace(inherited=inherited)
        except Refused as exc:
            self.reply(wire.Failed(EXIT_FAILURE, str(exc), errno.EPERM))
            return
        except OSError as exc:
            self.reply(wire.Failed(EXIT_FAILURE, host_error(exc, "cannot check the caller's credentials").message,
                                   exc.errno or 0))
            return
        try:
            self.serve_order(order, request.on_exit, fds)
        finally:
            if owner_fd is not None:
                os.close(owner_fd)

    def serve_order(self, order: wire.Order | wire.Session, on_exit: tuple[str, ...], fds: list[int]) -> None:
        needs = "veth" if order.spec.linked else "lo" if order.spec.net == "none" else None
        if needs is not None and needs not in self.netlink_loaded:
            self.load_netlink(needs)
        try:
            userns = order.spec.userns_ids
            if isinstance(order, wire.Order) and userns is None and reusable(order.spec):
                pid, pidfd, sock = self.serve_in_turn(order, fds)
            else:
                # A user namespace's reaper is forked fresh through its own parent: the spare's namespaces are ours.
                pid, pidfd, sock = self.fork_reaper(userns, order.pgid, bool(order.spec.cgroup_limits)) \
                    if userns is not None else self.take_reaper()
                group = None
                try:
                    group = launch.place(order, pid, sock, userns is not None)
                    launch.hand_over(sock, pid, order, tuple(fds))
                except BaseException:
                    sock.close()  # it sees end of file and exits; SIGCHLD reaps it
                    if group is not None:
                        group.remove()
                    raise
                self.sandboxes[pid].cgroup = group
            sandbox = self.sandboxes[pid]
            sandbox.grace = order.spec.grace
            sandbox.through_parent = userns is not None
        except SandboxError as exc:
            self.reply(wire.Failed(exc.exit_code, exc.message, exc.errno or 0))
            return
        except OSError as exc:
            self.reply(wire.Failed(EXIT_FAILURE, host_error(exc, "cannot start the sandbox").message, exc.errno or 0))
            return
        if on_exit:
            sandbox.ticket = self.hooks.keep(on_exit)
        self.reply(wire.Spawned(pid, sandbox.ticket), [sock.fileno(), pidfd])
        sock.close()

    def load_netlink(self, needs: str) -> None:
        """The caller wants --net none ("lo") or veth, bridge:NAME ("veth", which needs more): load pyroute2's
        netlink part here once, so that every reaper forked from now on has it (this request's ready reaper,
        forked earlier, loads it itself)."""
        self.netlink_loaded.update(("lo", "veth") if needs == "veth" else (needs,))
        try:
            if needs == "veth":
                from .reaper.veth import load as load_netlink
            else:
                from .reaper.network import load_netlink
            load_netlink()
        except Exception:  # noqa: BLE001 - the reaper tries again, and reports what fails
            return
        gc.freeze()  # as at start: the new objects stay shared with the reapers

    def reply(self, message: wire.Message, fds: list[int] | None = None) -> None:
        try:
            wire.send(self.channel, message, fds=fds or ())
        except OSError:
            pass  # the caller is gone; its pidfd or the channel's end of file tells us in a moment

    def take_reaper(self) -> tuple[int, int, socket.socket]:
        return self.spare.take() or self.fork_reaper()

    def fork_reaper(self, userns: tuple[int, int] | None = None, pgid: int | None = None,
                    held: bool = False) -> tuple[int, int, socket.socket]:
        seen = self.spare.seen() if userns is None else 0
        pid, pidfd, sock = launch.fork(userns, pgid, held)
        self.sandboxes[pid] = Served(pid, pidfd, seen)
        return pid, pidfd, sock

    def serve_in_turn(self, order: wire.Order, fds: list[int]) -> tuple[int, int, socket.socket]:
        """Hand the order to a reaper that serves the caller's jobs in turn: one that is idle, else the spare, else
        a fresh one. We keep our socket to it (where it says Idle); the caller gets its own, returned here."""
        sandbox = self.take_idle()
        if sandbox is None:
            pid, _, control = self.take_reaper()
            sandbox = self.sandboxes[pid]
            sandbox.control = control
            self.controls[control.fileno()] = sandbox
            self.poller.register(control.fileno(), select.POLLIN)
        assert sandbox.control is not None
        ours, theirs = wire.pair()
        try:
            launch.hand_over(sandbox.control, sandbox.pid, order.replace(serves_more=True), tuple(fds), theirs.fileno())
        except BaseException:
            ours.close()
            self.let_go(sandbox)
            raise
        finally:
            theirs.close()
        return sandbox.pid, sandbox.pidfd, ours

    def take_idle(self) -> Served | None:
        """The idle reaper that served last, if its copy of our mounts is still current (the others are let go)."""
        while self.idle:
            sandbox = self.idle.pop()
            if sandbox.mounts_seen == self.spare.seen() and not select.select([sandbox.pidfd], [], [], 0)[0]:
                return sandbox
            self.let_go(sandbox)
        return None

    def hear_reaper(self, sandbox: Served) -> None:
        """Our socket to a reaper that serves in turn is readable: Idle (its sandbox is over), or its end."""
        assert sandbox.control is not None
        try:
            message, fds, _ = wire.recv(sandbox.control, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except (wire.Closed, ConnectionError, ValueError):
            self.let_go(sandbox)
            return
        wire.discard(fds, at_once=True)
        if not isinstance(message, wire.Idle) or sandbox.grace is None:
            return
        sandbox.grace = None
        ticket, sandbox.ticket = sandbox.ticket, 0
        if ticket and self.hooks.sandbox_ended(ticket):
            self.run_orphaned_hooks()
        if self.released or self.retired or len(self.idle) >= MAX_IDLE or sandbox.mounts_seen != self.spare.seen():
            self.let_go(sandbox)
        else:
            sandbox.idle_until = time.monotonic() + IDLE_FOR
            self.idle.append(sandbox)

    def let_go(self, sandbox: Served) -> None:
        """Close our socket to a reaper that serves in turn: an idle one exits (a busy one ends its sandbox first,
        then exits); SIGCHLD reaps it."""
        if sandbox in self.idle:
            self.idle.remove(sandbox)
        if sandbox.control is not None:
            self.controls.pop(sandbox.control.fileno(), None)
            try:
                self.poller.unregister(sandbox.control.fileno())
            except KeyError:
                pass
            sandbox.control.close()
            sandbox.control = None

    def make_spare(self) -> None:
        if self.spare.ready is None and not self.released and not self.retired and os.geteuid() == 0:
            # (Not root: every request has a user namespace, and a reaper of its own.)
            try:
                self.spare.ready = self.fork_reaper()
                self.spare.ready_seen = self.sandboxes[self.spare.ready[0]].mounts_seen
            except OSError:
                self.spare.ready = None  # the next request forks its own and reports the error

    def reap(self) -> None:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            sandbox = self.sandboxes.pop(pid, None)
            if sandbox is None:
                continue
            self.let_go(sandbox)
            os.close(sandbox.pidfd)
            if sandbox.cgroup is not None:
                sandbox.cgroup.remove()  # the sandbox is gone: the last step of its teardown
            if sandbox.ticket and self.hooks.sandbox_ended(sandbox.ticket):
                self.run_orphaned_hooks()

    def retire(self) -> None:
        """Take no more requests; what we started goes on until it ends (serve() then returns)."""
        self.retired = True
        self.spare.drop()
        for sandbox in list(self.idle):
            self.let_go(sandbox)

    def release(self, poller: select.poll) -> None:
        """The caller is gone or let us go: stop every sandbox; serve no more requests."""
        if self.released:
            return
        self.released = True
        poller.unregister(self.channel.fileno())
        self.spare.drop()
        for sandbox in list(self.idle):
            self.let_go(sandbox)
        # Each reaper notices by itself if its caller died (its socket's other end closes), unless a
        # fork of the caller still holds that end; this says it in any case.
        for sandbox in self.sandboxes.values():
            self.expect_end(sandbox, poller)
            try:
                signal.pidfd_send_signal(sandbox.pidfd, CALLER_GONE)
            except ProcessLookupError:
                pass

    def expect_end(self, sandbox: Served, poller: select.poll) -> None:
        """Watch the reaper of this child of ours (the child itself, or the one a user-namespace parent forked,
        found now: the parent dies of CALLER_GONE) until it ends, for at most its grace and the margin."""
        if sandbox.grace is None:
            return  # the spare: it had no order, and ends when its socket closes
        found = _reaper_of(sandbox.pid) if sandbox.through_parent else (sandbox.pid, os.pidfd_open(sandbox.pid))
        if found is not None:
            self.overdue.watch(*found, sandbox.grace, poller)

    def run_orphaned_hooks(self) -> None:
        """A dead caller's unclaimed on_exit hooks, once their sandbox is gone. A caller that let us go but lives
        runs its own."""
        if self.caller_dead:
            self.hooks.run_ended()


def _reaper_of(parent: int) -> tuple[int, int] | None:
    """The reaper a user-namespace parent forked (its only child) and a pidfd of it; None if it has none."""
    path = f"/proc/{parent}/task/{parent}/children"
    try:
        with open(path) as f:
            child = int(f.read().split()[0])
        pidfd = os.pidfd_open(child)
        with open(path) as f:
            if str(child) in f.read().split():  # still its child: the pidfd is of that reaper, not of a reused pid
                return child, pidfd
        os.close(pidfd)
    except (OSError, ValueError, IndexError):
        pass
    return None


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:5]))

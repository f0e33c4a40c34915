"""sandboxed-run --enter NAME [-- COMMAND]: run a command inside a running sandbox, as one of its processes.

The sandbox's reaper, asked over its registry socket, gives us a pidfd of itself and says where the job
works. Three processes of ours take part:

    sandboxed-run --enter ── forker (joins the user and PID namespaces) ── the command (joins the rest)

The forker joins the sandbox's user namespace (if it has one) and its PID namespace for its children
(setns(2) through the descriptors of its namespaces that the reaper sent, or its pidfd), forks the command
into it and waits for it, reporting to us how it ends or stops (records of wire.py: Entered, EnterStopped,
EnterExited; we send it EnterSignal and EnterContinue). The command joins the mount, network
and UTS namespaces (those that differ from ours), takes the job's ids, directory and marks, and execs.
So the only process of ours inside is the command, one of the sandbox's processes: the sandbox's stop
reaches it and the kernel kills it when the reaper exits; nothing of ours holds the sandbox's mount
namespace (the forker closes the namespaces' descriptors once the command has them), and its mounts go
with the command.

The forker is the command's parent because the kernel makes a dying PID 1 wait until every process of
its namespace has been reaped, also those whose parent is outside: that parent must never be stopped.
We may be (Ctrl+Z stops the command and then us, as a shell's job stops); the forker is in a group of its
own and ignores the job-control signals.

The command gets the job's root (the reaper's, which it sent: for a launcher in a chroot that is not
the mount namespace's), its working directory (the main process's
current one, or --cwd), its uid and gid inside a user namespace, our environment with the sandbox's
marks (SANDBOXED_RUN and co., so sandbox-mount-image works there), --setenv and --unsetenv (with --clearenv:
only the marks, a PATH and --setenv). It gets
what the sandbox gave the job's first process: its umask, limits, priorities, no_new_privs and
capabilities (set as the reaper sets them, shared/attributes.py), so --enter is no way around the
sandbox's confinement, even for root. Root
entering another user's sandbox runs the command as the job's user would, without root's supplementary
groups and with only the terminal's settings of its environment: the owner controls those processes. The
forker takes the owner's uid and gid on the host (the registry's owner, the gid its listener runs with, as
the kernel says) before it joins anything: what the sandbox answers (its spec, the ids to take inside) is
the owner's to forge, and the host's uid 0 in the owner's namespaces would own root's files there.

The command runs in a process group of its own. If we hold the terminal's foreground it gets it, as a
shell gives it to a job, so Ctrl+C and Ctrl+Z reach it alone; a signal sent to us (INT, TERM, HUP,
QUIT, USR1, USR2), also while it starts, is passed on to it once. We end as it did: its exit status,
or its signal re-raised.
"""

from __future__ import annotations

import os
import select
import signal
import socket
from typing import Any

import prctl

from sandboxed_run_helpers.shared import command, linux, marks, registry, wire
from sandboxed_run_helpers.shared.command import DEFAULT_PATH, resolve
from sandboxed_run_helpers.shared.errors import CHDIR_FAILED, EXIT_FAILURE, SandboxError
from sandboxed_run_helpers.shared.options import SandboxSpec
from sandboxed_run_helpers.shared.signals import CATCHABLE, FORWARDED, GLIBC_RESERVED, inherited_ignores
from sandboxed_run_helpers.shared.status import say

from .. import running
from .foreground import Outcome, reraise, shell_status

# Joined by the forker (for the command's sake: the PID namespace takes effect for its children) ...
OUTER = (("user", linux.CLONE_NEWUSER), ("pid", linux.CLONE_NEWPID))
# ... and by the command itself.
INNER = (("mnt", linux.CLONE_NEWNS), ("net", linux.CLONE_NEWNET), ("uts", linux.CLONE_NEWUTS),
         ("ipc", linux.CLONE_NEWIPC), ("cgroup", linux.CLONE_NEWCGROUP), ("time", linux.CLONE_NEWTIME))
JOB_CONTROL = (signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)
KEPT = (b"TERM", b"COLORTERM", b"LANG", b"TZ")  # what root takes into another user's sandbox (and LC_*)


def enter(target: str, argv: tuple[str, ...], values: dict[str, Any]) -> int:
    """The whole --enter: returns the command's exit status, or dies of its signal."""
    try:
        with running.found(target, entering=True) as answer:
            assert answer.about is not None
            # The kernel's word where we may read it (root always may), the answer's elsewhere.
            namespaces = {**answer.about.namespaces, **_namespaces_of(answer.reaper_pid, answer.pidfd)}
            about, pidfd, owner, sent = answer.about, answer.pidfd, answer.owner, answer.namespace_fds
            root = answer.root_fd
            listener = registry.peer_credentials(answer.sock)  # the kernel's word: (pid, uid, gid)
            answer.pidfd, answer.namespace_fds, answer.root_fd = -1, {}, -1  # ours from now on
    except SandboxError as exc:
        raise SandboxError(exc.message, EXIT_FAILURE, exc.errno or 0) from None  # 1 and 4 are the command's
    assert about is not None
    try:
        joinable = _joinable(sent, namespaces)
        if about.state != "running":
            raise SandboxError(f"sandbox {target} is stopping ({about.reason}): nothing new starts in it")
        foreign = owner != os.geteuid()
        if foreign and owner != 0 and namespaces.get("user") == os.stat("/proc/self/ns/user").st_ino:
            # An ordinary user's sandbox always has a user namespace; a process of theirs that answers as a
            # reaper without one would have root run the command as root, here.
            raise SandboxError(f"sandbox {target} is not in a user namespace of its own: it is not one of ours")
        if foreign and listener[1] != owner:
            raise SandboxError(f"sandbox {target} is answered by uid {listener[1]}, not by its owner: it is not one "
                               "of ours")
        env = {k: v for k, v in os.environb.items()
               if not values["clearenv"] and (not foreign or k in KEPT or k.startswith(b"LC_"))}
        if foreign and not values["clearenv"]:
            env[b"PATH"] = DEFAULT_PATH
        command.edited(env, values["unsetenv"], values["setenv"])
        order = Entry(
            pidfd, _differing(OUTER, namespaces), _differing(INNER, namespaces), about.spec,
            [os.fsencode(a) for a in argv] or [os.environb.get(b"SHELL") or b"/bin/sh"], not argv,
            marks.mark_environment(env, namespaces.get("mnt", 0), DEFAULT_PATH),
            os.fsencode(values["cwd"]) if values["cwd"] else about.cwd, bool(values["cwd"]),
            inherited_ignores(), joinable, root, (owner, listener[2]) if foreign else None)
        return _run(order)
    finally:
        os.close(pidfd)
        wire.discard((*sent.values(), *([root] if root >= 0 else [])), at_once=True)


class Entry:
    """What the forker and the command need to know."""

    def __init__(self, pidfd: int, outer: int, inner: int, spec: SandboxSpec, argv: list[bytes],
                 default_shell: bool, env: dict[bytes, bytes], cwd: bytes, cwd_given: bool,
                 ignored: list[int], namespace_fds: dict[int, int], root: int = -1,
                 host_ids: tuple[int, int] | None = None) -> None:
        self.pidfd, self.outer, self.inner, self.spec = pidfd, outer, inner, spec
        # Another user's sandbox: the owner's uid and the gid its reaper runs with, on the host, which the forker
        # takes before it joins anything (None: our own sandbox, entered as we are).
        self.host_ids = host_ids
        self.ids = spec.userns_ids
        self.namespace_fds = namespace_fds  # CLONE_NEW* flag -> a descriptor of that namespace of the sandbox
        self.root = root  # the sandbox's root directory, as its reaper sent it (-1: none came)
        self.argv, self.default_shell, self.env = argv, default_shell, env
        self.cwd, self.cwd_given, self.ignored = cwd, cwd_given, ignored
        self.terminal: int | None = None


def _namespaces_of(pid: int, pidfd: int) -> dict[str, int]:
    """The inode of each namespace of the reaper, by kind, as the kernel says (its answer says so too, but
    whoever owns a registry directory may answer in its place): read through /proc, then checked to be still
    the pidfd's process (its PID cannot have been reused while the pidfd does not say it exited)."""
    found = {}
    for kind, _flag in (*OUTER, *INNER):
        try:
            # The reaper's own time namespace is the host's; its job's is the one its children are born in.
            found[kind] = os.stat(f"/proc/{pid}/ns/{'time_for_children' if kind == 'time' else kind}").st_ino
        except OSError:
            pass
    if select.select([pidfd], [], [], 0)[0]:
        raise SandboxError(f"the sandbox's reaper (pid {pid}) has exited")
    return found


def _joinable(sent: dict[str, int], namespaces: dict[str, int]) -> dict[int, int]:
    """The namespace descriptors the reaper sent that are the namespaces we know of it (by inode), by flag."""
    return {flag: sent[kind] for kind, flag in (*OUTER, *INNER)
            if kind in sent and os.fstat(sent[kind]).st_ino == namespaces.get(kind)}


def _join(order: Entry, flags: int) -> None:
    """setns(2) into the sandbox's namespaces of flags, the user namespace first: through the descriptors
    the reaper sent where it did (it is not dumpable, so its pidfd serves only a process with
    CAP_SYS_PTRACE on the host, which a process in its user namespace never has), else its pidfd."""
    rest = flags
    for _kind, flag in (*OUTER, *INNER):
        if rest & flag and flag in order.namespace_fds:
            linux.setns(order.namespace_fds[flag], flag)
            rest &= ~flag
    if rest:
        linux.setns(order.pidfd, rest)


def _differing(kinds: tuple[tuple[str, int], ...], namespaces: dict[str, int]) -> int:
    """The CLONE_NEW* flags of those of the sandbox's namespaces that are not ours."""
    flags = 0
    for kind, flag in kinds:
        try:
            ours = os.stat(f"/proc/self/ns/{kind}").st_ino
        except OSError:
            continue
        if kind in namespaces and namespaces[kind] != ours:
            flags |= flag
    return flags


# -- us -------------------------------------------------------------------------------------------------

def _run(order: Entry) -> int:
    order.terminal = _foreground_terminal()
    # Blocked from here: the forker and the command inherit the mask (the command unblocks them at exec),
    # and what we get goes to the command through the forker.
    signal.pthread_sigmask(signal.SIG_BLOCK, {*FORWARDED, signal.SIGCHLD, *JOB_CONTROL})
    sigfd = linux.SignalFd(FORWARDED)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    me = os.getpid()
    forker = os.fork()
    if forker == 0:
        ours.close()
        _forker(theirs, me, order)
    theirs.close()
    status = None
    try:
        status = _follow(ours, sigfd, order.terminal)
    finally:
        ours.close()
        _, forker_status = os.waitpid(forker, 0)
        if order.terminal is not None:
            _take_terminal(order.terminal)
    if status is None:  # the forker failed, and said why
        code = os.waitstatus_to_exitcode(forker_status)
        return code if code > 0 else EXIT_FAILURE
    code, sig = shell_status(Outcome(status, False, None))
    if sig is not None:
        reraise(sig)
    return code


def _foreground_terminal() -> int | None:
    """Our controlling terminal, if our process group is its foreground (None: no job control to do)."""
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if os.tcgetpgrp(fd) == os.getpgrp():
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def _follow(sock: socket.socket, sigfd: linux.SignalFd, terminal: int | None) -> int | None:
    """Relay our signals to the command, mirror its stops, until the forker says how it ended (None: the
    forker ended first)."""
    group = 0
    watched: list[socket.socket | int] = [sock, sigfd.fileno()]
    while True:
        ready = select.select(watched, [], [])[0]
        for signo, _code, _pid in sigfd.read():
            _tell(sock, wire.EnterSignal(signo))
        if sock not in ready:
            continue
        try:
            report, fds, _ = wire.recv(sock)
        except (wire.Closed, ConnectionError):
            return None
        except ValueError:
            continue
        wire.discard(fds)
        if isinstance(report, wire.Entered):
            group = report.pid  # the command leads its own process group
        elif isinstance(report, wire.EnterStopped):
            _stop_too(terminal, group)
            _tell(sock, wire.EnterContinue())
        elif isinstance(report, wire.EnterExited):
            return report.status


def _tell(sock: socket.socket, message: wire.Message) -> None:
    try:
        wire.send(sock, message)
    except OSError:
        pass  # the other end is gone: its end of file tells


def _stop_too(terminal: int | None, group: int) -> None:
    """The command stopped (Ctrl+Z): take the terminal back and stop, as it did; once resumed in the
    foreground (fg, not bg), give it the terminal again. The forker then resumes it."""
    if terminal is not None:
        _take_terminal(terminal)
    os.kill(os.getpid(), signal.SIGSTOP)
    if terminal is not None and group:
        try:
            if os.tcgetpgrp(terminal) == os.getpgrp():
                os.tcsetpgrp(terminal, group)
        except OSError:
            pass


def _take_terminal(terminal: int) -> None:
    try:
        os.tcsetpgrp(terminal, os.getpgrp())  # SIGTTOU is blocked: allowed from the background
    except OSError:
        pass


# -- the forker -----------------------------------------------------------------------------------------

def _forker(sock: socket.socket, parent: int, order: Entry) -> None:
    """Join the user and PID namespaces, fork the command, report how it ends; never returns."""
    code = EXIT_FAILURE
    try:
        os.setpgid(0, 0)  # out of reach of the terminal and of signals to our group: never stopped
        for sig in JOB_CONTROL:
            signal.signal(sig, signal.SIG_IGN)
        if order.host_ids is not None:
            # Root in another user's sandbox acts as that user on the host, before it joins anything: the ids to take
            # inside (spec.userns_ids) come from the sandbox's answer, which its owner may forge, and a process that
            # keeps the host's uid 0 in the owner's user namespace owns root's files in mounts the owner chose.
            uid, gid = order.host_ids
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
        prctl.set_pdeathsig(signal.SIGKILL)  # after the change of ids, which clears it
        if os.getppid() != parent:
            return
        try:
            _join(order, order.outer)
        except OSError as exc:
            say(f"cannot enter the sandbox's namespaces: {exc.strerror} (has it ended?)")
            return
        sigfd = linux.SignalFd((signal.SIGCHLD,))
        try:
            child = os.fork()
        except OSError as exc:
            # A PID namespace whose PID 1 has exited takes no new process.
            say(f"cannot start a process in the sandbox: {exc.strerror} (has it ended?)")
            return
        if child == 0:
            sock.close()
            _command(order)
        # The command has its own: nothing of ours may keep the sandbox's namespaces alive.
        wire.discard((*order.namespace_fds.values(), *([order.root] if order.root >= 0 else [])), at_once=True)
        _tell(sock, wire.Entered(child))
        code = _wait(sock, sigfd, child)
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        say(f"cannot enter the sandbox: {exc}")
    finally:
        os._exit(code)


def _wait(sock: socket.socket, sigfd: linux.SignalFd, child: int) -> int:
    """Until the command ends: pass on what sandboxed-run asks, report its stops and its end."""
    watched: list[socket.socket | int] = [sock, sigfd.fileno()]
    while True:
        ready = select.select(watched, [], [])[0]
        if sock in ready:
            try:
                request, fds, _ = wire.recv(sock)
            except (wire.Closed, ConnectionError):
                request, fds = None, []
                watched.remove(sock)  # sandboxed-run is gone (and PDEATHSIG ends us): the command stays in there
            except ValueError:
                request, fds = None, []
            wire.discard(fds)
            try:
                if isinstance(request, wire.EnterSignal):
                    os.kill(child, request.signo)
                elif isinstance(request, wire.EnterContinue):
                    os.killpg(child, signal.SIGCONT)
            except OSError:
                pass
        sigfd.read()
        while True:
            pid, status = os.waitpid(child, os.WNOHANG | os.WUNTRACED)
            if pid == 0:
                break
            if os.WIFSTOPPED(status):
                _tell(sock, wire.EnterStopped())
                continue
            _tell(sock, wire.EnterExited(status))
            return 0


# -- the command ----------------------------------------------------------------------------------------

def _command(order: Entry) -> None:
    """The command's process, inside: its namespaces, group, terminal, ids, directory; then exec."""
    code = EXIT_FAILURE
    argv = order.argv
    try:
        try:
            if order.inner:
                _join(order, order.inner)
        except OSError as exc:
            raise SandboxError(f"cannot enter the sandbox's namespaces: {exc.strerror} (has it ended?)") from None
        if order.root >= 0:
            # setns gave us the mount namespace's root; the job's is the reaper's (a launcher in a chroot).
            try:
                os.fchdir(order.root)
                os.chroot(".")
            except OSError as exc:
                raise SandboxError(f"cannot enter the sandbox's root directory: {exc.strerror}") from None
        os.setpgid(0, 0)
        if order.terminal is not None:
            try:
                os.tcsetpgrp(order.terminal, os.getpgrp())  # SIGTTOU is blocked: allowed from the background
            except OSError:
                pass
        if order.ids is not None:
            uid, gid = order.ids
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
        try:
            os.chdir(order.cwd)
        except OSError as exc:
            if order.cwd_given:
                raise SandboxError(f"{CHDIR_FAILED}{os.fsdecode(order.cwd)}: {exc.strerror}") from None
            os.chdir(b"/")
        search = order.env.get(b"PATH", DEFAULT_PATH)
        try:
            path = resolve(argv[0], search)
        except SandboxError:
            if not order.default_shell:
                raise
            argv = [b"/bin/sh"]  # the caller's shell is not in there
            path = resolve(argv[0], search)
        _confine(order.spec)
        # As the job's processes start: every signal at its default, but those our caller ignored (nohup).
        linux.default_dispositions(GLIBC_RESERVED)
        _as_a_shells_child(order, tuple(CATCHABLE))
        _seal(order.spec)
        os.execve(path, argv, order.env)
    except SandboxError as exc:
        code = exc.exit_code
        _before_our_line(order)
        say(exc.message)
    except OSError as exc:
        _before_our_line(order)
        say(f"cannot start {os.fsdecode(argv[0])} in the sandbox: {exc.strerror}")
    finally:
        os._exit(code)


def _confine(spec: SandboxSpec) -> None:
    """The job's umask, limits, priorities, no_new_privs and capabilities, as the reaper gave them to the job's
    first process (after our ids: as in there, they are set by the job's own uid). Last before exec: NOFILE=3
    leaves no descriptor free, and what we may still have to say needs none."""
    if spec.umask is not None:
        os.umask(spec.umask)
    if not spec.process_attributes:
        return
    from sandboxed_run_helpers.shared import attributes

    try:
        attributes.apply(spec, None)
    except attributes.Refused as exc:
        raise SandboxError(str(exc)) from None
    except OSError as exc:
        raise SandboxError(f"cannot set up the entered command's process: {exc.strerror or exc}") from None


def _seal(spec: SandboxSpec) -> None:
    """The job's Landlock domain and syscall filter, last before exec, as the reaper's (shared/attributes.py)."""
    if not (spec.syscall_filter or spec.landlock_read or spec.landlock_write):
        return
    from sandboxed_run_helpers.shared import attributes

    try:
        attributes.seal(spec)
    except attributes.Refused as exc:
        raise SandboxError(str(exc)) from None


def _before_our_line(order: Entry) -> None:
    # The line may wait for a reader who stopped reading: what we pass on must still end it. A reader gone
    # away costs the line, not the status (SIGPIPE ignored again, if execve failed after the reset).
    _as_a_shells_child(order, FORWARDED)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)


def _as_a_shells_child(order: Entry, signals: tuple[int, ...]) -> None:
    """Default dispositions for signals (Python ignores SIGPIPE and SIGXFSZ), but for those our caller ignored
    (nohup), then nothing blocked. A signal that came meanwhile acts now."""
    for sig in signals:
        signal.signal(sig, signal.SIG_IGN if sig in order.ignored else signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())

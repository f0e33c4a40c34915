"""Starting the job's processes from PID 1: the main process, or each command of a session.

The job must never be PID 1: PID 1 of a namespace silently drops signals it has no handler for.
"""

from __future__ import annotations

import _socket as socket
import errno
import fcntl
import os
import signal
import time

from ..shared import linux, marks
from ..shared.command import DEFAULT_PATH, MAX_PGROUP, Command, resolve
from ..shared.errors import CHDIR_FAILED, EXIT_FAILURE, EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, SandboxError, host_error
from ..shared.options import SandboxSpec
from ..shared.signals import CATCHABLE, GLIBC_RESERVED

# What a job gets at its default action unless its caller ignored it on purpose: glibc's reserved signals too,
# which a process started by posix_spawn has ignored (glibc's own posix_spawn leaves them so unless named).
DEFAULTED = CATCHABLE | frozenset(GLIBC_RESERVED)


class Process:
    """A process the launcher asked for: where its reports go, and how it ended."""

    __slots__ = ("pid", "sock", "status", "kill_at", "started", "out_of_memory")

    def __init__(self, pid: int, sock: socket.socket, started: float) -> None:
        self.pid = pid
        self.sock = sock
        self.status: int | None = None
        self.out_of_memory = False  # the kernel killed it because the sandbox ran out of memory
        self.kill_at: float | None = None  # a stop asked for this process alone: SIGKILL it then
        self.started = started  # signals that reached us before this were not the process's


def start(command: Command, stdio: tuple[int | None, ...], ignored: tuple[int, ...], mnt_ns: int,
          sock: socket.socket, spec: SandboxSpec | None = None, oom_score_adj: int | None = None,
          inherited: tuple | None = None) -> Process:
    """Start command (cwd, umask, environment with our marks) with stdio as its 0, 1, 2 (None: closed), and as
    its 3, 4, ... the descriptors passed under those numbers (None: none), and
    the signals it inherits ignored; its reports go to sock. Raises SandboxError (126, 127, 125).

    With process attributes in spec (or an oom_score_adj to give back to the job, or the API's caller's
    attributes where they differ from ours: inherited), the process is forked and set up before its exec;
    otherwise posix_spawn starts it, and no option costs anything. The stdio descriptors are taken over: closed
    here, whether the command starts or not."""
    copies: list[int] = []
    if command.pgroup > MAX_PGROUP:  # from the wire as it came: the API refuses it before
        raise SandboxError(f"process_group={command.pgroup}: not a process group ID (at most {MAX_PGROUP})",
                           EXIT_FAILURE)
    try:
        try:
            os.chdir(command.cwd)
        except OSError as exc:
            raise SandboxError(f"{CHDIR_FAILED}{os.fsdecode(command.cwd)}: {exc.strerror}", err=exc.errno or 0) \
                from None
        os.umask(spec.umask if spec is not None and spec.umask is not None else command.umask)
        # Lets sandbox-mount-image and co. check where they run, and puts them on the job's PATH.
        env = marks.mark_environment(command.env, mnt_ns, DEFAULT_PATH)
        path = resolve(command.program or command.argv[0], env.get(b"PATH", DEFAULT_PATH))
        file_actions = []
        for target, fd in enumerate(stdio):  # 0, 1, 2, then any passed descriptors by their numbers
            if fd is None:
                if target < 3:  # ours above 2 are all close-on-exec
                    file_actions.append((os.POSIX_SPAWN_CLOSE, target))
            else:
                # Above every target, so that no dup2 overwrites a descriptor a later one still needs.
                high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, max(len(stdio), 3))
                copies.append(high)
                file_actions.append((os.POSIX_SPAWN_DUP2, high, target))
        for sig in ignored:
            signal.signal(sig, signal.SIG_IGN)  # posix_spawn passes on our ignored signals, and resets the rest
        started = time.monotonic()
        try:
            # posix_spawn shares our memory with its child (CLONE_VM), which a kernel before 6.0 refuses (EINVAL)
            # to a child bound for another time namespace than ours (later ones switch it at exec): so a fork.
            if spec is not None and (spec.process_attributes or oom_score_adj is not None or inherited is not None
                                     or "time" in spec.unshare):
                pid = _fork_exec(path, command, env, file_actions, ignored, spec, oom_score_adj, inherited)
            else:
                pid = linux.posix_spawn(path, command.argv, env, file_actions, DEFAULTED - set(ignored),
                                        command.session, command.pgroup)
        except SandboxError:
            raise  # an attribute the kernel refused: already in words
        except OSError as exc:
            name = os.fsdecode(command.program or command.argv[0])
            if exc.errno == errno.EPERM and command.pgroup > 0:
                raise SandboxError(f"process_group={command.pgroup}: no such process group of this sandbox's "
                                   "session to join (0 makes a new one)", EXIT_FAILURE, exc.errno) from None
            if exc.errno == errno.ENOENT:
                raise SandboxError(f"{name}: command not found", EXIT_NOT_FOUND) from None
            if exc.errno in (errno.EAGAIN, errno.ENOMEM):  # no process for it: our failure, not its (126)
                raise host_error(exc, f"cannot start {name}") from None
            raise SandboxError(f"{name}: cannot execute: {exc.strerror}", EXIT_NOT_EXECUTABLE, exc.errno or 0) from None
    finally:
        # Only the job may hold its pipes, or a caller reading them to the end would wait on us.
        for fd in copies + [fd for fd in stdio if fd is not None]:
            os.close(fd)
    return Process(pid, sock, started)


def _fork_exec(path: bytes, command: Command, env: dict[bytes, bytes], file_actions: list[tuple],
               ignored: tuple[int, ...], spec: SandboxSpec, oom_score_adj: int | None, inherited: tuple | None) -> int:
    """posix_spawn's work by hand, with the job's attributes set between fork and exec. The child says why it
    failed through a close-on-exec pipe (nothing: it exec'd); then it is reaped here and the failure raised:
    OSError for the exec, SandboxError (125) for an attribute the kernel refused."""
    from ..shared import attributes

    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
    except BaseException:
        os.close(read_end)
        os.close(write_end)
        raise
    if pid == 0:
        report = b"%d\0%d\0" % (EXIT_FAILURE, 0)
        status = EXIT_FAILURE
        try:
            os.close(read_end)
            for action in file_actions:
                if action[0] == os.POSIX_SPAWN_DUP2:
                    os.dup2(action[1], action[2])  # inheritable, as posix_spawn's dup2 leaves it
                else:
                    os.close(action[1])
            for sig in CATCHABLE - set(ignored):
                signal.signal(sig, signal.SIG_DFL)
            linux.default_dispositions(GLIBC_RESERVED)  # an exec keeps them ignored, if we had them so
            try:
                attributes.apply(spec, oom_score_adj, inherited)
            except OSError as exc:  # not the exec's: never "command not found"
                raise attributes.Refused(f"cannot set up the job's process: {exc.strerror or exc}") from None
            if command.session:
                os.setsid()
            elif command.pgroup >= 0:
                os.setpgid(0, command.pgroup)
            signal.pthread_sigmask(signal.SIG_SETMASK, ())
            attributes.seal(spec)
            os.execve(path, command.argv, env)
        except attributes.Refused as exc:
            report += str(exc).encode(errors="replace")
        except OSError as exc:
            report = b"%d\0%d\0" % (-1, exc.errno or 0)
            status = EXIT_NOT_FOUND if exc.errno == errno.ENOENT else EXIT_NOT_EXECUTABLE
        except BaseException as exc:  # noqa: BLE001 - whatever it was, the reaper must hear of it
            report += repr(exc).encode(errors="replace")
        finally:
            # A syscall filter of the user's may refuse the write (it is in force once sealed): then at least
            # the status says what a shell's would, the job's own.
            try:
                os.write(write_end, report)
            finally:
                os._exit(status)
    os.close(write_end)
    try:
        chunks = []
        while chunk := os.read(read_end, 4096):
            chunks.append(chunk)
    finally:
        os.close(read_end)
    if not chunks:
        return pid
    os.waitpid(pid, 0)
    code, err, message = b"".join(chunks).split(b"\0", 2)
    if int(code) < 0:
        raise OSError(int(err), os.strerror(int(err)))
    raise SandboxError(message.decode(errors="replace") or "cannot start the job", int(code))


def warm_up(mnt_ns: int) -> None:
    """Run the job's start-up path once while we wait for the order. A forked reaper copies every page
    its first run writes to (refcounts, caches): better now, while idle, than on the caller's time."""
    try:
        resolve(b"sh", DEFAULT_PATH)
    except SandboxError:
        pass
    marks.mark_environment({b"PATH": DEFAULT_PATH}, mnt_ns, DEFAULT_PATH)

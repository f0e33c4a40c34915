"""sandboxed-run --enter NAME [-- COMMAND]: run a command inside a running sandbox, as one of its processes.

The sandbox's reaper, asked over its registry socket, gives us a pidfd of itself and says where the job
works. A short-lived child of ours joins the reaper's namespaces through that pidfd (setns(2) with every
kind that differs from ours: user, mount, PID, network, UTS), forks the command into the sandbox's PID
namespace and exits at once. We are a child subreaper, so the command becomes our child: we wait for it
and end as it did (its status; its signal re-raised). We never join a namespace ourselves; inside there
is only the command, which is then one of the sandbox's processes: the sandbox's stop reaches it, the
kernel kills it when the reaper exits, and nothing of ours keeps the namespaces alive after that.

The command gets the job's root (the mount namespace's), its working directory (the main process's
current one, or --cwd), its uid and gid inside a user namespace, and our environment with the
sandbox's marks (SANDBOXED_RUN and co., so sandbox-mount-image works there), --setenv and --unsetenv.

It runs in a process group of its own. If we hold the terminal's foreground, it gets it, as a shell
gives it to a job: Ctrl+C and Ctrl+Z reach it alone, and when it stops we stop too (fg resumes both).
A signal sent to us (INT, TERM, HUP, QUIT, USR1, USR2) is passed on to it once, also one that came
while it started (Ctrl+C before that, while we ask the reaper, just ends us).
"""

from __future__ import annotations

import os
import select
import signal
from typing import Any

import prctl

from sandboxed_run_helpers.reaper.commands import resolve
from sandboxed_run_helpers.shared import linux, marks
from sandboxed_run_helpers.shared.command import DEFAULT_PATH
from sandboxed_run_helpers.shared.errors import EXIT_FAILURE, SandboxError
from sandboxed_run_helpers.shared.signals import FORWARDED

from .. import running
from .foreground import Outcome, reraise, shell_status

KINDS = (("user", linux.CLONE_NEWUSER), ("mnt", linux.CLONE_NEWNS), ("pid", linux.CLONE_NEWPID),
         ("net", linux.CLONE_NEWNET), ("uts", linux.CLONE_NEWUTS), ("ipc", linux.CLONE_NEWIPC),
         ("cgroup", linux.CLONE_NEWCGROUP))
WATCHED = (*FORWARDED, signal.SIGCHLD)
KEPT = (b"TERM", b"COLORTERM", b"LANG", b"TZ")  # what root takes into another user's sandbox


def enter(target: str, argv: tuple[str, ...], values: dict[str, Any]) -> int:
    """The whole --enter: returns the command's exit status, or dies of its signal."""
    try:
        with running.found(target) as answer:
            about, pidfd = answer.about, answer.pidfd
            answer.pidfd = -1  # ours from now on
    except SandboxError as exc:
        raise SandboxError(exc.message, EXIT_FAILURE, exc.errno or 0) from None  # 1 and 4 are the command's
    assert about is not None
    try:
        if about.state != "running":
            raise SandboxError(f"sandbox {target} is stopping ({about.reason}): nothing new starts in it")
        flags = _joined(about.namespaces)
        # Root in another user's sandbox runs as that user would: processes the owner controls (and may
        # trace) get neither root's supplementary groups nor its environment, beyond the terminal's settings.
        foreign = answer.owner != os.geteuid()
        env = {k: v for k, v in os.environb.items() if not foreign or k in KEPT or k.startswith(b"LC_")}
        if foreign:
            env[b"PATH"] = DEFAULT_PATH
        for name in values["unsetenv"]:
            env.pop(os.fsencode(name), None)
        for name, value in values["setenv"]:
            env[os.fsencode(name)] = os.fsencode(value)
        env = marks.mark_environment(env, about.namespaces.get("mnt", 0))
        cwd = os.fsencode(values["cwd"]) if values["cwd"] else about.cwd
        shell = os.environb.get(b"SHELL") or b"/bin/sh"
        command = [os.fsencode(a) for a in argv] if argv else None
        return _run(pidfd, flags, about.spec.userns_ids, command or [shell], command is None, env, cwd,
                    bool(values["cwd"]), foreign)
    finally:
        os.close(pidfd)


def _joined(namespaces: dict[str, int]) -> int:
    """The CLONE_NEW* flags of the sandbox's namespaces that are not ours."""
    flags = 0
    for kind, flag in KINDS:
        try:
            ours = os.stat(f"/proc/self/ns/{kind}").st_ino
        except OSError:
            continue
        if kind in namespaces and namespaces[kind] != ours:
            flags |= flag
    return flags


def _run(pidfd: int, flags: int, ids: tuple[int, int] | None, argv: list[bytes], default_shell: bool,
         env: dict[bytes, bytes], cwd: bytes, cwd_given: bool, foreign: bool) -> int:
    terminal = _foreground_terminal()
    signal.pthread_sigmask(signal.SIG_BLOCK, {*WATCHED, signal.SIGTTOU, signal.SIGTTIN})
    sigfd = linux.SignalFd(WATCHED)
    prctl.set_child_subreaper(True)  # the command, once its forker exits, becomes our child
    report_r, report_w = os.pipe2(os.O_CLOEXEC)
    try:
        forker = os.fork()
    except BaseException:
        os.close(report_r)
        os.close(report_w)
        raise
    if forker == 0:
        os.close(report_r)
        _forker(report_w, pidfd, flags, ids, argv, default_shell, env, cwd, cwd_given, terminal, foreign)
    os.close(report_w)
    child, error, early = _started(report_r, sigfd, forker)
    if error is not None:
        if child:
            _wait(child, sigfd, terminal, [])
        raise error
    status = _wait(child, sigfd, terminal, early)
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


def _forker(report: int, pidfd: int, flags: int, ids: tuple[int, int] | None, argv: list[bytes],
            default_shell: bool, env: dict[bytes, bytes], cwd: bytes, cwd_given: bool, terminal: int | None,
            foreign: bool) -> None:
    """The child that joins the namespaces and forks the command into them; it exits at once."""
    code = EXIT_FAILURE
    try:
        if foreign:
            try:
                os.setgroups([])
            except OSError as exc:
                _say(report, EXIT_FAILURE, f"cannot drop our supplementary groups: {exc.strerror}")
                return
        try:
            linux.setns(pidfd, flags)
        except OSError as exc:
            _say(report, EXIT_FAILURE, f"cannot enter the sandbox's namespaces: {exc.strerror} (it ended?)")
            return
        try:
            child = os.fork()
        except OSError as exc:
            # A PID namespace whose PID 1 has exited takes no new process.
            _say(report, EXIT_FAILURE, f"cannot start a process in the sandbox: {exc.strerror} (it ended?)")
            return
        if child == 0:
            _command(report, ids, argv, default_shell, env, cwd, cwd_given, terminal)
        os.write(report, b"pid %d\n" % child)
        code = 0
    finally:
        os._exit(code)


def _command(report: int, ids: tuple[int, int] | None, argv: list[bytes], default_shell: bool,
             env: dict[bytes, bytes], cwd: bytes, cwd_given: bool, terminal: int | None) -> None:
    """The command's process, inside: its group, its terminal, its ids and directory, then exec."""
    code = EXIT_FAILURE
    try:
        os.setpgid(0, 0)
        if terminal is not None:
            try:
                os.tcsetpgrp(terminal, os.getpgrp())  # SIGTTOU is blocked: allowed from the background
            except OSError:
                pass
        if ids is not None:
            uid, gid = ids
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
        try:
            os.chdir(cwd)
        except OSError as exc:
            if cwd_given:
                code = EXIT_FAILURE
                _say(report, code, f"cannot change to directory {os.fsdecode(cwd)}: {exc.strerror}")
                return
            os.chdir(b"/")
        search = env.get(b"PATH", DEFAULT_PATH)
        try:
            path = resolve(argv[0], search)
        except SandboxError:
            if not default_shell:
                raise
            argv = [b"/bin/sh"]  # the caller's shell is not in there
            path = resolve(argv[0], search)
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)  # Python ignores these; a command must not inherit that
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        os.execve(path, argv, env)
    except SandboxError as exc:
        code = exc.exit_code
        _say(report, code, exc.message)
    except OSError as exc:
        _say(report, code, f"cannot start {os.fsdecode(argv[0])} in the sandbox: {exc.strerror}")
    finally:
        os._exit(code)


def _say(report: int, code: int, message: str) -> None:
    try:
        os.write(report, b"error %d %s\n" % (code, message.encode(errors="replace")))
    except OSError:
        pass


def _started(report: int, sigfd: linux.SignalFd, forker: int) -> tuple[int, SandboxError | None, list[int]]:
    """Read the forker's and the command's reports until the command runs (its exec closed the pipe):
    the command's PID (0: none), the error that kept it from running, the signals we got meanwhile."""
    data = b""
    early: list[int] = []
    try:
        while True:
            ready = select.select([report, sigfd.fileno()], [], [])[0]
            for signo, _code, _pid in sigfd.read():
                if signo != signal.SIGCHLD:
                    early.append(signo)
            if report in ready:
                chunk = os.read(report, 4096)
                if not chunk:
                    break
                data += chunk
    finally:
        os.close(report)
        while True:
            try:
                os.waitpid(forker, 0)
                break
            except ChildProcessError:
                break
            except InterruptedError:
                continue
    child, error = 0, None
    for line in data.decode(errors="replace").splitlines():
        word, _, rest = line.partition(" ")
        if word == "pid":
            child = int(rest)
        elif word == "error":
            code, _, message = rest.partition(" ")
            error = SandboxError(message, int(code))
    if not child and error is None:
        error = SandboxError("the sandbox ended before the command could start")
    return child, error, early


def _wait(child: int, sigfd: linux.SignalFd, terminal: int | None, early: list[int]) -> int:
    """Until the command ends: pass on the signals we get, follow its stops (Ctrl+Z) with ours."""
    for signo in early:
        _pass_on(child, signo)
    try:
        while True:
            # First: its SIGCHLD may have been read while it started.
            try:
                pid, status = os.waitpid(child, os.WNOHANG | os.WUNTRACED)
            except ChildProcessError:
                return 0  # reaped by someone else (a caller that ignores SIGCHLD reaps nothing of ours)
            if pid and os.WIFSTOPPED(status):
                _stopped_too(child, terminal)
                continue
            if pid:
                return status
            select.select([sigfd.fileno()], [], [])
            for signo, _code, _pid in sigfd.read():
                if signo != signal.SIGCHLD:
                    _pass_on(child, signo)
    finally:
        if terminal is not None:
            try:
                os.tcsetpgrp(terminal, os.getpgrp())  # the terminal back to our group (SIGTTOU blocked)
            except OSError:
                pass


def _pass_on(child: int, signo: int) -> None:
    try:
        os.kill(child, signo)
    except ProcessLookupError:
        pass


def _stopped_too(child: int, terminal: int | None) -> None:
    """The command stopped (Ctrl+Z): take the terminal back and stop, as it did; when resumed, resume it."""
    if terminal is not None:
        try:
            os.tcsetpgrp(terminal, os.getpgrp())
        except OSError:
            pass
    os.kill(os.getpid(), signal.SIGSTOP)
    if terminal is not None:
        try:
            if os.tcgetpgrp(terminal) == os.getpgrp():  # resumed in the foreground (fg, not bg)
                os.tcsetpgrp(terminal, os.getpgid(child))
        except OSError:
            pass
    try:
        os.killpg(os.getpgid(child), signal.SIGCONT)
    except OSError:
        pass


"""Post-run hooks (--on-exit, on_exit=) and the launcher's own lifecycle events: hook, finished.

A hook runs outside the sandbox, with /bin/sh -c COMMAND, after the sandbox's last process is gone
(its reaper's pidfd was readable: the mount namespace is gone too). Hooks run one after the other,
each to its end, whatever the previous one did; a failing hook is reported on stderr and as a
"hook" event, and never changes the job's status. A hook gets the launcher's environment plus:

  SANDBOXED_RUN_EXIT_CODE    the job's exit code; empty if it died of a signal or never ran
  SANDBOXED_RUN_SIGNAL       the signal that killed the job (e.g. SIGINT); empty otherwise
  SANDBOXED_RUN_STATUS       the status the launcher exits with, as a shell sees it (0-255)
  SANDBOXED_RUN_STOP_REASON  why the sandbox was stopped (timeout, caller died, ...); empty if it was not
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterable

from .signals import FORWARDED, describe_status, signal_name
from .status import say

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .linux import SignalFd

Emit = Callable[[str, dict], None]


def check_commands(commands: Iterable[str] | None) -> list[str]:
    """The hooks as a list; ValueError for anything but non-empty strings without NUL bytes."""
    if commands is None:
        return []
    if isinstance(commands, (str, bytes)):
        raise ValueError("on_exit takes a list of shell commands, not a single string")
    out = []
    for command in commands:
        if not isinstance(command, str) or not command.strip() or "\0" in command:
            raise ValueError(f"an on-exit hook must be a non-empty shell command, not {command!r}")
        out.append(command)
    return out


def stop_reason(events: Iterable[tuple[str, dict]]) -> str | None:
    for name, fields in events:
        if name == "stopping":
            return fields.get("reason")
    return None


def environment(job_status: int | None, shell_status: int | None, reason: str | None) -> dict[str, str]:
    job = describe_status(job_status)
    return {
        "SANDBOXED_RUN_EXIT_CODE": "" if job["code"] is None else str(job["code"]),
        "SANDBOXED_RUN_SIGNAL": job["signal"] or "",
        "SANDBOXED_RUN_STATUS": "" if shell_status is None else str(shell_status),
        "SANDBOXED_RUN_STOP_REASON": reason or "",
    }


def run_hooks(commands: list[str], extra_env: dict[str, str], emit: Emit | None, prog: str = "sandboxed-run",
              wait: Callable[[int], int | None] | None = None) -> None:
    """Run each hook in order to its end; report each as a "hook" event. KeyboardInterrupt waits for the end.

    wait(pid) -> wait status replaces our own wait for a hook (the hook monitor's, which relays signals).
    """
    env = dict(os.environ)
    env.update(extra_env)
    interrupted = False
    for command in commands:
        try:
            # Signals a launcher blocks for itself must reach the hook as they would any program.
            pid = os.posix_spawn("/bin/sh", ["/bin/sh", "-c", command], env, setsigmask=(),
                                 setsigdef=(*FORWARDED, signal.SIGCHLD))
        except OSError as exc:
            say(f"cannot run on-exit hook {command!r}: {exc.strerror}", prog)
            _emit(emit, "hook", {"command": command, "code": None, "signal": None, "error": exc.strerror})
            continue
        while True:
            try:
                status = wait(pid) if wait is not None else os.waitpid(pid, 0)[1]
                break
            except ChildProcessError:
                # A caller of the API that ignores SIGCHLD: the kernel reaped the hook once it ended,
                # so how it ended is unknown.
                status = None
                break
            except KeyboardInterrupt:
                interrupted = True  # the hook got the terminal's Ctrl+C too; it decides
        result = describe_status(status)
        if status:
            how = f"exit status {result['code']}" if result["signal"] is None else f"killed by {result['signal']}"
            say(f"on-exit hook failed ({how}): {command}", prog)
        _emit(emit, "hook", {"command": command, **result})
    if interrupted:
        raise KeyboardInterrupt


def _emit(emit: Emit | None, name: str, fields: dict) -> None:
    fields["time"] = time.time()
    if emit is not None:
        emit(name, fields)


def finished(emit: Emit | None, shell_status: int | None, sig: int | None = None, error: str | None = None) -> None:
    """The last event: the status the launcher exits with (and the signal it dies of, if it re-raises one)."""
    _emit(emit, "finished", {"status": shell_status, "signal": signal_name(sig) if sig else None, "error": error})


class HookMonitor:
    """For the command: a small process that runs the --on-exit hooks once the sandbox is gone, even
    if sandboxed-run itself is SIGKILLed meanwhile ("as long as our monitor survives").

    It is forked right after the reaper, holds the reaper's pidfd and waits on it. The launcher, once
    it knows how the job ended, sends that over a pipe and waits for the hooks; if the launcher died
    first, the pipe is closed empty and the hooks run with what is known (stop reason "caller died").
    While a hook runs, the launcher relays the signals it gets over the same pipe, one byte each; the
    monitor passes them on to the hook unless the hook got them by itself (relay.py), so no wait of
    the launcher is deaf, and no hook gets a signal twice.
    """

    def __init__(self, commands: list[str], emit: Emit | None) -> None:
        self.commands = commands
        self.emit = emit
        self.pid = 0
        self.pipe = -1

    def start(self, reaper_pidfd: int, keep: set[int]) -> None:
        import prctl

        from .linux import SignalFd, close_fds_except

        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                signal.signal(signal.SIGTSTP, signal.SIG_IGN)
                # Blocked (as the launcher had them when it forked us): the terminal's and a group's
                # signals queue on our signalfd, which is how we know the hook has them already.
                signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
                sigfd = SignalFd(FORWARDED)
                prctl.set_name("sandbox-hooks")
                close_fds_except({reaper_pidfd, read_end, sigfd.fd, *keep})
                select_fds([reaper_pidfd])  # the sandbox is gone: every process, the mount namespace
                sigfd.read()  # what reached us while the job ran was the job's business
                handed = _read_handoff(read_end)
                job_status, shell_status, reason = handed if handed is not None else (None, None, "caller died")
                waiter = _RelayingWait(sigfd, read_end)
                run_hooks(self.commands, environment(job_status, shell_status, reason), self.emit,
                          wait=waiter.wait)
            finally:
                os._exit(0)
        os.close(read_end)
        self.pid, self.pipe = pid, write_end

    def finish(self, job_status: int | None, shell_status: int | None, reason: str | None,
               sigfd: SignalFd) -> None:
        """Hand over how the job ended and wait for the hooks to finish, relaying the signals we get. A
        monitor that was killed costs the hooks (one line says so), never the job's status."""
        import marshal
        import select
        import struct

        data = marshal.dumps((job_status, shell_status, reason))
        pidfd = os.pidfd_open(self.pid)  # our child, not reaped before we wait for it
        try:
            _write(self.pipe, struct.pack("I", len(data)) + data)
            while True:
                ready = select.select([pidfd, sigfd.fd], [], [])[0]
                for signo, _code, _pid in sigfd.read():
                    _write(self.pipe, bytes([signo]))
                if pidfd in ready:
                    break
        finally:
            os.close(pidfd)
            os.close(self.pipe)
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            return
        if os.WIFSIGNALED(status):
            say(f"the on-exit hook monitor was killed ({signal_name(os.WTERMSIG(status))}); "
                "the hooks it had not run yet did not run")


def _write(fd: int, data: bytes) -> None:
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:
        pass  # the monitor is gone; its status says how


def _read_handoff(fd: int) -> tuple | None:
    """The launcher's (job status, shell status, stop reason), or None if it died before it could say."""
    import marshal
    import struct

    def exactly(size: int) -> bytes | None:
        data = b""
        while len(data) < size:
            chunk = os.read(fd, size - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    header = exactly(4)
    body = exactly(struct.unpack("I", header)[0]) if header is not None else None
    return marshal.loads(body) if body is not None else None


class _RelayingWait:
    """The monitor's wait for one hook: passes on what the launcher relays, unless the hook has it."""

    def __init__(self, sigfd: SignalFd, pipe: int) -> None:
        from .relay import Relays

        self.sigfd = sigfd
        self.pipe = pipe
        self.relays = Relays()

    def wait(self, pid: int) -> int | None:
        import select

        from .linux import wait_seconds

        hook = _Hook(pid, time.monotonic())
        pidfd = os.pidfd_open(pid)
        try:
            while True:
                watched = [pidfd, self.sigfd.fd, *([self.pipe] if self.pipe >= 0 else [])]
                ready = select.select(watched, [], [], wait_seconds(self.relays.next_due()))[0]
                now = time.monotonic()
                for signo, _code, _pid in self.sigfd.read():
                    self.relays.arrived(signo, now)
                if self.pipe >= 0 and self.pipe in ready:
                    data = os.read(self.pipe, 64)
                    if not data:
                        self.pipe = -1  # the launcher is gone: nobody relays any more
                    for signo in data:
                        self.relays.request(hook, signo)
                for relay in self.relays.take_due():
                    try:
                        os.kill(pid, relay.signo)
                    except ProcessLookupError:
                        pass
                if pidfd in ready:
                    self.relays.pending.clear()
                    return os.waitpid(pid, 0)[1]
        finally:
            os.close(pidfd)


class _Hook:
    def __init__(self, pid: int, started: float) -> None:
        self.pid = pid
        self.started = started


def select_fds(fds: list[int]) -> None:
    import select

    while not select.select(fds, [], [])[0]:
        pass

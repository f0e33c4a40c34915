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
import sys
import time
from collections.abc import Callable, Iterable

from .signals import FORWARDED, describe_status, signal_name

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


def run_hooks(commands: list[str], extra_env: dict[str, str], emit: Emit | None, prog: str = "sandboxed-run") -> None:
    """Run each hook in order to its end; report each as a "hook" event. KeyboardInterrupt waits for the end."""
    env = dict(os.environ)
    env.update(extra_env)
    interrupted = False
    for command in commands:
        try:
            # Signals a launcher blocks for itself must reach the hook as they would any program.
            pid = os.posix_spawn("/bin/sh", ["/bin/sh", "-c", command], env, setsigmask=(),
                                 setsigdef=(*FORWARDED, signal.SIGCHLD))
        except OSError as exc:
            print(f"{prog}: cannot run on-exit hook {command!r}: {exc.strerror}", file=sys.stderr, flush=True)
            _emit(emit, "hook", {"command": command, "code": None, "signal": None, "error": exc.strerror})
            continue
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except KeyboardInterrupt:
                interrupted = True  # the hook got the terminal's Ctrl+C too; it decides
        result = describe_status(status)
        if status != 0:
            how = f"exit status {result['code']}" if result["signal"] is None else f"killed by {result['signal']}"
            print(f"{prog}: on-exit hook failed ({how}): {command}", file=sys.stderr, flush=True)
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
    """

    def __init__(self, commands: list[str], emit: Emit | None) -> None:
        self.commands = commands
        self.emit = emit
        self.pid = 0
        self.pipe = -1

    def start(self, reaper_pidfd: int, keep: set[int]) -> None:
        import marshal

        import prctl

        from .linux import close_fds_except

        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                for sig in (*FORWARDED, signal.SIGTSTP):
                    signal.signal(sig, signal.SIG_IGN)  # the terminal's signals are the job's business
                prctl.set_name("sandbox-hooks")
                close_fds_except({reaper_pidfd, read_end, *keep})
                select_fds([reaper_pidfd])  # the sandbox is gone: every process, the mount namespace
                data = b""
                while chunk := os.read(read_end, 1 << 16):
                    data += chunk
                job_status, shell_status, reason = marshal.loads(data) if data else (None, None, "caller died")
                run_hooks(self.commands, environment(job_status, shell_status, reason), self.emit)
            finally:
                os._exit(0)
        os.close(read_end)
        self.pid, self.pipe = pid, write_end

    def finish(self, job_status: int | None, shell_status: int | None, reason: str | None) -> None:
        """Hand over how the job ended and wait for the hooks to finish."""
        import marshal

        try:
            os.write(self.pipe, marshal.dumps((job_status, shell_status, reason)))
        finally:
            os.close(self.pipe)
        while True:
            try:
                os.waitpid(self.pid, 0)
                return
            except InterruptedError:
                continue


def select_fds(fds: list[int]) -> None:
    import select

    while not select.select(fds, [], [])[0]:
        pass

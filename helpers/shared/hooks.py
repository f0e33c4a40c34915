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

from .signals import FORWARDED, core_dumped, describe_status, signal_name
from .status import say
from .usage import Usage
from .wire import EventName

Emit = Callable[[str, dict], None]


def stop_reason(events: Iterable[tuple[str, dict]]) -> str | None:
    """Why the sandbox was stopped, as its first stopping event says (or, if its PID 1 never said, the killed
    event of whoever killed it for not responding); None if it was not."""
    killed = None
    for name, fields in events:
        if name == EventName.STOPPING:
            return fields.get("reason")
        if name == EventName.KILLED and killed is None:
            killed = fields.get("reason")
    return killed


def environment(job_status: int | None, shell_status: int | None, reason: str | None) -> dict[str, str]:
    job = describe_status(job_status)
    return {
        "SANDBOXED_RUN_EXIT_CODE": "" if job["code"] is None else str(job["code"]),
        "SANDBOXED_RUN_SIGNAL": job["signal"] or "",
        "SANDBOXED_RUN_STATUS": "" if shell_status is None else str(shell_status),
        "SANDBOXED_RUN_STOP_REASON": reason or "",
    }


def run_hooks(commands: list[str], extra_env: dict[str, str], emit: Emit | None, prog: str = "sandboxed-run",
              wait: Callable[[int], int | None] | None = None, before: Callable[[], None] | None = None) -> None:
    """Run each hook in order to its end; report each as a "hook" event. KeyboardInterrupt waits for the end.

    wait(pid) -> wait status replaces our own wait for a hook (the hook monitor's, which relays signals);
    before() is called before each hook starts (the monitor's: our lines go out before the hook's own).
    """
    env = dict(os.environ)
    env.update(extra_env)
    interrupted = False
    for command in commands:
        if before is not None:
            before()
        try:
            # Signals a launcher blocks for itself must reach the hook as they would any program.
            pid = os.posix_spawn("/bin/sh", ["/bin/sh", "-c", command], env, setsigmask=(),
                                 setsigdef=(*FORWARDED, signal.SIGCHLD))
        except OSError as exc:
            say(f"cannot run on-exit hook {command!r}: {exc.strerror}", prog)
            _emit(emit, EventName.HOOK, {"command": command, "code": None, "signal": None, "error": exc.strerror})
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
            how = f"exit status {result['code']}" if result["signal"] is None else f"killed by {result['signal']}" + (
                " (core dumped)" if result["core_dumped"] else "")
            say(f"on-exit hook failed ({how}): {command}", prog)
        _emit(emit, EventName.HOOK, {"command": command, **result})
    if interrupted:
        raise KeyboardInterrupt


def _emit(emit: Emit | None, name: str, fields: dict) -> None:
    fields["time"] = time.time()
    if emit is not None:
        emit(str(name), fields)  # a plain str, as a reaper's events reach on_event


def finished(emit: Emit | None, shell_status: int | None, sig: int | None = None, error: str | None = None,
             usage: Usage | None = None, job_status: int | None = None) -> None:
    """The last event: the status the launcher exits with (and the signal it dies of, if it re-raises one, and
    whether that signal left the job's core dump, as job_status says), and what the run used (None if its reaper
    could not say: it never started the job, or was killed)."""
    _emit(emit, EventName.FINISHED, {"status": shell_status, "signal": signal_name(sig) if sig else None,
                                     "core_dumped": bool(sig) and core_dumped(job_status),
                                     "error": error, "usage": usage.as_dict() if usage is not None else None})

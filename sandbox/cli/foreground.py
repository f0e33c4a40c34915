"""The life of the sandboxed-run process: one sandbox in the foreground, top to bottom in run().

This process is the launcher: it forks the reaper itself (no spawn server: it is single-threaded
and lives exactly as long as the job), relays the signals it gets, runs the --on-exit hooks through
a monitor process that outlives it if need be, and ends the way a shell expects: with the job's
status, or by dying of the job's signal.
"""

from __future__ import annotations

import os
import resource
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from sandboxed_run_helpers import launch
from sandboxed_run_helpers.shared import command, hooks, linux, outlet, registry, wire
from sandboxed_run_helpers.shared.errors import EXIT_FAILURE, EXIT_TIMEOUT, EXIT_USAGE, SandboxError, host_error
from sandboxed_run_helpers.shared.options import CLI, SandboxSpec
from sandboxed_run_helpers.shared.signals import FORWARDED
from sandboxed_run_helpers.shared.status import StatusWriter, fan_out, say

from ..client import ReaperClient
from .words import UsageError

if TYPE_CHECKING:
    import _socket


class Outcome(NamedTuple):
    status: int | None  # the main process's wait status, if it ran
    timed_out: bool
    error: SandboxError | None


def run(values: dict[str, Any], build: Callable[[], SandboxSpec], argv: tuple[str, ...]) -> int:
    """The whole run, values checked: the spec (build() checks it), start, wait, hooks, finished; returns the
    status, or dies of the job's signal. Once the status target is open, every ending writes finished to it,
    also a failure before the sandbox exists (one line on stderr too, as main() would say it)."""
    writer = _status_writer(values)
    show = fan_out(_print_event if values["verbose"] else None, writer.write if writer is not None else None)
    hook_monitor: tuple[int, _socket.socket] | None = None

    def start_hook_monitor(pid: int, pidfd: int) -> None:
        nonlocal hook_monitor
        from sandboxed_run_helpers import monitor

        # It keeps only what the hooks need: not our end of the reaper's socket, or the reaper would not
        # see us die. Before the job runs: a job that stops its process group stops us too.
        hook_monitor = monitor.start(list(values["on_exit"]), show, pidfd, {writer.fd} if writer else set(),
                                     (pid, spec.grace))

    try:
        spec = build()
        cmd = _command(values, argv)
        spec.check_host(CLI)
        for caveat in spec.caveats(CLI):
            say(f"warning: {caveat}")
        deadline = linux.deadline_after(values["timeout"])  # the reaper's too: a job may stop us, never it
        stdio = _descriptors(values["pass_fd"])
        job = wire.Order(cmd, spec, None, "parent", tuple(fd is not None for fd in stdio),
                       registry.place(spec.name, say), deadline=deadline)
        sigfd = watch_signals()  # before the fork: a signal while the sandbox starts waits for us
        pid, pidfd, sock, group = launch.start(job, tuple(fd for fd in stdio if fd is not None),
                                               sigfd.fileno(), start_hook_monitor if values["on_exit"] else None)
    except (UsageError, OSError) as exc:  # a SandboxError is an OSError
        error, line, code = our_failure(exc)
        say(line)
        hooks.finished(show, code, None, error)
        return code
    events: list[tuple[str, dict[str, Any]]] = []
    emit = fan_out(lambda name, fields: events.append((name, fields)), show)
    client = ReaperClient(pid, pidfd, sock, emit, grace=spec.grace)
    outcome = wait(client, deadline, sigfd)
    launch.reap(pid, sigfd.fileno())
    if group is not None:
        group.remove()
    if outcome.error is not None and outcome.status is None:
        say(str(outcome.error))
    elif client.unresponsive is not None:
        say(client.unresponsive)  # it had reported the end, but some of its processes did not end
    status, sig = shell_status(outcome)
    if hook_monitor is not None:
        from sandboxed_run_helpers import monitor

        outlet.drain()  # our lines before the hooks': the monitor writes to the same readers from now on
        handoff = wire.Handoff(outcome.status, status, hooks.stop_reason(events), outlet.deadline())
        monitor.handoff(*hook_monitor, handoff, sigfd)
    hooks.finished(emit, status, sig, str(outcome.error) if outcome.error is not None else None, client.usage,
                   outcome.status)
    if sig is not None:
        reraise(sig)
    return status


def our_failure(exc: UsageError | OSError) -> tuple[str, str, int]:
    """Our own failure (a usage error, a SandboxError, a call the caller's limits refused): the error as the
    finished event gives it, the one line we say, and the status we exit with."""
    if isinstance(exc, UsageError):
        return str(exc), f"{exc} (see --help)", EXIT_USAGE  # --help has the rest
    error = exc if isinstance(exc, SandboxError) else host_error(exc, "cannot start the sandbox")
    return str(error), str(error), error.exit_code


def _descriptors(passed: tuple[int, ...]) -> list[int | None]:
    """The job's descriptors by number: our 0, 1, 2 (None: closed when we started), then each --pass-fd under its
    own number (None between them). UsageError for one that is not open."""
    slots: list[int | None] = [fd if fd not in CLOSED_AT_START else None for fd in (0, 1, 2)]
    for fd in passed:
        if not linux.fd_is_open(fd):
            raise UsageError(f"--pass-fd {fd}: not an open file descriptor")
        slots += [None] * (fd + 1 - len(slots))
        slots[fd] = fd
    return slots


def _command(values: dict[str, Any], argv: tuple[str, ...]) -> command.Command:
    if not argv or not argv[0]:
        raise UsageError("no command given")
    env = command.edited({} if values["clearenv"] else dict(os.environb), values["unsetenv"], values["setenv"])
    cwd = command.directory_of(values["cwd"], "--cwd", values["root"] is not None)
    return command.command([os.fsencode(a) for a in argv], env, cwd)


def _status_writer(values: dict[str, Any]) -> StatusWriter | None:
    if values["json_status"] is not None:
        return StatusWriter.open_file(values["json_status"])
    if values["json_status_fd"] is not None:
        if values["json_status_fd"] in CLOSED_AT_START:
            raise SandboxError(f"--json-status-fd {values['json_status_fd']}: not an open file descriptor")
        return StatusWriter.from_fd(values["json_status_fd"])
    return None


def _print_event(name: str, fields: dict[str, Any]) -> None:
    details = " ".join(f"{k}={v}" for k, v in fields.items()
                       if k not in ("time", "usage", "core_dumped") and v is not None)
    if fields.get("core_dumped"):
        details += " (core dumped)"  # as a shell says it
    if fields.get("usage") is not None:
        from sandboxed_run_helpers.shared.usage import Usage

        details += "; used " + Usage(**fields["usage"]).describe()  # one line, as systemd-run --wait says it
    say(f"{name} {details}".rstrip())


def watch_signals() -> linux.SignalFd:
    """Block the signals we pass on, so that they queue for us instead of killing us (also while the
    sandbox starts), and read them from a signalfd from now on."""
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    sigfd = linux.SignalFd(FORWARDED)
    outlet.hear(sigfd.fileno())  # a signal ends our wait for a reader who does not read, before we end
    return sigfd


def wait(client: ReaperClient, deadline: float | None, sigfd: linux.SignalFd) -> Outcome:
    """Until every process of the sandbox is gone, relaying each signal we get (the reaper drops those that
    reached the job by themselves) and stopping the job at the deadline (time.monotonic(); the reaper stops
    it then by itself too, should the job have stopped us). A signal during start-up reaches the job as soon
    as it runs. A reaper that does not end the sandbox in time after a stop is killed (client.watch())."""
    outlet.hurry_at(deadline)  # a reader who stops reading keeps us no longer than the job may run
    timed_out = False
    while (fd := client.waiting_on()) is not None:
        wake = client.kill_at if timed_out or deadline is None else min(deadline, client.kill_at or deadline)
        ready = outlet.select_readable([sigfd.fileno(), fd], linux.wait_seconds(wake))
        for signo, _code, _sender in sigfd.read():
            client.relay(signo)
            outlet.hurry()
        if fd in ready:
            client.advance()
        if deadline is not None and not timed_out and time.monotonic() >= deadline:
            timed_out = True
            client.stop(None, wire.StopReason.TIMEOUT)
        client.watch()
    client.close()
    timed_out = timed_out or wire.StopReason.TIMEOUT in client.stop_reasons
    return Outcome(client.status, timed_out, client.error)


def shell_status(outcome: Outcome) -> tuple[int, int | None]:
    """The status a shell sees for an outcome, and the signal we die of to give it (None: we exit with it)."""
    if outcome.error is not None and outcome.status is None:
        return outcome.error.exit_code, None
    if outcome.timed_out:
        return EXIT_TIMEOUT, None
    status = outcome.status if outcome.status is not None else 0
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status), os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status), None


def reraise(sig: int) -> None:
    """Die of sig as the job did, so a calling shell stops its script on a Ctrl+C (as util-linux unshare does)."""
    flush_standard_streams()
    # Our own core dump would only hide the job's.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sig not in (signal.SIGKILL, signal.SIGSTOP):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
    os.kill(os.getpid(), sig)
    os._exit(128 + sig if sig < 128 else EXIT_FAILURE)


def flush_standard_streams() -> None:
    """Before we end: what we have to say, as far as a signal does not end the wait for its reader first."""
    outlet.drain()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:  # None: Python started with that descriptor closed
                stream.flush()
        except (OSError, ValueError):
            pass


# The standard descriptors that were closed when we started: the job gets them closed too.
CLOSED_AT_START: set[int] = set()


def hold_standard_descriptors() -> None:
    """Fill closed 0, 1, 2 with /dev/null (close-on-exec), so that none of our own descriptors, which
    take the lowest free number, ever lands there and reaches the job as its stdin or stdout."""
    CLOSED_AT_START.update(linux.fill_closed_stdio())
    # Python set these to None: what we would have printed goes nowhere, as the caller asked.
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w")  # lives as long as the process
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")


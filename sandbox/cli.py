"""The sandboxed-run command: a thin click skin over SandboxSpec and run_foreground."""

from __future__ import annotations

import os
import signal
from typing import NoReturn

import click

from .errors import EXIT_FAILURE, EXIT_USAGE, SandboxError
from .signals import inherited_ignores
from .spec import DEFAULT_GRACE, SandboxSpec, duration

EPILOG = """\b
Exit status:
  the job's own status   when its main process exits
  death by its signal    when the job dies of a signal, sandboxed-run kills itself
                         with the same signal (as a shell expects of a child)
  124  --timeout expired (the job was stopped with the stop signal and grace)
  125  sandboxed-run itself failed (bad path, namespaces not permitted, ...)
  126  the command is not executable
  127  the command was not found
  2    usage error

\b
Signals:
  Ctrl+C at the terminal reaches the job once, from the terminal itself; sandboxed-run
  waits for the job's cleanup, then exits as the job did. Pressing Ctrl+C 3 times within
  5 seconds SIGKILLs everything in the sandbox. SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1
  and SIGUSR2 sent to sandboxed-run alone (kill PID) are passed on once to the job's main
  process. Ctrl+Z suspends the whole job; fg resumes it.

\b
Stopping:
  When the main process exits, every process it left behind gets the stop signal, then
  --grace seconds, then SIGKILL. The same happens on --timeout and when sandboxed-run
  itself is killed (even with SIGKILL): the sandbox's PID 1 notices and gives the job
  its grace period. If it is killed too, the kernel kills every process of the job and
  drops its mounts.
"""


def _parse_env(pairs: tuple[str, ...]) -> list[tuple[str, str]]:
    out = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name or "\0" in pair:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--setenv")
        out.append((name, value))
    return out


@click.command(
    context_settings={"help_option_names": ["-h", "--help"], "allow_interspersed_args": False,
                      "max_content_width": 100},
    epilog=EPILOG,
)
@click.option("--grace", type=float, default=DEFAULT_GRACE, show_default=True, metavar="SECONDS",
              help="Time the job's processes get to clean up after the stop signal, before SIGKILL.")
@click.option("--stop-signal", default="TERM", show_default=True, metavar="SIG",
              help="Signal that asks the job to stop (name or number).")
@click.option("--timeout", type=float, metavar="SECONDS",
              help="Stop the job after this long (then exit 124).")
@click.option("--tmpfs", multiple=True, metavar="DIR", help="Mount a private tmpfs on DIR (repeatable).")
@click.option("--bind", multiple=True, metavar="SRC[:DST]", help="Bind-mount SRC on DST (repeatable).")
@click.option("--ro-bind", multiple=True, metavar="SRC[:DST]",
              help="Bind-mount SRC on DST read-only, submounts included (repeatable).")
@click.option("--propagation", type=click.Choice(["slave", "private"]), default="slave", show_default=True,
              help="How / is remounted inside: slave still sees the host's new mounts; private does not. "
                   "Mounts made inside never reach the host.")
@click.option("--read-only", multiple=True, metavar="PATH",
              help="Remount PATH read-only inside, submounts included (repeatable); --tmpfs/--bind/--ro-bind "
                   "open holes in it.")
@click.option("--net", default="host", show_default=True, metavar="host|none|netns:NAME",
              help="Network: the host's; none (a new namespace with only lo, up); or join the named namespace "
                   "made by 'ip netns add NAME'.")
@click.option("--userns", is_flag=True,
              help="Run in a new user namespace where the caller is --uid/--gid (default 0, root inside). "
                   "Automatic when the caller is not root.")
@click.option("--uid", type=int, metavar="UID", help="The job's uid inside the user namespace (implies --userns).")
@click.option("--gid", type=int, metavar="GID", help="The job's gid inside the user namespace (implies --userns).")
@click.option("--hostname", metavar="NAME", help="Set the hostname in a new UTS namespace.")
@click.option("--proc/--no-proc", default=True, show_default=True,
              help="Mount a fresh /proc for the new PID namespace (--no-proc: the host's /proc stays).")
@click.option("--chdir", metavar="DIR", help="Working directory of the job, inside the sandbox.")
@click.option("--setenv", multiple=True, metavar="NAME=VALUE", help="Set a variable for the job (repeatable).")
@click.option("--unsetenv", multiple=True, metavar="NAME", help="Remove a variable for the job (repeatable).")
@click.option("--on-exit", "on_exit", multiple=True, metavar="COMMAND",
              help="Run COMMAND with /bin/sh -c outside the sandbox once its last process is gone, however it "
                   "ended (repeatable, in order). It gets SANDBOXED_RUN_EXIT_CODE, _SIGNAL, _STATUS and "
                   "_STOP_REASON; a failing hook is reported but does not change the exit status.")
@click.option("--json-status", metavar="FILE",
              help="Write lifecycle events to FILE as JSON lines (schema in README), 'finished' last.")
@click.option("--json-status-fd", type=click.IntRange(min=0), metavar="N",
              help="Like --json-status, to the already open file descriptor N.")
@click.option("-v", "--verbose", is_flag=True,
              help="Print lifecycle events on stderr: started, signal forwarded, stopping and why, killed, exited.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def cli(grace: float, stop_signal: str, timeout: float | None, tmpfs: tuple[str, ...], bind: tuple[str, ...],
        ro_bind: tuple[str, ...], propagation: str, read_only: tuple[str, ...], net: str, userns: bool,
        uid: int | None, gid: int | None, hostname: str | None, proc: bool, chdir: str | None, setenv: tuple[str, ...],
        unsetenv: tuple[str, ...], on_exit: tuple[str, ...], json_status: str | None, json_status_fd: int | None,
        verbose: bool, command: tuple[str, ...]) -> int:
    """Run COMMAND in a private mount and PID namespace that is torn down when it ends.

    The command runs as PID 2 under a reaper (PID 1); / is remounted slave (or private), /proc is
    fresh, and nothing the job mounts reaches the host. When the job ends, however it ends, every
    process it started ends too and its mounts vanish.
    """
    try:
        if timeout is not None:
            timeout = duration(timeout, "--timeout")
            if timeout == float("inf"):
                timeout = None
        grace = duration(grace, "--grace")
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if not command or not command[0]:
        raise click.UsageError("no command given")
    env_changes = _parse_env(setenv)
    for name in unsetenv:
        if not name or "=" in name:
            raise click.BadParameter(f"{name!r} is not a variable name", param_hint="--unsetenv")
    if json_status is not None and json_status_fd is not None:
        raise click.UsageError("--json-status and --json-status-fd exclude each other")
    if any(not c.strip() or "\0" in c for c in on_exit):
        raise click.BadParameter("needs a non-empty shell command", param_hint="--on-exit")
    try:
        spec = SandboxSpec.build(grace=grace, stop_signal=stop_signal, tmpfs=tmpfs, binds=bind, ro_binds=ro_bind,
                                 propagation=propagation, ignored_signals=inherited_ignores(),
                                 read_only=read_only,
                                 net=net, userns=True if userns else None, uid=uid, gid=gid, hostname=hostname,
                                 proc=proc)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    env = dict(os.environb)
    for name in unsetenv:
        env.pop(os.fsencode(name), None)
    for name, value in env_changes:
        env[os.fsencode(name)] = os.fsencode(value)
    try:
        cwd = os.path.abspath(chdir) if chdir else os.getcwd()
    except OSError:
        cwd = "/"
    from . import command as commands
    from .foreground import exit_like, run_foreground, watch_signals
    from .hooks import HookMonitor, finished, stop_reason
    from .status import StatusWriter, fan_out

    request = commands.request([os.fsencode(a) for a in command], env, os.fsencode(cwd))
    spec.check_host()
    writer = None
    if json_status is not None:
        writer = StatusWriter.open_file(json_status)
    elif json_status_fd is not None:
        writer = StatusWriter.from_fd(json_status_fd)
    events: list[tuple[str, dict]] = []
    emit = fan_out(lambda name, fields: events.append((name, fields)), _print_event if verbose else None,
                   writer.write if writer is not None else None)
    monitor = start_monitor = None
    if on_exit:
        monitor = HookMonitor(list(on_exit), fan_out(_print_event if verbose else None,
                                                     writer.write if writer is not None else None))
        # It keeps only what the hooks need: not our ends of the sandbox's sockets, or the reaper
        # would not see us die.
        keep = {writer.fd} if writer is not None else set()
        start_monitor = lambda pidfd: monitor.start(pidfd, keep)  # noqa: E731
    sigfd = watch_signals()  # before the fork: a signal while the sandbox starts waits for us
    outcome = run_foreground(spec, request, timeout, emit, start_monitor, sigfd)

    def wrap_up(status: int, sig: int | None) -> None:
        # Every process of the sandbox is gone now (run_foreground waited for the reaper's pidfd).
        if monitor is not None and monitor.pid:
            monitor.finish(outcome.status, status, stop_reason(events), sigfd)
        finished(emit, status, sig, str(outcome.error) if outcome.error is not None else None)

    return exit_like(outcome, wrap_up)


def _print_event(name: str, fields: dict) -> None:
    from .status import say

    details = " ".join(f"{k}={v}" for k, v in fields.items() if k != "time" and v is not None)
    say(f"{name} {details}".rstrip())


def main(argv: list[str] | None = None) -> NoReturn:
    from .foreground import flush_standard_streams, hold_standard_descriptors
    from .signals import reset_for_helper
    from .status import say

    # What a caller left us (an ignored SIGCHLD, blocked signals) must not hang our own waits; the job
    # still gets the caller's ignored signals (inherited_ignores: SIGHUP for nohup), which this keeps.
    reset_for_helper()
    hold_standard_descriptors()
    try:
        code = cli.main(args=argv, prog_name="sandboxed-run", standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.UsageError as exc:
        # One line, as the standards ask; --help has the rest.
        say(f"{exc.format_message()} (see --help)")
        code = EXIT_USAGE
    except SandboxError as exc:
        say(str(exc))
        code = exc.exit_code
    except click.Abort:
        # Only reachable before the sandbox exists: die of SIGINT as an interrupted program should.
        from .foreground import reraise

        reraise(signal.SIGINT)
        code = EXIT_FAILURE
    except KeyboardInterrupt:
        from .foreground import reraise

        reraise(signal.SIGINT)
        code = EXIT_FAILURE
    # Straight out, without the interpreter's teardown: nothing of ours needs it, and every
    # run of the command would pay for it (a tenth of its start-up time).
    flush_standard_streams()
    os._exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()

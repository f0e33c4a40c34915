"""The sandboxed-run command: a thin click skin over the option table; foreground.py is its life.

Every option comes from sandboxed_run_helpers.shared.options.OPTIONS (those the command line has),
in the table's order, grouped by topic in --help; click only splits the words, the table's checks
judge the values. A plainly valid command line is split by words.py from the same table, without
importing click (which costs more than the rest of a run); --help and mistakes go to click.
"""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING, Any, NoReturn

from sandboxed_run_helpers.shared.errors import EXIT_FAILURE
from sandboxed_run_helpers.shared.options import CLI, OPTIONS, SandboxSpec

from . import words
from .words import UsageError

if TYPE_CHECKING:
    import click

    from sandboxed_run_helpers.shared.options import Option

EPILOG = """\b
Exit status:
  the job's own status   when its main process exits
  death by its signal    when the job dies of a signal, sandboxed-run kills itself
                         with the same signal (as a shell expects of a child)
  124  --timeout expired (the job was stopped with the stop signal and grace)
  125  sandboxed-run itself failed (bad path, namespaces not permitted, name taken, ...)
  126  the command is not executable, or its argument list is too long
  127  the command was not found
  2    usage error
  --enter exits as the entered command did (125: it could not enter).
  --stop exits 0 once the sandbox is gone, 1 if no running sandbox of yours has that
  name, 4 if it is another user's, 125 if its reaper does not answer.
  --list exits 125 (after the list) if a registry directory of yours is someone else's.

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
  the --grace period, then SIGKILL. The same happens on --timeout and when sandboxed-run
  itself is killed (even with SIGKILL): the sandbox's PID 1 notices and gives the job
  its grace period. If it is killed too, the kernel kills every process of the job and
  drops its mounts.
"""

# --help's sections, in this order; an option's topic (its entry in the table) says where it goes.
TOPICS = {"mounts": "Sandbox contents (mounts)", "isolation": "Isolation",
          "confinement": "Confinement (who the job runs as, what it may call and touch)", "command": "The command",
          "limits": "Limits and privileges", "stopping": "Stopping and time", "output": "Output and status",
          "hooks": "Hooks",
          "sandboxes": "Running sandboxes (--list, --enter, --stop)"}


BY_PARAM = {o.name: o.topic for o in OPTIONS}


def _click_option(option: Option) -> click.Option:
    """The click spelling of one entry of the table: click only splits the words; the table checks them."""
    flags = [*([option.short] if option.short else []), option.flag, *option.aliases]
    if option.switch and option.default is True:
        flags = [f"{option.flag}/--no-{option.flag[2:]}"]
    kwargs: dict[str, Any] = {"help": option.help, "metavar": option.metavar}
    if option.switch:
        kwargs.update(is_flag=True, default=option.default is True, show_default=option.default is True)
    elif option.many:
        kwargs.update(multiple=True)
    elif option.default is not None:
        kwargs.update(default=str(option.default), show_default=True)
    import click

    if option.completes:
        from click.shell_completion import CompletionItem

        kind = option.completes
        if kind == "sandbox":
            kwargs["shell_complete"] = lambda ctx, param, incomplete: [
                CompletionItem(name) for name in _running_names() if name.startswith(incomplete)]
        else:
            kwargs["shell_complete"] = lambda ctx, param, incomplete: [CompletionItem(incomplete, type=kind)]
    return click.Option([*flags, option.name], **kwargs)


def _running_names() -> list[str]:
    """The names of the caller's running sandboxes (root: everyone's), for completing --enter and --stop."""
    from sandbox import running

    return running.names()


def _show_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        import click

        from sandbox import __version__

        click.echo(f"sandboxed-run {__version__}")
        ctx.exit()


_click_command: click.Command | None = None


def click_command() -> click.Command:
    """The command as click knows it (for --help, mistakes, and whatever reads click's definitions)."""
    global _click_command
    if _click_command is not None:
        return _click_command
    import click

    class Command(click.Command):
        """--help lists the options by topic, in the table's order."""

        def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
            by_topic: dict[str, list[tuple[str, str]]] = {}
            for param in self.get_params(ctx):
                if isinstance(param, click.Argument):
                    continue  # COMMAND is in the usage line
                row = param.get_help_record(ctx)
                if row is not None:
                    topic = BY_PARAM.get(param.name or "", "other")
                    by_topic.setdefault(topic, []).append(row)
            for topic, title in (*TOPICS.items(), ("other", "Other")):
                if by_topic.get(topic):
                    with formatter.section(title):
                        formatter.write_dl(by_topic[topic])

    params: list[click.Parameter] = [_click_option(o) for o in OPTIONS if o.in_cli]
    params.append(click.Option(["--version"], is_flag=True, expose_value=False, is_eager=True, callback=_show_version,
                               help="Show the version and exit."))
    # Not required by click: --list, --enter and --stop need none; _run says when one is missing.
    params.append(click.Argument(["command"], nargs=-1, required=False, type=click.UNPROCESSED))
    _click_command = Command("sandboxed-run", callback=_run, params=params, epilog=EPILOG, help=HELP,
                             context_settings={"help_option_names": ["-h", "--help"],
                                               "allow_interspersed_args": False, "max_content_width": 100})
    return _click_command


def _run(command: tuple[str, ...], **values: Any) -> int:
    values = _checked(values)
    if values["list"] or values["enter"] or values["stop"] or values["json"]:
        from .manage import manage, mode_of

        mode = mode_of(values, command, _given)
        if mode is not None:
            return manage(mode, values, command, _given)
    from .foreground import run

    return run(values, lambda: _spec(values), command)


_given: set[str] = set()  # the options the command line gave, by name (main() reads them)


HELP = """Run COMMAND in a private mount and PID namespace that is torn down when it ends.

The command runs as PID 2 under a reaper (PID 1); / is remounted slave (or private), /proc is
fresh, and nothing the job mounts reaches the host. When the job ends, however it ends, every
process it started ends too and its mounts vanish.

Mounts are made parents first; a missing mount point is created inside a tmpfs of the sandbox
(elsewhere only with --mkdir). In values with several fields (SRC:DST), write \\: for a colon
that is part of a path. Durations are seconds (30, 1.5) or spans (500ms, 10m, 1h30m).

\b
Running sandboxes (each is listed under --name, or a generated name):
  sandboxed-run --list [--json]
  sandboxed-run --enter NAME [-- COMMAND [ARG]...]
  sandboxed-run --stop NAME [--grace DURATION]
"""


def _parsed(option: Option, word: str) -> Any:
    try:
        return option.parse(word)  # type: ignore[misc]
    except ValueError:
        raise ValueError(f"{option.flag}: {word!r} is not a number") from None


def _checked(values: dict[str, Any]) -> dict[str, Any]:
    """The words of the command line as the table's values: parsed, then checked (UsageError naming the flag)."""
    out = {}
    for option in OPTIONS:
        if not option.in_cli:
            continue
        value = values.get(option.name, option.default)
        if option.switch and option.default is None and value is False:
            value = None  # not given: the table's "automatic"
        try:
            if option.parse is not None and isinstance(value, str):
                value = _parsed(option, value)
            elif option.parse is not None and option.many:
                value = tuple(_parsed(option, item) if isinstance(item, str) else item for item in value)
            if option.scope in ("cli", "hooks"):  # the "sandbox" ones are SandboxSpec.build's to check
                value = option.check(value, option.flag)
        except (ValueError, TypeError) as exc:
            raise UsageError(str(exc)) from None
        out[option.name] = value
    if out["json_status"] is not None and out["json_status_fd"] is not None:
        raise UsageError("--json-status and --json-status-fd exclude each other")
    return out


def _spec(values: dict[str, Any]) -> SandboxSpec:
    from sandboxed_run_helpers.shared.signals import inherited_ignores

    try:
        return SandboxSpec.build(values, CLI, ignored_signals=inherited_ignores())
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None


def main(argv: list[str] | None = None) -> NoReturn:
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        # Until foreground.py watches the signals, a Ctrl+C ends us as it ends any program that has started
        # nothing yet: by SIGINT, not by a traceback of whatever was being imported.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    from sandboxed_run_helpers.shared import outlet
    from sandboxed_run_helpers.shared.signals import reset_for_helper
    from sandboxed_run_helpers.shared.status import say

    from .foreground import flush_standard_streams, hold_standard_descriptors, our_failure, reraise

    # What a caller left us (an ignored SIGCHLD, blocked signals) must not hang our own waits; the job
    # still gets the caller's ignored signals (inherited_ignores: SIGHUP for nohup), which this keeps.
    reset_for_helper()
    hold_standard_descriptors()
    outlet.enable()  # our waits hear signals; a write to a reader who stopped reading must not make them deaf
    import sys

    args = sys.argv[1:] if argv is None else argv
    try:
        _given.update(words.given(args))
        read = words.read(args)
        code = _run(read[1], **read[0]) if read is not None else _with_click(args)
    except (UsageError, OSError) as exc:
        # One line, as the standards ask, also for a call of ours the caller's limits refused (a descriptor, a
        # process), never a traceback.
        _error, line, code = our_failure(exc)
        say(line)
    except KeyboardInterrupt:
        # Only reachable before the sandbox exists: die of SIGINT as an interrupted program should.
        reraise(signal.SIGINT)
        code = EXIT_FAILURE
    # Straight out, without the interpreter's teardown: nothing of ours needs it, and every
    # run of the command would pay for it (a tenth of its start-up time).
    flush_standard_streams()
    os._exit(code if isinstance(code, int) else 0)


def _with_click(args: list[str]) -> int:
    """click reads what words.py would not: --help, and mistakes, which it names."""
    import click

    try:
        code = click_command().main(args=args, prog_name="sandboxed-run", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.UsageError as exc:
        raise UsageError(exc.format_message()) from None
    except click.Abort:
        raise KeyboardInterrupt from None
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    main()

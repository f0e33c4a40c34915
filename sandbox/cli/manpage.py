"""The manual page sandboxed-run(1), written from the click command (and so from the option table).

`python -m sandbox.cli.manpage` prints it; the repository keeps it as man/sandboxed-run.1, which the
package installs into share/man/man1 (where `man sandboxed-run` finds it when the environment's bin
directory is on PATH), and a test keeps that file equal to what this module writes.
"""

from __future__ import annotations

import sys

import click

from sandbox import __version__

from . import BY_PARAM, EPILOG, HELP, TOPICS, click_command

NAME = "sandboxed-run"

MORE = {
    "ENVIRONMENT": (
        "The job gets SANDBOXED_RUN=1, SANDBOXED_RUN_MNT_NS (the inode number of the sandbox's mount namespace) "
        "and SANDBOXED_RUN_BIN (the directory of sandboxed-run's commands, which is also added at the end of its "
        "PATH, so that sandbox-mount-image and sandbox-open-luks are found by name). "
        "--on-exit hooks get SANDBOXED_RUN_EXIT_CODE, SANDBOXED_RUN_SIGNAL, SANDBOXED_RUN_STATUS and "
        "SANDBOXED_RUN_STOP_REASON."),
    "SHELL COMPLETION": (
        "Completion comes from click. For bash, add to ~/.bashrc:\n"
        ".RS\n.nf\neval \"$(_SANDBOXED_RUN_COMPLETE=bash_source sandboxed-run)\"\n.fi\n.RE\n"
        "zsh_source and fish_source give the scripts for zsh and fish."),
}

# Sections written by hand, in man(7)'s order after OPTIONS and the exit status; lines that begin with a dot
# are requests, every other line is text.
EXAMPLES = (
    ("Run a backup script whose EXIT trap unmounts what it mounted; Ctrl+C lets the trap finish:",
     "sandboxed-run --tmpfs /mnt -- ./backup.sh"),
    ("Give the job ten minutes, then SIGTERM and 30 seconds to clean up:",
     "sandboxed-run --timeout 10m --grace 30s -- ./job.sh"),
    ("A read-only system with a private /tmp and no network:",
     "sandboxed-run --read-only / --tmpfs /tmp --net none -- make test"),
    ("Name a sandbox, look into it from another terminal, and stop it:",
     "sandboxed-run --name nightly -- ./backup.sh &\nsandboxed-run --list\n"
     "sandboxed-run --enter nightly -- findmnt\nsandboxed-run --stop nightly --grace 1m"),
    ("Run a command once the sandbox is gone, and write the events as JSON lines:",
     "sandboxed-run --on-exit 'logger backup ended: $SANDBOXED_RUN_STATUS' \\\n"
     "    --json-status /run/backup.json -- ./backup.sh"),
)

FILES = (
    ("/run/sandboxed-run/NAME", "the registry entry (a listening socket of the sandbox's PID 1) of root's "
     "sandboxes; --list, --enter and --stop connect to it"),
    ("/run/user/UID/sandboxed-run/NAME", "the same for an ordinary user who has a login session"),
    ("/tmp/sandboxed-run-UID/NAME", "the same for an ordinary user without one (cron); the directory must "
     "belong to UID and be private"),
)

# The events the command writes (a sandbox.Job's "ready" is the API's alone), with every field but event and time;
# tests check them against docs/status.schema.json.
EVENTS = (
    ("started", "job_pid, mnt_ns, pid_ns, name: the job runs"),
    ("signal", "signal, origin: a signal was passed on to the job"),
    ("stopping", "reason, grace, signal: the sandbox is being stopped"),
    ("killed", "count, reason: processes were SIGKILLed (count null: the sandbox's PID 1 did not respond and was "
     "killed)"),
    ("exited", "code, signal, core_dumped, reason: the job's main process ended"),
    ("hook", "command, code, signal, core_dumped, error: an --on-exit hook ended, or could not run"),
    ("finished", "status, signal, core_dumped, error, usage: always last; a file without it means sandboxed-run "
     "was SIGKILLed"),
)

SEE_ALSO = ("bwrap(1)", "unshare(1)", "nsenter(1)", "systemd-run(1)", "setpriv(1)", "namespaces(7)",
            "pid_namespaces(7)", "mount_namespaces(7)", "user_namespaces(7)", "prctl(2)")

# The forms that act on running sandboxes, one synopsis line each: (flag, its operands as roff).
SYNOPSES = (
    ("--list", "[\\fB\\-\\-json\\fR]"),
    ("--enter", "\\fINAME\\fR [\\fB\\-\\-\\fR \\fICOMMAND\\fR [\\fIARG\\fR]...]"),
    ("--stop", "\\fINAME\\fR [\\fB\\-\\-grace\\fR \\fIDURATION\\fR]"),
)


def escape(text: str) -> str:
    """Text as roff shows it literally: backslashes and hyphens escaped, no line taken for a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line for line in text.split("\n"))


def _option(param: click.Option, ctx: click.Context) -> list[str]:
    names = ", ".join(f"\\fB{escape(opt)}\\fR" for opt in [*param.opts, *param.secondary_opts])
    record = param.get_help_record(ctx)
    metavar = "" if param.is_flag else f" \\fI{escape(param.make_metavar(ctx))}\\fR"
    return [".TP", names + metavar, escape(record[1] if record else "")]


def _block(paragraph: str) -> list[str]:
    """A paragraph of click's help text: filled, or kept line for line where click's \\b marks it."""
    if not paragraph.startswith("\b\n"):
        return [".PP", escape(" ".join(paragraph.split()))]
    title, _, body = paragraph[2:].partition("\n")
    return [".PP", escape(title), ".RS", ".nf", *(escape(line.strip()) for line in body.split("\n")), ".fi", ".RE"]


def _synopsis() -> list[str]:
    name = f"\\fB{escape(NAME)}\\fR"
    lines = [f"{name} [\\fIOPTIONS\\fR] [\\fB\\-\\-\\fR] \\fICOMMAND\\fR [\\fIARG\\fR]..."]
    lines += [f"{name} \\fB{escape(flag)}\\fR {operands}" for flag, operands in SYNOPSES]
    return [".nf", *lines, ".fi"]


def render(command: click.Command | None = None) -> str:
    """The page, in roff (man(7) macros)."""
    command = command or click_command()
    ctx = click.Context(command, info_name=NAME, **command.context_settings)
    paragraphs = HELP.strip().split("\n\n")
    summary = paragraphs[0].rstrip(".")
    lines = [f'.TH {NAME.upper()} 1 "" "{NAME} {__version__}" "User Commands"', ".SH NAME",
             f"{escape(NAME)} \\- {escape(summary[:1].lower() + summary[1:])}", ".SH SYNOPSIS", *_synopsis(),
             ".SH DESCRIPTION"]
    for paragraph in paragraphs:
        lines += _block(paragraph)
    lines.append(".SH OPTIONS")
    by_topic: dict[str, list[click.Option]] = {}
    for param in command.get_params(ctx):
        if isinstance(param, click.Option):
            by_topic.setdefault(BY_PARAM.get(param.name or "", "other"), []).append(param)
    for topic, title in (*TOPICS.items(), ("other", "Other")):
        if by_topic.get(topic):
            lines.append(f'.SS "{escape(title)}"')
            for param in by_topic[topic]:
                lines += _option(param, ctx)
    for block in EPILOG.split("\b\n")[1:]:  # click's mark of a block kept as it is
        title, _, body = block.strip("\n").partition("\n")
        lines += [f".SH {escape(title.rstrip(':').upper())}", ".nf"]
        lines += [escape(line[2:] if line.startswith("  ") else line) for line in body.rstrip().split("\n")]
        lines.append(".fi")
    lines += [".SH STATUS EVENTS", ".PP", escape(
        "--json-status FILE and --json-status-fd N write one JSON object per line, as each event happens: "
        '{"event": NAME, "time": UNIX_SECONDS, ...}. The events and their fields:')]
    for event, fields in EVENTS:
        lines += [".TP", f"\\fB{escape(event)}\\fR", escape(fields)]
    lines += [".SH FILES"]
    for path, what in FILES:
        lines += [".TP", f"\\fI{escape(path)}\\fR", escape(what)]
    for title, text in MORE.items():
        lines += [f".SH {title}", "\n".join(line if line.startswith(".") else escape(line)
                                            for line in text.split("\n"))]
    lines.append(".SH EXAMPLES")
    for what, example in EXAMPLES:
        lines += [".PP", escape(what), ".RS", ".nf", escape(example), ".fi", ".RE"]
    lines += [".SH SEE ALSO", ",\n".join(f"\\fB{escape(page.split('(')[0])}\\fR({page.split('(')[1]}"
                                        for page in SEE_ALSO)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())

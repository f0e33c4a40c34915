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
    "SEE ALSO": "The README.md of sandboxed-run: the Python API, the guarantees and their limits, the tests.",
}


def escape(text: str) -> str:
    """Text as roff shows it literally: backslashes and hyphens escaped, no line taken for a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line for line in text.split("\n"))


def _option(param: click.Option, ctx: click.Context) -> list[str]:
    names = ", ".join(f"\\fB{escape(opt)}\\fR" for opt in [*param.opts, *param.secondary_opts])
    record = param.get_help_record(ctx)
    metavar = "" if param.is_flag else f" \\fI{escape(param.make_metavar(ctx))}\\fR"
    return [".TP", names + metavar, escape(record[1] if record else "")]


def render(command: click.Command | None = None) -> str:
    """The page, in roff (man(7) macros)."""
    command = command or click_command()
    ctx = click.Context(command, info_name=NAME, **command.context_settings)
    paragraphs = HELP.strip().split("\n\n")
    summary = paragraphs[0].rstrip(".")
    lines = [f'.TH {NAME.upper()} 1 "" "{NAME} {__version__}" "User Commands"', ".SH NAME",
             f"{escape(NAME)} \\- {escape(summary[:1].lower() + summary[1:])}", ".SH SYNOPSIS",
             f"\\fB{escape(NAME)}\\fR [\\fIOPTIONS\\fR] [\\fB\\-\\-\\fR] \\fICOMMAND\\fR [\\fIARG\\fR]...",
             ".SH DESCRIPTION"]
    for paragraph in paragraphs:
        lines += [".PP", escape(" ".join(paragraph.split()))]
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
    for title, text in MORE.items():
        lines += [f".SH {title}", "\n".join(line if line.startswith(".") else escape(line)
                                            for line in text.split("\n"))]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())

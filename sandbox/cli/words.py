"""Reading the command line by the option table, without click.

Importing click costs more than everything else sandboxed-run does to run a job, so a command line
that is plainly valid is read here: --name VALUE, --name=VALUE, switches (--proc/--no-proc, -v),
repeatable options, then COMMAND (the first word that is not an option, or all after "--"; options
after it belong to the command). Anything else (--help, an unknown or incomplete option, no command)
returns None, and click, built from the same table, reads it and says what is wrong.
"""

from __future__ import annotations

from typing import Any

from sandboxed_run_helpers.shared.options import CLI, OPTIONS, RENAMED, Option, renamed


class UsageError(Exception):
    """A command line the table refuses: one line, exit status 2."""


_BY_WORD: dict[str, tuple[Option, object]] = {}  # a flag as typed -> (its option, the value a switch gives)
for _option in OPTIONS:
    if not _option.in_cli:
        continue
    if _option.switch:
        _BY_WORD[_option.flag] = (_option, True)
        if _option.default is True:
            _BY_WORD["--no-" + _option.flag[2:]] = (_option, False)
        if _option.short:
            _BY_WORD[_option.short] = (_option, True)
    else:
        for _word in (_option.flag, *_option.aliases):
            _BY_WORD[_word] = (_option, None)


# What needs no COMMAND (what to do with running sandboxes): their flags.
_NO_COMMAND = ("list", "enter", "stop")


def given(argv: list[str]) -> set[str]:
    """The options a command line gives (by the table's names), before its COMMAND. UsageError for an old
    option name (options.RENAMED), which click would call unknown."""
    split = _split(argv)
    return set(split[0]) if split is not None else set()


def read(argv: list[str]) -> tuple[dict[str, Any], tuple[str, ...]] | None:
    """The options as click gives them to the command (defaults as click shows them), and COMMAND; None
    for anything that is not plainly a valid command line."""
    split = _split(argv)
    if split is None:
        return None
    values, command = split
    if not command and not any(values.get(name) for name in _NO_COMMAND):
        return None
    out: dict[str, Any] = {}
    for option in OPTIONS:
        if not option.in_cli:
            continue
        if option.name in values:
            value = values[option.name]
            out[option.name] = tuple(value) if option.many else value
        elif option.switch:
            out[option.name] = option.default is True
        elif option.many:
            out[option.name] = ()
        else:
            out[option.name] = None if option.default is None else str(option.default)
    return out, command


def _split(argv: list[str]) -> tuple[dict[str, Any], tuple[str, ...]] | None:
    """The options given, as words (a list for a repeatable one), and COMMAND; None for an unknown or
    incomplete option."""
    values: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--":
            i += 1
            break
        if not word.startswith("-") or word == "-":
            break
        name, eq, inline = word.partition("=")
        known = _BY_WORD.get(name)
        if known is None:
            if name[2:] in RENAMED and name.startswith("--"):
                raise UsageError(renamed(name[2:], CLI))
            return None
        option, switched = known
        if option.switch:
            if eq:
                return None
            values[option.name] = switched
        else:
            if eq:
                value = inline
            elif i + 1 < len(argv):
                i += 1
                value = argv[i]
            else:
                return None
            if option.many:
                values.setdefault(option.name, []).append(value)
            else:
                values[option.name] = value
        i += 1
    return values, tuple(argv[i:])

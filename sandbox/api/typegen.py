"""Writes sandbox/api/options_typed.py, the sandbox options as a type checker sees them, from the option table.

`.venv/bin/python -m sandbox.api.typegen > sandbox/api/options_typed.py` (tests/test_typing.py keeps the file
equal to what this prints). Each API option of helpers/shared/options.py becomes a key of the TypedDict
SandboxOptions, typed by what its check accepts: the checks below by name, a list check by what it takes of
each item, a choice as a Literal; a check this module does not know is typed from the entry itself (a
repeatable option a list of strings, a switch a bool, an int's parse an int, else a string; None where
None is the default).
"""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Callable
from typing import Any

from sandboxed_run_helpers.shared import limits, mountspec, options
from sandboxed_run_helpers.shared.options import OPTIONS, Option

from .keywords import COMMAND_KEYWORDS

# What each check accepts, as the generated module spells it (its aliases: Path, Duration, Limit).
ACCEPTS: dict[Callable[..., Any], str] = {
    options.duration: "Duration",
    options._stop_signal: "str | int",
    options._paths: "Iterable[Path]",
    options._flag: "bool",
    options._maybe_flag: "bool | None",
    options._maybe_id: "int | None",
    options._hostname: "str | None",
    options._net: "str",
    options._hook: "str",
    options._hooks: "Iterable[str] | None",
    options._maybe_path: "str | None",
    options._sandbox_name: "str | None",
    options._setenv: "str",
    options._unsetenv: "str",
    mountspec.absolute_path: "Path",
    mountspec.tmpfs_value: "Path | tuple[Path, str | Mapping[str, str | int]]",
    mountspec.bind_value: "Path | tuple[Path, Path]",
    mountspec.overlay_value: "Path | tuple[Path, Path] | tuple[Path, Path, Path]",
    mountspec.symlink_value: "str | tuple[Path, Path]",
    limits.nice: "int | None",
    limits.ionice: "str | None",
    limits.rlimits: "Iterable[str | tuple[str, Limit]] | dict[str, Limit]",
    limits.umask: "int | str | None",
    limits.cap_drop: "Iterable[str]",
    limits.cap_keep: "Iterable[str]",
    limits.size: "int | str | None",
    limits.percent: "float | str | None",
    limits.weight: "int | None",
    limits.count: "int | None",
}
# Checks made lazily (options._later: their modules load only when the option is given), and lambdas.
BY_NAME = {"on_event": "EventHandler | None", "user": "str | int | None", "group": "str | int | None",
           "extra_groups": "Iterable[str | int] | None", "syscall_filter": "Iterable[str]",
           "syscall_errno": "str | int"}

HEADER = '''"""The sandbox options as a type checker sees them, written by sandbox/api/typegen.py from the option table
(helpers/shared/options.py): do not edit; regenerate with
`.venv/bin/python -m sandbox.api.typegen > sandbox/api/options_typed.py`.

Imported only under TYPE_CHECKING (sandbox/api/typed.py): nothing of it runs when a program uses the API.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, TypedDict

Path = str | os.PathLike[str]
Duration = float | str  # seconds, or "500ms", "10m", "1h30m"
Limit = int | str | tuple[int | str | None, int | str | None]  # one resource limit: SOFT, "SOFT:HARD", (soft, hard)
EventHandler = Callable[[str, dict[str, Any]], object]  # on_event(name, fields)
'''


def accepts(option: Option) -> str:
    """The type of what option's check accepts, as the generated module spells it."""
    shown = BY_NAME.get(option.name) or ACCEPTS.get(option.check) or _combined(option.check) or _inferred(option)
    if option.default is None and "None" not in shown.split(" | "):
        shown += " | None"
    return shown


def _combined(check: Callable[..., Any]) -> str | None:
    """A check made by one of the table's combinators: a list of items (its item check), or a choice."""
    try:
        made_of = inspect.getclosurevars(check).nonlocals
    except TypeError:  # not a Python function
        return None
    if "item_check" in made_of and made_of["item_check"] in ACCEPTS:
        return f"Iterable[{ACCEPTS[made_of['item_check']]}]"
    if "choices" in made_of:
        return "Literal[" + ", ".join(f'"{choice}"' for choice in made_of["choices"]) + "]"
    return None


def _inferred(option: Option) -> str:
    if option.many:
        return "Iterable[str]"
    if option.switch:
        return "bool"
    if option.parse is int:
        return "int"
    if isinstance(option.default, float):
        return "float"
    return "str"


def _fields(names: list[str]) -> str:
    by_name = {option.name: option for option in OPTIONS}
    lines = []
    for name in names:
        option = by_name[name]
        lines += textwrap.wrap(option.help, 112, initial_indent="    #: ", subsequent_indent="    #: ",
                               break_on_hyphens=False)
        lines.append(f"    {name}: {accepts(option)}")
    return "\n".join(lines)


def render() -> str:
    """The module, as it should be checked in."""
    sandbox_names = [option.name for option in OPTIONS if option.in_api and option.name not in COMMAND_KEYWORDS]
    command_names = list(COMMAND_KEYWORDS)
    return (HEADER + "\n\n"
            "class CommandOptions(TypedDict, total=False):\n"
            '    """The options of a command of a Job (job.run, job.Popen): the Job has the sandbox\'s."""\n\n'
            f"{_fields(command_names)}\n\n\n"
            "class SandboxOptions(CommandOptions, total=False):\n"
            '    """The options of a sandbox of its own (run, Popen, Job, run_async, create_process, AsyncJob),\n'
            '    the command\'s flags of the same names."""\n\n'
            f"{_fields(sandbox_names)}\n")


if __name__ == "__main__":
    print(render(), end="")

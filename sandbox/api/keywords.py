"""The API's keyword options, from the one option table (sandboxed_run_helpers.shared.options).

run, Popen, Job and the asyncio variants take the table's API options as keywords: checked here
(TypeError and ValueError, worded with the API's names), and shown in their signatures and
docstrings, which are derived from the table too.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

from sandboxed_run_helpers.shared import registry
from sandboxed_run_helpers.shared.options import API, API_KEYWORDS, BY_NAME, SandboxSpec, check_api_options
from sandboxed_run_helpers.shared.signals import inherited_ignores

from .collect import not_started

F = TypeVar("F", bound=Callable[..., Any])

SANDBOX_KEYWORDS = API_KEYWORDS  # a sandbox of its own: every API option
COMMAND_KEYWORDS = ("on_event",)  # a command of a Job: the Job has the sandbox's options


class Chosen(NamedTuple):
    spec: SandboxSpec
    on_exit: tuple[str, ...]
    on_event: Callable[[str, dict[str, Any]], None] | None
    registry: str | None  # where the sandbox is listed (None: unlisted)


# Every option unused: the spec each call would build, by what it depends on then (the signals the caller ignores,
# and its euid, which decides the user namespace). A spec is immutable; the host check and the caveats of one
# without options find nothing, and the registry is placed anew for each call.
_UNUSED: dict[tuple[tuple[int, ...], int], SandboxSpec] = {}


def choose(given: Mapping[str, object]) -> Chosen:
    """The sandbox options of one call, checked before anything starts (then against the host, SandboxError)."""
    ignored = tuple(inherited_ignores())
    if not given:
        spec = _UNUSED.get((ignored, os.geteuid()))
        if spec is not None:
            return Chosen(spec, (), None, registry.place(None, _warn))
    values = check_api_options(given, SANDBOX_KEYWORDS)
    spec = SandboxSpec.build(values, API, ignored_signals=ignored, each_checked=True)
    if not given and len(_UNUSED) < 8 and not spec.caveats(API):
        _UNUSED[(ignored, os.geteuid())] = spec
    with not_started(values["on_event"]):
        spec.check_host(API)
        for caveat in spec.caveats(API):
            _warn(caveat)
        return Chosen(spec, values["on_exit"], values["on_event"], registry.place(spec.name, _warn))


def _warn(message: str) -> None:
    import warnings

    warnings.warn(message, RuntimeWarning, stacklevel=4)


def with_options(*keywords: str, passes_to: Callable[..., Any] | None = None,
                 without: Sequence[str] = ()) -> Callable[[F], F]:
    """Show these options of the table in the function's signature (for help() and editors) and docstring,
    after the keyword parameters of passes_to (Popen's stdin, env, cwd, text...) that the function hands on
    in its **options, less those it refuses or sets itself (without)."""
    def decorate(func: F) -> F:
        signature = inspect.signature(func)
        params = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        taken = {p.name for p in params} | set(without)
        if passes_to is not None:
            # Popen's bufsize and executable may come by position too; handed on, they are keywords.
            params += [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
                       for p in inspect.signature(passes_to).parameters.values()
                       if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
                       and p.name not in taken and p.name not in keywords and p.name not in ("self", "job")]
        params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=BY_NAME[name].default)
                   for name in keywords if name not in taken]
        func.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        lines = [f"    {name}: {BY_NAME[name].help}" for name in keywords]
        func.__doc__ = (func.__doc__ or "").rstrip() + "\n\n    Options (the command's flags of the same names):\n" \
            + "\n".join(lines) + "\n"
        return func
    return decorate

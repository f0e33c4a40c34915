"""The structure the code promises (ARCHITECTURE.md): one option table behind every front end, one typed
wire whose messages the document lists, and imports that go one way only."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import sandbox
from sandbox.cli import click_command
from sandboxed_run_helpers.shared import wire
from sandboxed_run_helpers.shared.options import OPTIONS, SandboxSpec

ROOT = Path(__file__).resolve().parent.parent
# subprocess's own parameters, which the API takes as subprocess does (not options of ours).
SUBPROCESS = {"args", "stdin", "input", "stdout", "stderr", "capture_output", "check", "timeout", "env", "cwd",
              "shell", "text", "encoding", "errors", "universal_newlines", "deliver_cancel", "self"}


def test_the_command_line_options_are_the_tables():
    flags = {param.name: param.opts for param in click_command().params
             if param.name not in ("command", "help", "version")}
    table = {o.name: o for o in OPTIONS if o.in_cli}
    assert set(flags) == set(table)
    for name, option in table.items():
        assert option.flag in flags[name] or f"{option.flag}/--no-{option.flag[2:]}".split("/")[0] in flags[name]


def test_the_api_keywords_are_the_tables():
    api = {o.name for o in OPTIONS if o.in_api}
    for entry in (sandbox.run, sandbox.Popen, sandbox.Job, sandbox.run_async, sandbox.create_process,
                  sandbox.AsyncJob):
        keywords = set(inspect.signature(entry).parameters) - SUBPROCESS
        assert keywords == api, entry
    assert set(inspect.signature(sandbox.JobProcess).parameters) - SUBPROCESS == {"job", "extra_fds", "on_event"}


def test_the_spec_the_reaper_gets_is_the_tables_sandbox_options():
    sandbox_options = [o.name for o in OPTIONS if o.scope == "sandbox"]
    assert list(SandboxSpec.__slots__) == [*sandbox_options, "ignored_signals"]
    spec = SandboxSpec.build({"tmpfs": ["/mnt"], "bind": ["/a:/b"]})
    assert SandboxSpec.from_wire(spec.to_wire()) == spec


def test_the_document_lists_every_message_of_the_wire():
    assert set(wire.RECORDS) == set(wire.Kind)
    assert wire.table() in (ROOT / "ARCHITECTURE.md").read_text(), "ARCHITECTURE.md's message table is stale"


def imports_of(path: Path) -> set[str]:
    """The modules a file imports, absolute, relative ones resolved against its package."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def test_imports_go_one_way():
    """sandbox (the caller's side) may use the helpers; the helpers never use sandbox; the shared layer uses
    nothing above it (no process's module)."""
    processes = ("launch", "reaper", "server", "monitor", "userns", "inside")
    for path in (ROOT / "helpers").rglob("*.py"):
        imported = imports_of(path)
        assert not any(name == "sandbox" or name.startswith("sandbox.") for name in imported), path
        if path.parent.name == "shared":
            above = {name for name in imported if name.startswith("helpers.")
                     and name.split(".")[1] in processes}
            assert not above, (path, above)


COMMAND_LINES = [
    ["true"], ["--", "true"], ["-v", "true"], ["--verbose", "--", "-v"], ["--grace", "3", "--grace=4", "x"],
    ["--tmpfs", "/a", "--tmpfs=/b", "--bind", "/c:/d", "--ro-bind", "/e", "true", "--tmpfs", "/z"],
    ["--no-proc", "--proc", "--userns", "--userns-uid", "5", "--userns-gid=6", "id"],
    ["--net", "none", "--hostname", "h", "x"],
    ["--chdir", "/tmp", "--cwd=/", "--setenv", "A=1", "--setenv", "B=2", "--unsetenv", "C", "env"],
    ["--on-exit", "echo 1", "--on-exit=echo 2", "--json-status", "/tmp/s", "--timeout", "inf", "x", "-v"],
    ["--stop-signal", "-9", "true"], ["--propagation", "private", "-", "x"],
    ["--name", "backup", "true"], ["--list"], ["--list", "--json"], ["--stop", "x", "--grace", "1"],
    ["--enter", "x"], ["--enter=x", "--", "sh", "-c", "true"],
    ["--overlay", "/a:/b", "--dev=/dev", "--dir", "/x", "--symlink", "a:/b", "--mkdir", "--tmpfs", "/t:size=1M", "x"],
]
NOT_PLAIN = [[], ["--"], ["--help"], ["-h", "true"], ["--bogus", "true"], ["--grace"], ["--userns=1", "true"],
             ["-vh", "true"], ["--tmpfs"], ["--stop"], ["--name", "x"]]


def test_the_fast_reading_of_a_command_line_is_clicks():
    """words.py reads a plainly valid command line as click would, from the same table; the rest is click's."""
    import click

    from sandbox.cli import words

    command = click_command()
    for argv in COMMAND_LINES:
        ctx = command.make_context("sandboxed-run", list(argv), resilient_parsing=False)
        values = dict(ctx.params)
        argument = values.pop("command")
        assert words.read(list(argv)) == (values, tuple(argument)), argv
    for argv in NOT_PLAIN:
        assert words.read(list(argv)) is None, argv
        try:
            command.make_context("sandboxed-run", list(argv))
        except (click.exceptions.Exit, click.UsageError):
            pass  # click reads it: help, or a mistake it names

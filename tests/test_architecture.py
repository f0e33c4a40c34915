"""The structure the code promises (ARCHITECTURE.md): one option table behind every front end, one typed
wire whose messages the document lists, and imports that go one way only."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import sandbox
from sandbox.cli import click_command
from sandboxed_run_helpers.shared import wire
from sandboxed_run_helpers.shared.options import OPTIONS, SandboxSpec

ROOT = Path(__file__).resolve().parent.parent
# subprocess's own parameters, which the API takes as subprocess does (not options of ours).
SUBPROCESS = {"args", "stdin", "input", "stdout", "stderr", "capture_output", "check", "timeout", "env", "cwd",
              "shell", "text", "encoding", "errors", "universal_newlines", "deliver_cancel", "self", "limit",
              "pass_fds", "executable", "bufsize", "close_fds", "preexec_fn", "restore_signals", "start_new_session",
              "process_group", "pipesize", "startupinfo", "creationflags"}


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
    assert set(inspect.signature(sandbox.JobProcess).parameters) - SUBPROCESS == {"job", "on_event"}


def test_the_spec_the_reaper_gets_is_the_tables_sandbox_options():
    sandbox_options = [o.name for o in OPTIONS if o.scope == "sandbox"]
    assert list(SandboxSpec.__slots__) == [*sandbox_options, "ignored_signals"]
    spec = SandboxSpec.build({"tmpfs": ["/mnt"], "bind": ["/a:/b"]})
    assert SandboxSpec.from_wire(spec.to_wire()) == spec


def test_the_document_lists_every_message_of_the_wire():
    assert set(wire.RECORDS) == set(wire.Kind)
    assert wire.table() in (ROOT / "ARCHITECTURE.md").read_text(), "ARCHITECTURE.md's message table is stale"


INSTALLED = {"helpers": "sandboxed_run_helpers", "sandbox": "sandbox"}  # folder -> the package's installed name
# The layer every process uses; every other module or package of helpers/ is one process's (found, not listed).
SHARED = "sandboxed_run_helpers.shared"


def module_of(path: Path) -> str:
    """A file's module, by its installed name: helpers/reaper/main.py is sandboxed_run_helpers.reaper.main."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    parts[0] = INSTALLED[parts[0]]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, source: str | None = None) -> set[str]:
    """The modules a file imports, absolute (by installed names), relative ones resolved against its package;
    for `from X import name`, both X and X.name (name may be a module)."""
    module = module_of(path)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(source if source is not None else path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            imported = ".".join([*base, node.module] if node.module else base)
            found.add(imported)
            found.update(f"{imported}.{alias.name}" for alias in node.names)
    return found


def processes() -> set[str]:
    """Every process's package or module: whatever helpers/ holds beside the shared layer."""
    return {INSTALLED["helpers"] + "." + (entry.stem if entry.is_file() else entry.name)
            for entry in (ROOT / "helpers").iterdir()
            if (entry.suffix == ".py" and entry.stem != "__init__") or (entry.is_dir() and entry.name not in
                                                                          ("shared", "__pycache__"))}


def upward(path: Path, source: str | None = None) -> set[str]:
    """The imports of a file that go the wrong way: from helpers/ to the caller's side (sandbox), or from the
    shared layer to any process's module."""
    imported = imports_of(path, source)
    wrong = {name for name in imported if name == "sandbox" or name.startswith("sandbox.")} \
        if module_of(path).startswith(INSTALLED["helpers"]) else set()
    if module_of(path).split(".")[0] == "sandbox":
        # The caller's side starts processes (launch, monitor, the server) and uses the shared layer; what a
        # process does inside (the reaper's modules) is never its to import.
        wrong |= {name for name in imported if name.startswith(INSTALLED["helpers"] + ".reaper")}
    if module_of(path).startswith(SHARED):
        wrong |= {name for name in imported for process in processes()
                  if name == process or name.startswith(process + ".")}
    return wrong


def test_imports_go_one_way():
    """sandbox (the caller's side) may use the helpers; the helpers never use sandbox; the shared layer uses
    nothing above it (no process's module), whether imported by a relative name or an absolute one."""
    assert {"sandboxed_run_helpers.reaper", "sandboxed_run_helpers.launch", "sandboxed_run_helpers.server",
            "sandboxed_run_helpers.inside", "sandboxed_run_helpers.caller"} <= processes()
    for path in [*(ROOT / "helpers").rglob("*.py"), *(ROOT / "sandbox").rglob("*.py")]:
        assert not upward(path), (path, upward(path))


@pytest.mark.parametrize("probe", [
    "from sandboxed_run_helpers.reaper import main", "import sandboxed_run_helpers.server",
    "from ..reaper.commands import resolve", "from .. import launch", "from sandboxed_run_helpers import caller",
    "import sandbox.running", "from sandbox import run",
])
def test_an_upward_import_of_the_shared_layer_fails_the_check(probe):
    """A probe module of the shared layer that imports a process's module (or the caller's side) is caught."""
    assert upward(ROOT / "helpers" / "shared" / "probe.py", probe + "\n")
    assert not upward(ROOT / "helpers" / "shared" / "probe.py", "from . import wire\nimport os\n")


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


def test_the_document_names_every_module_and_process():
    """ARCHITECTURE.md stays true as modules come: it names every module of the shared layer and the reaper,
    and every process's code."""
    document = (ROOT / "ARCHITECTURE.md").read_text()
    for path in [*(ROOT / "helpers" / "shared").glob("*.py"), *(ROOT / "helpers" / "reaper").glob("*.py")]:
        if path.stem not in ("__init__", "main"):
            assert f"`{path.name}`" in document, path
    for process in processes():
        name = process.rsplit(".", 1)[1]
        assert f"helpers/{name}" in document, process


def test_the_callers_side_importing_the_reapers_modules_fails_the_check():
    probe = ROOT / "sandbox" / "cli" / "probe.py"
    assert upward(probe, "from sandboxed_run_helpers.reaper.commands import resolve\n")
    assert not upward(probe, "from sandboxed_run_helpers.shared import attributes\n"
                             "from sandboxed_run_helpers import launch\n")

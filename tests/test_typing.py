"""The API as a type checker and help() see it: py.typed, every sandbox option a typed keyword (written from the
option table), typed results, and signatures that show subprocess's parameters and the options; all of it at
no cost to a program that runs."""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import sys
import tomllib
import typing
from pathlib import Path

import pytest

import sandbox
from sandbox.api import typegen
from sandboxed_run_helpers.shared.options import API_KEYWORDS

ROOT = Path(__file__).resolve().parent.parent
TYPED = ROOT / "sandbox" / "api" / "options_typed.py"
TYPECHECK = ROOT / ".ci" / "typecheck"
EXAMPLE = ROOT / "examples" / "typed_use.py"
PROCESS_KEYWORDS = ("env", "cwd", "shell", "text", "encoding", "errors", "universal_newlines", "pass_fds", "executable",
                    "bufsize", "close_fds", "preexec_fn", "restore_signals", "start_new_session", "process_group",
                    "pipesize", "startupinfo", "creationflags")


def test_the_typed_options_are_the_tables():
    assert TYPED.read_text() == typegen.render(), \
        "sandbox/api/options_typed.py is stale: .venv/bin/python -m sandbox.api.typegen > sandbox/api/options_typed.py"


def test_every_api_option_is_a_typed_keyword():
    from sandbox.api.options_typed import SandboxOptions

    hints = typing.get_type_hints(SandboxOptions)
    assert sorted(hints) == sorted(API_KEYWORDS)
    assert hints["grace"] == float | str  # "1h" as well as 3600


def test_the_packages_are_marked_typed_and_the_wheel_carries_the_markers():
    assert (ROOT / "sandbox" / "py.typed").is_file() and (ROOT / "helpers" / "py.typed").is_file()
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert data == {"sandbox": ["py.typed"], "sandboxed_run_helpers": ["py.typed"]}


def typecheck(script: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TYPECHECK), str(script)], capture_output=True, text=True, timeout=300)


def test_mypy_strict_accepts_a_typed_use_of_every_entry_point():
    result = typecheck(EXAMPLE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_accepts_the_package_itself():
    result = subprocess.run([sys.executable, str(TYPECHECK), "--package"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


MISTAKES = '''
import asyncio
import sandbox

sandbox.run(["true"], tmfps=["/mnt"])
sandbox.Popen(["true"], grace=[1])
sandbox.Job(net=None)
asyncio.run(sandbox.run_async(["true"], propagation="shared"))
with sandbox.Job() as job:
    job.run(["true"], tmpfs=["/mnt"])
n: str = sandbox.run(["true"]).returncode
sandbox.run(["true"], preexec_fn=print)
'''


def test_mypy_strict_rejects_a_misspelt_option_and_wrong_values(tmp_path):
    script = tmp_path / "mistakes.py"
    script.write_text(MISTAKES)
    result = typecheck(script)
    assert result.returncode == 1, result.stdout + result.stderr
    found = [line.split(": error: ")[1] for line in result.stdout.splitlines() if ": error: " in line]
    for words in ('Unexpected keyword argument "tmfps" for "run"', 'Argument "grace" to "Popen"',
                  'Argument "net" to "Job"', 'Argument "propagation" to "run_async"',
                  'Unexpected keyword argument "tmpfs" for "run" of "Job"', 'expression has type "int"',
                  'Argument "preexec_fn" to "run"'):
        assert any(words in line for line in found), (words, result.stdout)
    assert len(found) == 7, result.stdout


ENTRY_POINTS = {
    "run": sandbox.run, "Popen": sandbox.Popen, "Job": sandbox.Job, "run_async": sandbox.run_async,
    "create_process": sandbox.create_process, "AsyncJob": sandbox.AsyncJob, "call": sandbox.call,
    "check_call": sandbox.check_call, "check_output": sandbox.check_output,
}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_the_signature_shows_subprocesss_parameters_and_every_option(entry):
    names = list(inspect.signature(ENTRY_POINTS[entry]).parameters)
    assert all(name in names for name in API_KEYWORDS), names
    if entry not in ("Job", "AsyncJob"):
        assert all(name in names for name in PROCESS_KEYWORDS), names
    if entry in ("Popen", "create_process", "call"):
        assert all(name in names for name in ("stdin", "stdout", "stderr")), names


@pytest.mark.parametrize("method", ["Job.run", "Job.Popen", "AsyncJob.run", "AsyncJob.create_process"])
def test_a_jobs_commands_show_subprocesss_parameters_and_on_event_alone(method):
    owner, name = method.split(".")
    names = list(inspect.signature(getattr(getattr(sandbox, owner), name)).parameters)
    assert all(name in names for name in (*PROCESS_KEYWORDS, "stdin", "stdout", "stderr", "on_event")), names
    assert "tmpfs" not in names and "extra_fds" not in names


def result_through(entry: str) -> subprocess.CompletedProcess:
    job = ["sh", "-c", "echo out; exit 3"]
    if entry == "run":
        return sandbox.run(job, capture_output=True)
    if entry == "Job":
        with sandbox.Job() as session:
            return session.run(job, capture_output=True)
    if entry == "run_async":
        return asyncio.run(sandbox.run_async(job, capture_output=True))

    async def in_a_job() -> subprocess.CompletedProcess:
        async with sandbox.AsyncJob() as session:
            return await session.run(job, capture_output=True)
    return asyncio.run(in_a_job())


@pytest.mark.parametrize("entry", ["run", "Job", "run_async", "AsyncJob"])
def test_the_result_is_subprocesss_with_events_and_usage(entry, no_leftovers):
    result = result_through(entry)
    assert isinstance(result, subprocess.CompletedProcess) and isinstance(result, sandbox.CompletedProcess)
    assert (result.returncode, result.stdout) == (3, b"out\n")
    assert result.events[-1][0] == "finished" and result.events[0][0] == "started"
    assert isinstance(result.usage, sandbox.Usage)


def test_the_types_cost_a_running_program_nothing(no_leftovers):
    code = ("import sys, sandbox; sandbox.run(['true']); sandbox.Job; sandbox.run_async; sandbox.check_output; "
            "print(sorted(m for m in sys.modules if m.endswith(('options_typed', '.typed', 'typegen'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out == "[]\n"

"""job.call from a script without `if __name__ == "__main__":` fails with one clear error instead of running the
script (and starting its sandbox) again inside the sandbox; a guarded script, or a function that does not
need the script, works. Through Job.call and AsyncJob.call."""

from __future__ import annotations

import subprocess

import pytest

from support import PYTHON, log_lines

HEADER = """
import asyncio, os, sys, sandbox
LOG = sys.argv[1]
def note(text):
    with open(LOG, "a") as f:
        f.write(text + "\\n")
def mounted():
    return sorted(os.listdir("/mnt"))
"""

CALL = {
    "Job": """
with sandbox.Job(tmpfs=["/mnt"]) as job:
    job.run(["touch", "/mnt/x"], check=True)
    note("result %s" % job.call({func}))
""",
    "AsyncJob": """
async def main():
    async with sandbox.AsyncJob(tmpfs=["/mnt"]) as job:
        await job.run(["touch", "/mnt/x"], check=True)
        note("result %s" % await job.call({func}))
asyncio.run(main())
""",
}


def indent(code: str) -> str:
    return "".join("    " + line + "\n" for line in code.strip().splitlines())


def run_script(tmp_path, text: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    script = tmp_path / "script.py"
    script.write_text(text)
    log = tmp_path / "log"
    result = subprocess.run([PYTHON, str(script), str(log)], capture_output=True, text=True, timeout=60,
                            cwd=tmp_path)
    return result, log_lines(log)


@pytest.mark.parametrize("entry", ["Job", "AsyncJob"])
def test_an_unguarded_script_gets_a_clear_error_and_runs_once(entry, tmp_path, no_leftovers):
    result, log = run_script(tmp_path, HEADER + 'note("top level")\n' + CALL[entry].format(func="mounted"))
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("sandbox.api.calling.UnguardedScript: job.call needs ") and \
        'if __name__ == "__main__":' in last and str(tmp_path / "script.py") in last, result.stderr
    assert log == ["top level"]  # never run a second time, inside


@pytest.mark.parametrize("entry", ["Job", "AsyncJob"])
def test_a_guarded_script_calls_its_own_function(entry, tmp_path):
    text = HEADER + 'if __name__ == "__main__":\n    note("top level")\n' + indent(CALL[entry].format(func="mounted"))
    result, log = run_script(tmp_path, text)
    assert result.returncode == 0, result.stderr
    assert log == ["top level", "result ['x']"]


@pytest.mark.parametrize("entry", ["Job", "AsyncJob"])
def test_an_unguarded_script_may_call_what_it_imported(entry, tmp_path):
    # os.listdir pickles as posix.listdir: the job does not need the script, so it never runs it.
    result, log = run_script(tmp_path, HEADER + 'note("top level")\n' + CALL[entry].format(func='os.listdir, "/mnt"'))
    assert result.returncode == 0, result.stderr
    assert log == ["top level", "result ['x']"]


def test_a_sandbox_started_by_the_scripts_top_level_is_refused_inside(tmp_path, no_leftovers):
    # The call is guarded, but the script starts a sandbox on import: inside, that is refused, and the call
    # raises the same error.
    text = HEADER + 'note("top level")\nsandbox.run(["true"])\nif __name__ == "__main__":\n' + \
        indent(CALL["Job"].format(func="mounted"))
    result, log = run_script(tmp_path, text)
    assert result.returncode == 1
    assert "UnguardedScript: job.call needs" in result.stderr.strip().splitlines()[-1], result.stderr
    assert log == ["top level", "top level"]  # the second time inside, stopped before its sandbox.run


@pytest.mark.parametrize("entry", ["Job", "AsyncJob"])
def test_a_script_without_py_suffix_calls_its_own_function_and_is_guarded_too(entry, tmp_path, no_leftovers):
    """An executable script named without .py (./backup) is loaded inside as runpy loads it."""
    call = CALL[entry].format(func="mounted")
    guarded = HEADER + 'if __name__ == "__main__":\n    note("top level")\n' + indent(call)
    unguarded = HEADER + 'note("top level")\n' + call
    for text, status, log_wanted in ((guarded, 0, ["top level", "result ['x']"]), (unguarded, 1, ["top level"])):
        script, log = tmp_path / "backup", tmp_path / "log"
        script.write_text(text)
        log.unlink(missing_ok=True)
        result = subprocess.run([PYTHON, str(script), str(log)], capture_output=True, text=True, timeout=60)
        assert result.returncode == status, result.stderr
        assert log_lines(log) == log_wanted
        if status:
            assert "UnguardedScript: job.call needs " in result.stderr.strip().splitlines()[-1], result.stderr


@pytest.mark.parametrize("entry", ["Job", "AsyncJob"])
def test_a_function_of_python_c_is_refused_before_anything_runs(entry, tmp_path, no_leftovers):
    """python -c (or standard input) leaves nothing the job could load to find the function: one clear error
    here, not an AttributeError from inside the job."""
    log = tmp_path / "log"
    code = HEADER + CALL[entry].format(func="mounted")
    result = subprocess.run([PYTHON, "-c", code, str(log)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("TypeError: job.call: <function mounted") and "define it in a module" in last, last
    assert log_lines(log) == []


OWN_CLASSES = """
class Point:
    def __init__(self, x):
        self.x = x
class Refused(Exception):
    pass
class TwoArguments(Exception):
    def __init__(self, a, b):
        super().__init__(a)
def point():
    return Point(7)
def refuse():
    raise Refused("no")
def two():
    raise TwoArguments(1, 2)
async def outcome(job, func):
    try:
        result = job.call(func)
        if asyncio.iscoroutine(result):
            result = await result
        return "result %s %s" % (type(result).__name__, result.x)
    except Exception as exc:
        return "raised %s %s" % (type(exc).__name__, exc)
async def calls(job):
    for func in (point, refuse, two):
        note(await outcome(job, func))
"""

CALLS = {
    "Job": """
with sandbox.Job() as job:
    asyncio.run(calls(job))
""",
    "AsyncJob": """
async def main():
    async with sandbox.AsyncJob() as job:
        await calls(job)
asyncio.run(main())
""",
}


@pytest.mark.parametrize("entry", ["Job", "AsyncJob"])
def test_a_call_gives_back_objects_of_the_scripts_own_classes(entry, tmp_path, no_leftovers):
    """Inside, the script is loaded as __mp_main__: what its classes make comes back as the caller's __main__
    classes (it was ModuleNotFoundError: No module named '__mp_main__'); an outcome this side cannot rebuild is
    a TypeError that says so."""
    result, log = run_script(tmp_path, HEADER + OWN_CLASSES + 'if __name__ == "__main__":\n' + indent(CALLS[entry]))
    assert result.returncode == 0, result.stderr
    assert log[:2] == ["result Point 7", "raised Refused no"], log
    assert log[2].startswith("raised TypeError job.call: the outcome of <function two") and \
        "cannot be loaded here" in log[2], log


UNSENDABLE = """
def local_function():
    def inner():
        return 1
    return inner
async def sending(job):
    for func, args in ((lambda: 1, ()), (local_function(), ()), (len, ((i for i in "ab"),))):
        try:
            result = job.call(func, *args)
            if asyncio.iscoroutine(result):
                await result
            note("sent")
        except Exception as exc:
            note("raised %s %s" % (type(exc).__name__, exc))
"""


@pytest.mark.parametrize("entry", ["Job", "AsyncJob"])
def test_a_call_that_cannot_be_pickled_is_a_type_error_saying_so(entry, tmp_path, no_leftovers):
    """A lambda, a local function, an argument pickle refuses: a TypeError naming job.call, as docs/api.md says of
    what cannot be pickled (it was pickle's own PicklingError or AttributeError)."""
    calls = CALLS[entry].replace("calls(job)", "sending(job)")
    result, log = run_script(tmp_path, HEADER + UNSENDABLE + 'if __name__ == "__main__":\n' + indent(calls))
    assert result.returncode == 0, result.stderr
    assert len(log) == 3 and all(line.startswith("raised TypeError job.call: cannot send ") for line in log), log

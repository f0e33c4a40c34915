"""docs/status.schema.json: a valid JSON Schema, as exact as the code that writes the events, and in force: every
event the suite sees is checked against it (conftest.py, support.check_event), and a test that produced one
it refuses fails."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from sandbox.client import ReaperClient
from sandboxed_run_helpers.shared import hooks
from sandboxed_run_helpers.shared.signals import describe_status, signal_name
from sandboxed_run_helpers.shared.usage import Usage
from sandboxed_run_helpers.shared.wire import EventName, StopReason
from support import SCHEMA, check_event, read_status, status_events, take_schema_violations

SCHEMA_TEXT = json.loads(SCHEMA.read_text())
VALIDATOR = Draft202012Validator(SCHEMA_TEXT)
T = 1700000000.25
USAGE = Usage(1.5, 0.25, 0.125, 4096).as_dict()
FULL_USAGE = Usage(1.5, 0.25, 0.125, 4096, 1 << 20, 0, 512, 7, 1).as_dict()


def problems(event: dict) -> list[str]:
    return [error.message for error in VALIDATOR.iter_errors(event)]


def test_the_schema_is_a_draft_2020_12_schema():
    Draft202012Validator.check_schema(SCHEMA_TEXT)
    assert SCHEMA_TEXT["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_its_names_are_the_codes():
    defs = SCHEMA_TEXT["$defs"]
    assert SCHEMA_TEXT["properties"]["event"]["enum"] == [str(name) for name in EventName]
    assert {str(name) for name in EventName} <= set(defs)
    assert defs["stop_reason"]["enum"] == [str(reason) for reason in StopReason]
    assert list(defs["usage"]["properties"]) == list(Usage._fields) == defs["usage"]["required"]


@pytest.mark.parametrize("number", range(1, signal.SIGRTMAX + 1))
def test_every_signal_name_we_write_is_one(number):
    assert problems({"event": "signal", "time": T, "signal": signal_name(number), "origin": "launcher"}) == []


def wait_status(code: int | None = None, sig: int | None = None, core: bool = False) -> int:
    return (code << 8) if code is not None else sig | (0x80 if core else 0)


GOOD = [
    {"event": "started", "time": T, "job_pid": 1234, "mnt_ns": 4026532000, "pid_ns": 4026532001, "name": "sh-1a2b3c"},
    {"event": "started", "time": T, "job_pid": 2, "mnt_ns": 1, "pid_ns": 2, "name": None},
    {"event": "ready", "time": T, "mnt_ns": 4026532000, "pid_ns": 4026532001, "name": "t-0123456789"},
    {"event": "signal", "time": T, "signal": "SIGUSR1", "origin": "caller"},
    {"event": "signal", "time": T, "signal": "SIGRTMIN+3", "origin": "launcher"},
    *({"event": "stopping", "time": T, "reason": str(reason), "grace": 5.0, "signal": "SIGTERM"}
      for reason in StopReason if reason not in (StopReason.GRACE_OVER, StopReason.INTERRUPTED_REPEATEDLY)),
    {"event": "stopping", "time": T, "reason": "caller died", "grace": None, "signal": None},
    {"event": "stopping", "time": T, "reason": "interrupted repeatedly", "grace": 0.0, "signal": None},
    *({"event": "killed", "time": T, "count": 3, "reason": str(reason)} for reason in StopReason),
    {"event": "killed", "time": T, "count": None, "reason": "timeout"},
    {"event": "killed", "time": T, "count": None, "reason": None},
    {"event": "exited", "time": T, **describe_status(wait_status(0))},
    {"event": "exited", "time": T, **describe_status(wait_status(255))},
    {"event": "exited", "time": T, **describe_status(wait_status(sig=signal.SIGSEGV, core=True))},
    {"event": "exited", "time": T, **describe_status(wait_status(sig=signal.SIGKILL)), "reason": "out of memory"},
    {"event": "hook", "time": T, "command": "true", **describe_status(wait_status(3))},
    {"event": "hook", "time": T, "command": "true", **describe_status(None)},
    {"event": "hook", "time": T, "command": "x", "code": None, "signal": None, "error": "Permission denied"},
    {"event": "finished", "time": T, "status": 0, "signal": None, "core_dumped": False, "error": None, "usage": USAGE},
    {"event": "finished", "time": T, "status": 139, "signal": "SIGSEGV", "core_dumped": True, "error": None,
     "usage": FULL_USAGE},
    {"event": "finished", "time": T, "status": 125, "signal": None, "core_dumped": False, "error": "no", "usage": None},
]


@pytest.mark.parametrize("event", GOOD, ids=lambda e: e["event"])
def test_what_the_code_writes_is_valid(event):
    assert problems(event) == []


BAD = {
    "no event": {"time": T},
    "an unknown event": {"event": "paused", "time": T},
    "no time": {"event": "signal", "signal": "SIGINT", "origin": "caller"},
    "a time as text": {"event": "signal", "time": "now", "signal": "SIGINT", "origin": "caller"},
    "a field too many": {"event": "signal", "time": T, "signal": "SIGINT", "origin": "caller", "pid": 5},
    "a field missing": {"event": "started", "time": T, "job_pid": 5, "mnt_ns": 1, "pid_ns": 1},
    "a signal number": {"event": "signal", "time": T, "signal": 2, "origin": "caller"},
    "a signal without SIG": {"event": "signal", "time": T, "signal": "INT", "origin": "caller"},
    "an unknown origin": {"event": "signal", "time": T, "signal": "SIGINT", "origin": "someone"},
    "a pid of 0": {"event": "started", "time": T, "job_pid": 0, "mnt_ns": 1, "pid_ns": 1, "name": None},
    "a pid that is a bool": {"event": "started", "time": T, "job_pid": True, "mnt_ns": 1, "pid_ns": 1, "name": None},
    "an unknown stop reason": {"event": "stopping", "time": T, "reason": "bored", "grace": 1, "signal": None},
    "a stop for the grace period's end": {"event": "stopping", "time": T, "reason": "grace period over", "grace": 1,
                                          "signal": None},
    "a negative grace": {"event": "stopping", "time": T, "reason": "timeout", "grace": -1, "signal": None},
    "an impatient stop with a grace": {"event": "stopping", "time": T, "reason": "interrupted repeatedly",
                                       "grace": 5, "signal": None},
    "none killed": {"event": "killed", "time": T, "count": 0, "reason": "timeout"},
    "a count without a reason": {"event": "killed", "time": T, "count": 2, "reason": None},
    "both code and signal": {"event": "exited", "time": T, "code": 1, "signal": "SIGTERM", "core_dumped": False},
    "neither code nor signal": {"event": "exited", "time": T, "code": None, "signal": None, "core_dumped": None},
    "a core dump with a code": {"event": "exited", "time": T, "code": 0, "signal": None, "core_dumped": True},
    "a code past 255": {"event": "exited", "time": T, "code": 256, "signal": None, "core_dumped": False},
    "out of memory by SIGTERM": {"event": "exited", "time": T, "code": None, "signal": "SIGTERM",
                                 "core_dumped": False, "reason": "out of memory"},
    "another exit reason": {"event": "exited", "time": T, "code": None, "signal": "SIGKILL", "core_dumped": False,
                            "reason": "timeout"},
    "a hook's error and status": {"event": "hook", "time": T, "command": "x", "code": 1, "signal": None,
                                  "error": "Permission denied"},
    "a hook's error and core_dumped": {"event": "hook", "time": T, "command": "x", "code": None, "signal": None,
                                       "core_dumped": None, "error": "No such file"},
    "a hook without command": {"event": "hook", "time": T, "code": 0, "signal": None, "core_dumped": False},
    "a status past 255": {"event": "finished", "time": T, "status": 300, "signal": None, "core_dumped": False,
                          "error": None, "usage": None},
    "a core dump without a signal": {"event": "finished", "time": T, "status": 0, "signal": None, "core_dumped": True,
                                     "error": None, "usage": None},
    "a usage without a figure": {"event": "finished", "time": T, "status": 0, "signal": None, "core_dumped": False,
                                 "error": None, "usage": {k: v for k, v in USAGE.items() if k != "pids_peak"}},
    "a usage with another figure": {"event": "finished", "time": T, "status": 0, "signal": None,
                                    "core_dumped": False, "error": None, "usage": {**USAGE, "gpu": 1}},
    "a negative wall time": {"event": "finished", "time": T, "status": 0, "signal": None, "core_dumped": False,
                             "error": None, "usage": {**USAGE, "wall": -1.0}},
}


@pytest.mark.parametrize("case", BAD)
def test_what_the_code_never_writes_is_refused(case):
    assert problems(BAD[case]) != []
    check_event(BAD[case], case)
    [violation] = take_schema_violations()
    assert violation.startswith(f"{case}: ")


def test_hooks_as_the_hook_runner_reports_them():
    seen = []
    hooks.run_hooks(["true", "exit 7", "kill -TERM $$", "kill -SEGV $$"], {}, lambda n, f: seen.append((n, f)))
    assert [(name, fields["code"], fields["signal"]) for name, fields in seen] == [
        ("hook", 0, None), ("hook", 7, None), ("hook", None, "SIGTERM"), ("hook", None, "SIGSEGV")]
    for name, fields in seen:
        assert problems({"event": name, **fields}) == []


@pytest.mark.parametrize(("status", "sig", "error", "usage", "job_status"), [
    (0, None, None, Usage(0.5, 0.1, 0.1, 1000), 0), (130, signal.SIGINT, None, None, wait_status(sig=2)),
    (131, signal.SIGQUIT, None, None, wait_status(sig=3, core=True)), (125, None, "it failed", None, None),
    (2, None, "no command given", None, None),
])
def test_finished_as_the_launchers_report_it(status, sig, error, usage, job_status):
    seen = []
    hooks.finished(lambda n, f: seen.append((n, f)), status, sig, error, usage, job_status)
    [(name, fields)] = seen
    assert problems({"event": name, **fields}) == []
    assert problems(json.loads(json.dumps({"event": name, **fields}))) == []


# -- the checks are in force ----------------------------------------------------------------------------------

def test_a_client_records_no_event_unchecked():
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        client = ReaperClient(1, None, ours)
        client.emit("exited", {"code": 3, "time": T})
        client.emit("exited", {"code": 3, "signal": None, "core_dumped": False, "time": T})
    finally:
        ours.close()
        theirs.close()
    [violation] = take_schema_violations()
    assert "'signal' is a required property" in violation


def test_the_hook_runner_emits_no_event_unchecked():
    hooks.finished(None, "not a status")  # no callback: still checked (a call whose sandbox never started)
    [violation] = take_schema_violations()
    assert "'not a status' is not of type 'integer'" in violation


def test_a_status_file_is_read_checked(tmp_path):
    good = {"event": "signal", "time": T, "signal": "SIGINT", "origin": "caller"}
    path = tmp_path / "status.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "origin": "nobody"}) + "\n")
    assert read_status(path) == [good, {**good, "origin": "nobody"}]
    assert status_events(b"not json\n" + json.dumps(good).encode()) == [good]
    [violation] = take_schema_violations()
    assert violation.startswith(str(path)) and "'nobody' is not one of" in violation


if os.environ.get("SANDBOXED_RUN_SCHEMA_PROBE"):
    def test_probe_that_produces_an_event_the_schema_refuses():
        check_event({"event": "exited", "time": T}, "the probe")


def test_a_test_that_produced_an_event_the_schema_refuses_fails():
    """The probe above, run on its own, fails at its teardown with the violation, though its body passed."""
    here = Path(__file__)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"{here}::test_probe_that_produces_an_event_the_schema_refuses"],
        cwd=here.parent.parent.parent, env={**os.environ, "SANDBOXED_RUN_SCHEMA_PROBE": "1"},
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout
    assert "1 passed, 1 error" in result.stdout, result.stdout
    assert "events that docs/status.schema.json refuses: the probe: {'event': 'exited'" in result.stdout

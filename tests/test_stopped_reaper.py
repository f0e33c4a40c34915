"""A job that stops its PID 1, or its launcher, never stops the clock.

Three ways a job can try: ptrace its PID 1 into a tracing stop (a root job keeps CAP_SYS_PTRACE), move
PID 1 into a cgroup-v1 freezer cgroup and freeze it (a root job), or stop its own process group, which
the launcher (and the API's caller and spawn server) shares, while a setsid child runs on; or, its PID 1 left
alone, freeze one thread of a process in a PID namespace below its own, which no SIGKILL ends. Each one with
the timeout, with a stop from outside (--stop, stop_running) and with the caller's SIGKILL: the sandbox
ends within its grace period and a margin, reports the timeout (124, TimeoutExpired) or the stop, says in
one line when its PID 1 did not respond and had to be killed, and leaves nothing behind: no process, no
frozen cgroup. And the reaper is as hard to trace as the kernel allows: only a job with CAP_SYS_PTRACE on
the host can attach to it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from pathlib import Path

import pytest
from test_named import cli, unique_name
from test_named_users import user_dir, users  # noqa: F401 - fixtures

import sandbox
from support import CLI, PYTHON, all_ended, launched, read_status, wait_for

pytestmark = pytest.mark.kills_reapers  # a reaper killed for not responding leaves its registry entry

FREEZER = Path("/sys/fs/cgroup/freezer")
# Only root can: ptrace the reaper (it is not dumpable) and make a cgroup-v1 freezer group.
ATTACKS = [pytest.param("ptrace", marks=pytest.mark.root("ptraces the reaper")),
           pytest.param("freezer", marks=pytest.mark.root("a cgroup-v1 freezer group")), "stop the group"]
PID1_LINE = "did not respond"

SEIZE = """
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
if libc.ptrace(0x4206, 1, None, None) or libc.ptrace(0x4207, 1, None, None):  # PTRACE_SEIZE, PTRACE_INTERRUPT
    sys.exit("cannot ptrace PID 1: " + os.strerror(ctypes.get_errno()))
print("held", flush=True)
time.sleep(1000)
"""

ATTACH = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
if libc.ptrace(0x4206, 1, None, None) == 0:  # PTRACE_SEIZE
    libc.ptrace(17, 1, None, None)  # PTRACE_DETACH
    print("attached")
else:
    print(os.strerror(ctypes.get_errno()))
"""


def attack(kind: str, freezer: Path) -> list[str]:
    """The job: it takes hold (prints "held"), then runs on."""
    if kind == "ptrace":
        return [PYTHON, "-c", SEIZE]
    if kind == "freezer":
        return ["sh", "-c", f"d={freezer}; mkdir $d && echo 1 > $d/tasks && echo FROZEN > $d/freezer.state "
                            "&& echo held; exec sleep 1000"]
    return ["sh", "-c", "setsid sleep 1000 & echo held; kill -STOP 0; sleep 1000"]


@pytest.fixture
def freezer():
    """A freezer cgroup's path for the job to make; thawed, emptied and removed afterwards, whatever happened."""
    if not FREEZER.is_dir():
        pytest.skip("no cgroup-v1 freezer on this host")
    path = FREEZER / f"sbx-test-{uuid.uuid4().hex[:10]}"
    try:
        yield path
    finally:
        if path.exists():
            try:
                (path / "freezer.state").write_text("THAWED")
            except OSError:
                pass

            def removed() -> bool:
                try:
                    for pid in (path / "tasks").read_text().split():
                        try:
                            (FREEZER / "tasks").write_text(pid)
                        except OSError:
                            pass
                    path.rmdir()
                    return True
                except FileNotFoundError:
                    return True
                except OSError:
                    return False

            assert wait_for(removed, timeout=30), f"cannot remove {path}"


def nothing_frozen(freezer: Path) -> None:
    """The job's freezer cgroup, if it made one, is thawed and empty: the sandbox left nothing in it."""
    if freezer.exists():
        assert (freezer / "freezer.state").read_text().strip() == "THAWED"
        assert wait_for(lambda: (freezer / "tasks").read_text().split() == [])


def taken_hold(process: subprocess.Popen, kind: str, pipe=None) -> None:
    """The job says it took hold; a job that stops its group has stopped its launcher (or caller) too."""
    assert (pipe or process.stdout).readline() == b"held\n"
    if kind == "stop the group":
        assert wait_for(lambda: Path(f"/proc/{process.pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0] == b"T")


def events_of(path: Path) -> list[tuple[str, dict]]:
    return [(e.pop("event"), e) for e in read_status(path)] if path.exists() else []


def stopped_for(events: list[tuple[str, dict]], reason: str, kind: str) -> None:
    """The events say why the sandbox ended: a stopping event of the reaper's, or (its PID 1 frozen) the
    killed event of whoever killed it, with the stop's reason and no count."""
    if kind == "stop the group":
        assert ("stopping", reason) in [(name, fields.get("reason")) for name, fields in events], events
    else:
        assert [(n, f["reason"], f["count"]) for n, f in events if n == "killed"] == [("killed", reason, None)], events


API = """
import asyncio, json, subprocess, sys, sandbox
mode, argv, events, options = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
def note(event, fields):
    with open(events, "a") as f:
        f.write(json.dumps({"event": event, **fields}, default=str) + "\\n")
options.update(grace=1, on_event=note)
if mode == "run":
    try:
        sandbox.run(argv, timeout=1, **options)
    except subprocess.TimeoutExpired:
        print("TimeoutExpired", flush=True)
elif mode == "run_async":
    try:
        asyncio.run(sandbox.run_async(argv, timeout=1, **options))
    except subprocess.TimeoutExpired:
        print("TimeoutExpired", flush=True)
else:
    with sandbox.Popen(argv, **options) as process:
        print("returncode", process.wait(), flush=True)
"""


def api_program(mode: str, argv: list[str], events: Path, **options) -> list[str]:
    return [PYTHON, "-c", API, mode, json.dumps(argv), str(events), json.dumps(options)]


# In a process group of its own, as a shell's job is: the job stops that group, never the test's.
OWN_GROUP = {"process_group": 0, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}


# -- the timeout ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ATTACKS)
@pytest.mark.parametrize("entry", ["cli", "run", "run_async"])
def test_the_timeout_fires_whatever_the_job_stops(entry, kind, freezer, tmp_path, no_leftovers):
    events = tmp_path / "events.jsonl"
    argv = attack(kind, freezer)
    if entry == "cli":
        argv = [CLI, "--timeout", "1", "--grace", "1", "--json-status", str(events), "--", *argv]
    else:
        argv = api_program(entry, argv, events)
    with launched(argv, **OWN_GROUP) as launcher:
        taken_hold(launcher, kind)
        status = launcher.wait(timeout=60)
        out, err = launcher.communicate()
    if entry == "cli":
        assert status == 124
        assert events_of(events)[-1][1]["status"] == 124
    else:
        assert (status, out) == (0, b"TimeoutExpired\n"), (out, err)
    assert (PID1_LINE in err.decode()) == (kind != "stop the group"), err
    assert err.decode().count("\n") == (kind != "stop the group"), err
    stopped_for(events_of(events), "timeout", kind)
    assert wait_for(lambda: all_ended(no_leftovers))
    nothing_frozen(freezer)


# -- a stop from outside ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ATTACKS)
@pytest.mark.parametrize("entry", ["cli", "api"])
def test_a_stop_ends_the_sandbox_whatever_the_job_stops(entry, kind, freezer, tmp_path, capfd, no_leftovers):
    """--stop (sandbox.stop_running) ends it; its launcher (the API's caller), which the job may have stopped,
    reports it: the stop reason, or, if its PID 1 had to be killed, that the reaper died."""
    name = unique_name()
    events = tmp_path / "events.jsonl"
    argv = attack(kind, freezer)
    if entry == "cli":
        argv = [CLI, "--name", name, "--grace", "1", "--json-status", str(events), "--", *argv]
    else:
        argv = api_program("Popen", argv, events, name=name)
    with launched(argv, **OWN_GROUP) as launcher:
        taken_hold(launcher, kind)
        if entry == "cli":
            result = cli("--stop", name, "--grace", "1")
            assert result.returncode == 0, result.stderr
            said = result.stderr
        else:
            sandbox.stop_running(name, grace=1)
            said = capfd.readouterr().err
        assert (PID1_LINE in said) == (kind != "stop the group"), said
        status = launcher.wait(timeout=60)
        out, err = launcher.communicate()
    if kind == "stop the group":
        stopped_for(events_of(events), "requested", kind)
        if entry == "cli":
            assert status == -signal.SIGTERM  # the job's status: the stop signal
        else:
            assert out.endswith(b"returncode -15\n")
    else:  # its PID 1 was killed, and the job with it: all its launcher can tell
        if entry == "cli":
            assert status == 125 and "the kernel killed the job with it" in err.decode()
        else:
            assert out.endswith(b"returncode -9\n")
    assert wait_for(lambda: all_ended(no_leftovers))
    nothing_frozen(freezer)


# -- the caller's SIGKILL -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ATTACKS)
@pytest.mark.parametrize("entry", ["cli", "api"])
def test_the_callers_death_ends_the_sandbox_whatever_the_job_stops(entry, kind, freezer, tmp_path, no_leftovers):
    """The caller SIGKILLed: what is left of ours (the command's hook monitor, the API's spawn server) ends the
    sandbox within its grace and the margin and runs the hooks, even if the job had stopped it too. (The command
    without --on-exit leaves nothing of ours to do so: docs/signals.md.) The caller runs under a shell in the same
    process group, as in a script: its group is not orphaned by its death, so the kernel continues nobody."""
    hook_log = tmp_path / "hook.log"
    hook = f"echo \"$SANDBOXED_RUN_STOP_REASON\" >> {hook_log}"
    argv = attack(kind, freezer)
    if entry == "cli":
        argv = [CLI, "--grace", "1", "--on-exit", hook, "--", *argv]
    else:
        argv = api_program("Popen", argv, tmp_path / "events.jsonl", on_exit=[hook])
    script = '"$@" & echo "caller $!"; wait'
    with launched(["sh", "-c", script, "sh", *argv], **OWN_GROUP) as shell:
        caller = int(shell.stdout.readline().split()[1])
        assert shell.stdout.readline() == b"held\n"
        if kind == "stop the group":
            assert wait_for(lambda: Path(f"/proc/{caller}/stat").read_bytes().rsplit(b")", 1)[1].split()[0] == b"T")
        os.kill(caller, signal.SIGKILL)
        assert wait_for(lambda: all_ended(no_leftovers), timeout=60)
        err = shell.stderr.read().decode()
    assert hook_log.read_text() == "caller died\n"
    assert (PID1_LINE in err) == (kind != "stop the group"), err
    nothing_frozen(freezer)


# -- who may trace PID 1 ------------------------------------------------------------------------------------

def test_only_a_job_with_cap_sys_ptrace_on_the_host_can_trace_its_pid1(users, user_dir, no_leftovers):  # noqa: F811
    """PID 1 is not dumpable: an ordinary user's job (in its user namespace), a root job in a user namespace and
    a root job without CAP_SYS_PTRACE get EPERM; a root job that keeps it can attach (the watchdog's case)."""
    (_, user), _ = users
    probe = ["--", PYTHON, "-c", ATTACH]
    runs = {"ordinary user": [*user, CLI, *probe], "root --userns": [CLI, "--userns", *probe],
            "root --cap-drop SYS_PTRACE": [CLI, "--cap-drop", "SYS_PTRACE", *probe], "root": [CLI, *probe]}
    seen = {how: subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=user_dir).stdout.strip()
            for how, argv in runs.items()}
    assert seen == {"ordinary user": "Operation not permitted", "root --userns": "Operation not permitted",
                    "root --cap-drop SYS_PTRACE": "Operation not permitted", "root": "attached"}


def test_the_owner_of_a_sandbox_in_a_user_namespace_still_enters_it_and_opens_its_namespaces(
        users, user_dir, no_leftovers):  # noqa: F811
    """What a non-dumpable PID 1 takes from its owner, the reaper hands over: its namespaces' descriptors
    (--enter joins them; Job.namespace_path names one the Job holds)."""
    (_, user), _ = users
    name = unique_name()

    def job_pid() -> int | None:
        listing = cli("--list", "--json", prefix=user, cwd=user_dir)
        shown = [s for s in json.loads(listing.stdout or "[]") if s["name"] == name]
        return shown[0]["job_pid"] if shown else None

    with launched([*user, CLI, "--name", name, "--", "sleep", "1000"], cwd=user_dir) as launcher:
        assert wait_for(job_pid, timeout=30)
        entered = cli("--enter", name, "--", "readlink", "/proc/self/ns/mnt", prefix=user, cwd=user_dir)
        assert entered.returncode == 0, entered.stderr
        assert entered.stdout.strip() == os.readlink(f"/proc/{job_pid()}/ns/mnt")
        assert cli("--stop", name, prefix=user, cwd=user_dir).returncode == 0
        launcher.wait(timeout=30)
    code = ("import os, sandbox\nwith sandbox.Job() as job:\n    path = job.namespace_path('mnt')\n"
            "    inside = job.run(['readlink', '/proc/self/ns/mnt'], capture_output=True, text=True).stdout\n"
            "    print(os.readlink(path) == inside.strip() != os.readlink('/proc/self/ns/mnt'))")
    result = subprocess.run([*user, PYTHON, "-c", code], capture_output=True, text=True, timeout=60, cwd=user_dir)
    assert result.stdout == "True\n", result.stderr


# -- a thread frozen alone, in a PID namespace below the sandbox's -----------------------------------------------

# The job makes a PID namespace below its own (unshare -p), and there moves one thread of a process, not the
# process, into a freezer cgroup (the freezer takes thread ids) and freezes it. Its PID 1 obeys every stop, but
# cannot end the sandbox: the frozen thread does not die of SIGKILL, and PID 1's exit waits for it.
FROZEN_BELOW = """
import os, sys, threading, time
d = sys.argv[1]
os.mkdir(d)
moved = threading.Event()
def frozen():
    with open(d + "/tasks", "w") as f:
        f.write(str(threading.get_native_id()))
    moved.set()
    time.sleep(1000)
threading.Thread(target=frozen, daemon=True).start()
moved.wait()
with open(d + "/freezer.state", "w") as f:
    f.write("FROZEN")
print("held", flush=True)
time.sleep(1000)
"""
NOT_KILLED_LINE = "some of its processes could not be killed"


def frozen_below(freezer: Path) -> list[str]:
    return ["unshare", "--pid", "--fork", PYTHON, "-c", FROZEN_BELOW, str(freezer)]


@pytest.mark.parametrize("entry", ["cli", "run", "run_async"])
def test_the_timeout_ends_a_sandbox_with_a_thread_frozen_below(entry, freezer, tmp_path, no_leftovers):
    """Whoever waits thaws what holds every thread of the sandbox, in its PID namespace and below: the timeout
    returns, says in one line that the sandbox did not end, and nothing is left, frozen or not."""
    events = tmp_path / "events.jsonl"
    argv = frozen_below(freezer)
    if entry == "cli":
        argv = [CLI, "--timeout", "1", "--grace", "1", "--json-status", str(events), "--", *argv]
    else:
        argv = api_program(entry, argv, events)
    with launched(argv, **OWN_GROUP) as launcher:
        taken_hold(launcher, "freezer")
        status = launcher.wait(timeout=60)
        out, err = launcher.communicate()
    if entry == "cli":
        assert status == 124
    else:
        assert (status, out) == (0, b"TimeoutExpired\n"), (out, err)
    assert NOT_KILLED_LINE in err.decode() and err.decode().count("\n") == 1, err
    assert ("timeout", None) in [(f["reason"], f["count"]) for n, f in events_of(events) if n == "killed"]
    assert wait_for(lambda: all_ended(no_leftovers))
    nothing_frozen(freezer)


@pytest.mark.parametrize("entry", ["cli", "api"])
def test_a_stop_ends_a_sandbox_with_a_thread_frozen_below(entry, freezer, tmp_path, capfd, no_leftovers):
    name = unique_name()
    argv = frozen_below(freezer)
    if entry == "cli":
        argv = [CLI, "--name", name, "--grace", "1", "--", *argv]
    else:
        argv = api_program("Popen", argv, tmp_path / "events.jsonl", name=name)
    with launched(argv, **OWN_GROUP) as launcher:
        taken_hold(launcher, "freezer")
        if entry == "cli":
            assert cli("--stop", name, "--grace", "1").returncode == 0
        else:
            sandbox.stop_running(name, grace=1)
        launcher.wait(timeout=60)
    assert wait_for(lambda: all_ended(no_leftovers))
    nothing_frozen(freezer)


@pytest.mark.parametrize("entry", ["cli", "api"])
def test_the_callers_death_ends_a_sandbox_with_a_thread_frozen_below(entry, freezer, tmp_path, no_leftovers):
    """The hook monitor and the spawn server thaw it too, and run the hooks once it is gone."""
    hook_log = tmp_path / "hook.log"
    hook = f"echo \"$SANDBOXED_RUN_STOP_REASON\" >> {hook_log}"
    argv = frozen_below(freezer)
    if entry == "cli":
        argv = [CLI, "--grace", "1", "--on-exit", hook, "--", *argv]
    else:
        argv = api_program("Popen", argv, tmp_path / "events.jsonl", on_exit=[hook])
    script = '"$@" & echo "caller $!"; wait'
    with launched(["sh", "-c", script, "sh", *argv], **OWN_GROUP) as shell:
        caller = int(shell.stdout.readline().split()[1])
        assert shell.stdout.readline() == b"held\n"
        os.kill(caller, signal.SIGKILL)
        assert wait_for(lambda: all_ended(no_leftovers), timeout=60)
    assert hook_log.read_text() == "caller died\n"
    nothing_frozen(freezer)

"""Named sandboxes: --name / name= through every entry point, the registry (never stale, one winner per
name), --list [--json], --stop (reason "requested"), and the reaper answering from its loop without
ever holding up its duties. --enter is tests/test_enter.py; other users, tests/test_named_users.py."""

from __future__ import annotations

import array
import fcntl
import json
import os
import pwd
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

import sandbox
from sandboxed_run_helpers.reaper import listing
from sandboxed_run_helpers.shared import registry, wire
from support import (
    CLI,
    PYTHON,
    all_ended,
    launched,
    log_lines,
    marked_processes,
    read_status,
    signal_job,
    stays,
    unique_name,
    wait_for,
)

ENTRY_POINTS = ["cli", "run", "Popen", "Job", "run_async", "create_process", "AsyncJob"]


def cli(*args: str, prefix: tuple[str, ...] = (), **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, CLI, *args], capture_output=True, text=True, timeout=120, **kw)


def listed(prefix: tuple[str, ...] = ()) -> dict[str, dict]:
    """sandboxed-run --list --json, by name (for root: qualified, OWNER/NAME, when not our own)."""
    result = cli("--list", "--json", prefix=prefix)
    assert result.returncode == 0, result.stderr
    me = os.geteuid()
    return {(s["name"] if s["owner"] == me else f"{s['owner_name']}/{s['name']}"): s for s in json.loads(result.stdout)}


def our_registry() -> str:
    """The directory where our sandboxes are listed: root's, or an ordinary user's own."""
    return registry.prepare()


def wait_listed(name: str, state: str = "running") -> dict:
    found: dict = {}

    def there() -> bool:
        found.update(listed().get(name) or {})
        return found.get("state") == state

    assert wait_for(there, timeout=30), (name, found)
    return found


def ns_holders(inode: int) -> list[int]:
    """PIDs of processes whose mount namespace has this inode (nothing should hold a stopped sandbox's)."""
    holders = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}/ns/mnt").st_ino == inode:
                    holders.append(int(entry))
            except OSError:
                pass
    return holders


# -- one behaviour, every entry point -----------------------------------------------------------------

PRELUDE = """
import asyncio, json, sys, sandbox
NAME, ARGV, EVENTS = {name!r}, {argv!r}, {events!r}
def note(event, fields):
    with open(EVENTS, "a") as f:
        f.write(json.dumps({{"event": event, **fields}}, default=str) + "\\n")
"""

STARTS = {
    "run": "sandbox.run(ARGV, name=NAME, on_event=note)",
    "Popen": "with sandbox.Popen(ARGV, name=NAME, on_event=note) as p:\n    print(p.name, flush=True)\n    p.wait()",
    "Job": "with sandbox.Job(name=NAME, on_event=note) as job:\n    print(job.name, flush=True)\n"
           "    job.Popen(ARGV).wait()",
    "run_async": "asyncio.run(sandbox.run_async(ARGV, name=NAME, on_event=note))",
    "create_process": "async def main():\n    p = await sandbox.create_process(ARGV, name=NAME, on_event=note)\n"
                      "    print(p.name, flush=True)\n    await p.wait()\nasyncio.run(main())",
    "AsyncJob": "async def main():\n    async with sandbox.AsyncJob(name=NAME, on_event=note) as job:\n"
                "        print(job.name, flush=True)\n        await (await job.create_process(ARGV)).wait()\n"
                "asyncio.run(main())",
}


def start_argv(entry: str, name: str, argv: list[str], events: Path) -> list[str]:
    """A program that starts argv in a sandbox named name through entry, its events going to events."""
    if entry == "cli":
        return [CLI, "--name", name, "--json-status", str(events), "--", *argv]
    return [PYTHON, "-c", PRELUDE.format(name=name, argv=argv, events=str(events)) + STARTS[entry]]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_named_sandbox_is_listed_and_stop_ends_it_with_reason_requested(tmp_path, entry, no_leftovers):
    name = unique_name()
    argv, log = signal_job(tmp_path, cleanup=0.5)
    events = tmp_path / "events.jsonl"
    with launched(start_argv(entry, name, argv, events), cwd=tmp_path, stdout=subprocess.PIPE) as starter:
        assert wait_for(lambda: log_lines(log)), "the job did not start"
        shown = wait_listed(name)
        job_pid = [pid for pid in marked_processes(no_leftovers) if Path(f"/proc/{pid}/cmdline").read_bytes()
                   == "\0".join(argv).encode() + b"\0"][0]
        if entry not in ("Job", "AsyncJob"):  # a session has no main process
            assert shown["job_pid"] == job_pid
        assert shown["owner"] == os.geteuid() and shown["state"] == "running"
        result = cli("--stop", name)
        assert (result.returncode, result.stderr) == (0, "")
        # Everything of the sandbox is gone when --stop returns: the job's cleanup ran within the grace.
        assert log_lines(log)[1:] == ["SIGTERM", "cleaned"]
        assert not os.path.exists(f"/proc/{job_pid}")
        starter.wait(timeout=60)
        if entry not in ("cli", "run", "run_async"):
            assert starter.stdout.readline().decode().strip() == name  # Popen.name, Job.name and co.
    stopping = [e for e in read_status(events) if e["event"] == "stopping"]
    assert stopping and stopping[0]["reason"] == "requested", read_status(events)
    first = read_status(events)[0]
    assert first["event"] in ("started", "ready") and first["name"] == name
    assert name not in listed()


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_name_in_use_fails_before_anything_starts(tmp_path, entry, no_leftovers):
    name = unique_name()
    with launched([CLI, "--name", name, "--", "sleep", "1000"]) as first:
        wait_listed(name)
        flag = tmp_path / "ran"
        argv = ["touch", str(flag)]
        if entry == "cli":
            result = cli("--name", name, "--", *argv)
            assert result.returncode == 125, result.stderr
            assert result.stderr.count("\n") == 1 and f"a sandbox named {name} is already running" in result.stderr
        else:
            program = PRELUDE.format(name=name, argv=argv, events=str(tmp_path / "e")) + (
                "try:\n" + "\n".join("    " + line for line in STARTS[entry].splitlines()) +
                "\nexcept sandbox.SandboxError as exc:\n    print(type(exc).__name__, exc.exit_code, exc)\n")
            result = subprocess.run([PYTHON, "-c", program], capture_output=True, text=True, timeout=60)
            assert result.stdout.startswith("SandboxError 125 a sandbox named"), (result.stdout, result.stderr)
        assert not flag.exists(), "the command ran although its name was taken"
        assert first.poll() is None and listed()[name]["state"] == "running"
        assert cli("--stop", name).returncode == 0
        assert first.wait(timeout=30) == -signal.SIGTERM


# -- the registry ---------------------------------------------------------------------------------------

def test_an_unnamed_sandbox_gets_a_generated_name_and_is_listed(tmp_path, no_leftovers):
    status = tmp_path / "status.jsonl"
    with launched([CLI, "--json-status", str(status), "--", "sleep", "1000"]):
        assert wait_for(lambda: read_status(status))
        name = read_status(status)[0]["name"]
        assert name.startswith("sleep-"), name
        assert wait_listed(name)["command"] == ["sleep", "1000"]
        assert cli("--stop", name).returncode == 0
    with sandbox.Popen(["sleep", "1000"]) as process:
        assert process.name.startswith("sleep-")
        assert any(s.name == process.name and s.job_pid == process.pid for s in sandbox.list_running())
        process.stop(grace=0)


@pytest.mark.parametrize("over", ["nothing", "a dead entry"])
def test_of_several_starts_with_the_same_name_at_once_exactly_one_wins(tmp_path, over, no_leftovers):
    name = unique_name()
    if over == "a dead entry":  # each start finds it dead; one replaces it, and the others must see that one
        with launched([CLI, "--name", name, "--", "sleep", "1000"]) as killed:
            reaper = wait_listed(name)["reaper_pid"]
            os.kill(killed.pid, signal.SIGSTOP)  # or, seeing its reaper die, it removes the entry first
            os.kill(reaper, signal.SIGKILL)
            killed.kill()
            assert wait_for(lambda: not os.path.exists(f"/proc/{reaper}"))
        assert (Path(our_registry()) / name).exists()
    log = tmp_path / "log"
    script = f"echo $$ >> {log}; exec sleep 1000"
    launchers = [subprocess.Popen([CLI, "--name", name, "--", "sh", "-c", script], stderr=subprocess.PIPE, text=True)
                 for _ in range(6)]
    try:
        assert wait_for(lambda: sum(p.poll() is not None for p in launchers) == 5, timeout=60)
        losers = [p for p in launchers if p.poll() is not None]
        assert all(p.returncode == 125 for p in losers)
        assert all("already running" in p.stderr.read() for p in losers)
        assert wait_for(lambda: len(log_lines(log)) == 1)
        assert stays(lambda: len(log_lines(log)) == 1, 0.2)  # one job ran, the others never started
        assert cli("--stop", name).returncode == 0
    finally:
        for p in launchers:
            if p.poll() is None:
                p.kill()
            p.wait()
            p.stderr.close()


@pytest.mark.parametrize("entry", ["cli", "run", "Job"])
def test_the_entry_goes_with_the_sandbox_even_if_its_root_was_read_only(tmp_path, entry, no_leftovers):
    """The reaper's view of the registry directory turns read-only with --read-only /; its entry is made and
    removed through the directory as the launcher opened it, outside."""
    name = unique_name()
    if entry == "cli":
        assert cli("--name", name, "--read-only", "/", "--", "true").returncode == 0
    elif entry == "run":
        assert sandbox.run(["true"], name=name, read_only=["/"]).returncode == 0
    else:
        with sandbox.Job(name=name, read_only=["/"]) as job:
            assert job.run(["true"]).returncode == 0
    assert not (Path(our_registry()) / name).exists()


def test_a_name_being_claimed_is_never_taken_for_a_dead_one(tmp_path, no_leftovers):
    """Between its bind and its listen, a claim's socket refuses connections as a dead entry's does. Here the
    test is that claim, stopped in between (holding the directory's shared lock, as a claim does): a start
    with the name waits, then finds it live, and fails without touching it."""
    name = unique_name()
    flag = tmp_path / "ran"
    dirfd = os.open(our_registry(), os.O_RDONLY | os.O_DIRECTORY)
    claimer = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        fcntl.flock(dirfd, fcntl.LOCK_SH)
        path = os.path.join(our_registry(), name)
        claimer.bind(path)
        ours = os.stat(path).st_ino
        with launched([CLI, "--name", name, "--", "touch", str(flag)], stderr=subprocess.PIPE, text=True) as late:
            assert stays(lambda: late.poll() is None, 0.5)  # it waits for the claim under way
            claimer.listen(1)
            fcntl.flock(dirfd, fcntl.LOCK_UN)
            assert late.wait(timeout=30) == 125
            assert f"a sandbox named {name} is already running" in late.stderr.read()
        assert not flag.exists()
        assert os.stat(path).st_ino == ours  # the entry is still the claim's
    finally:
        claimer.close()
        os.close(dirfd)
        try:
            os.unlink(os.path.join(our_registry(), name))
        except FileNotFoundError:
            pass


@pytest.mark.root("finds the reaper by its mark, in its /proc/PID/environ, which only root may read")
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_the_registry_is_never_stale_even_when_everything_of_ours_is_sigkilled(tmp_path, entry, no_leftovers):
    name = unique_name()
    path = Path(our_registry()) / name

    def start_and_kill_everything() -> int:
        with launched(start_argv(entry, name, ["sleep", "1000"], tmp_path / "events"), stdout=subprocess.DEVNULL):
            reaper = wait_listed(name)["reaper_pid"]
            # Every process of ours at once (launcher or caller, spawn server, reaper): the job dies with its
            # PID 1, and nobody is left to remove the entry.
            ours = marked_processes(no_leftovers)
            assert reaper in ours
            # All stopped first: one that saw another die (a launcher its reaper, a reaper its caller) would
            # remove the entry before its own SIGKILL came.
            for sig in (signal.SIGSTOP, signal.SIGKILL):
                for pid in [reaper, *ours]:
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass  # the job, gone with its PID 1 already
            assert wait_for(lambda: all_ended(no_leftovers))
        assert path.exists()  # a SIGKILLed reaper leaves its socket's file; nobody listens on it any more
        return reaper

    # A start with the name claims it over the dead entry, at once.
    first = start_and_kill_everything()
    with launched([CLI, "--name", name, "--", "sleep", "1000"]) as again:
        assert wait_listed(name)["reaper_pid"] != first
        assert cli("--stop", name).returncode == 0
        assert again.wait(timeout=30) == -signal.SIGTERM
    # A listing never shows a dead entry, and removes it.
    start_and_kill_everything()
    assert name not in listed()
    assert not path.exists(), "the listing did not remove the dead entry"
    start_and_kill_everything()
    assert all(s.name != name for s in sandbox.list_running())
    assert not path.exists()
    with pytest.raises(sandbox.SandboxNotFound):
        sandbox.stop_running(name)


def test_list_json_describes_the_sandbox_and_its_mounts_as_seen_inside(tmp_path, no_leftovers):
    name = unique_name()
    script = "mkdir /mnt/inner && mount -t tmpfs made-inside /mnt/inner && cd /mnt && exec sleep 1000"
    before = time.time()
    with launched([CLI, "--name", name, "--tmpfs", "/mnt", "--", "sh", "-c", script]):
        assert wait_for(lambda: listed().get(name, {}).get("cwd") == "/mnt")
        shown = listed()[name]
        assert shown["owner"] == os.geteuid() and shown["owner_name"] == pwd.getpwuid(os.geteuid()).pw_name
        assert shown["command"] == ["sh", "-c", script]
        assert before - 1 <= shown["started"] <= time.time()
        assert (shown["state"], shown["stop_reason"]) == ("running", None)
        # The PIDs as we see them: the reaper is PID 1 of its namespace, the job is its child.
        status = Path(f"/proc/{shown['reaper_pid']}/status").read_text()
        assert [line.split()[-1] for line in status.splitlines() if line.startswith("NSpid:")] == ["1"]
        assert Path(f"/proc/{shown['job_pid']}/cmdline").read_bytes() == b"sleep\x001000\x00"
        own = {m["target"]: (m["fstype"], m["source"]) for m in shown["mounts"] if m["own"]}
        assert own["/mnt"] == ("tmpfs", "tmpfs") and own["/mnt/inner"] == ("tmpfs", "made-inside")
        assert own["/proc"][0] == "proc"
        assert any(m["target"] == "/" and not m["own"] for m in shown["mounts"])  # the host's, seen through
        text = cli("--list").stdout
        assert name in text and "/mnt/inner" in text and "made-inside" in text
        assert cli("--stop", name).returncode == 0


def test_list_shows_a_stopping_sandbox_and_why(tmp_path, no_leftovers):
    name = unique_name()
    argv, log = signal_job(tmp_path, cleanup=600.0)
    with launched([CLI, "--name", name, "--grace", "600", "--", *argv]):
        assert wait_for(lambda: log_lines(log))
        with launched([CLI, "--stop", name, "--grace", "1h30m"]) as stopper:  # durations as everywhere
            shown = wait_listed(name, "stopping")
            assert shown["stop_reason"] == "requested"
            assert stopper.poll() is None  # waits for the end of the job's cleanup
            assert cli("--stop", name, "--grace", "300ms").returncode == 0  # a second stop shortens the grace
            assert stopper.wait(timeout=30) == 0
    assert name not in listed()


@pytest.mark.parametrize("backlog", ["room", "full"])
def test_a_frozen_reaper_is_listed_as_not_responding(backlog, no_leftovers):
    """Also when clients fill its backlog meanwhile (it was left out of the list, and --stop said no sandbox
    had that name). --stop kills a PID 1 that does not answer once the grace period and the margin have
    passed; with its backlog full not even its PID is known, and --stop can only say so."""
    name = unique_name()
    silent: list[socket.socket] = []
    with launched([CLI, "--name", name, "--", "sleep", "1000"]) as launcher:
        reaper = wait_listed(name)["reaper_pid"]
        os.kill(reaper, signal.SIGSTOP)
        try:
            while backlog == "full" and (sock := registry.connect(os.path.join(our_registry(), name))):
                silent.append(sock)
                try:
                    sock.getpeername()
                except OSError:
                    break  # not accepted: the backlog is full
            assert listed()[name]["state"] == "not responding"
            result = cli("--stop", name, "--grace", "0")
            if backlog == "full":
                assert result.returncode == 125 and "does not answer" in result.stderr
            else:
                assert result.returncode == 0 and f"PID 1 (pid {reaper}) did not respond" in result.stderr
                assert launcher.wait(timeout=30) == 125  # its reaper died: the job was killed with it
        finally:
            try:
                os.kill(reaper, signal.SIGCONT)
            except ProcessLookupError:
                pass
            for sock in silent:
                sock.close()
        if backlog == "full":
            assert cli("--stop", name).returncode == 0
    assert name not in listed()


def test_clients_that_hang_never_hold_up_the_reapers_duties(tmp_path, no_leftovers):
    """A client that connects and says nothing, and one that asks without reading the answers: the reaper
    goes on passing signals on and ends the sandbox when the job ends, as if they were not there."""
    name = unique_name()
    argv, log = signal_job(tmp_path, mode="exit0")
    with launched([CLI, "--name", name, "--", *argv]) as launcher:
        assert wait_for(lambda: log_lines(log))
        wait_listed(name)
        path = os.path.join(our_registry(), name)
        silent = registry.connect(path)
        greedy = registry.connect(path)
        try:
            sent = 0
            try:
                for _ in range(100_000):
                    wire.send(greedy, wire.Query())
                    sent += 1
            except OSError:
                pass  # our buffer is full, or the reaper dropped us for not reading its answers
            assert sent > 0
            launcher.send_signal(signal.SIGTERM)  # passed on to the job, which then exits
            assert launcher.wait(timeout=30) == 0
            assert log_lines(log)[1:] == ["SIGTERM", "cleaned"]
        finally:
            silent.close()
            greedy.close()
    assert name not in listed()


def test_many_clients_that_never_ask_never_keep_a_stop_out(no_leftovers):
    """More silent clients than the reaper serves at once: the oldest give way to the new ones, so a --stop
    gets through (it found the sandbox deaf, 125, while they lasted)."""
    name = unique_name()
    path = os.path.join(our_registry(), name)
    with launched([CLI, "--name", name, "--", "sleep", "1000"]) as launcher:
        wait_listed(name)
        silent = [sock for sock in (registry.connect(path) for _ in range(4 * listing.MAX_CONNECTIONS)) if sock]
        try:
            assert wait_for(lambda: len(silent) > listing.MAX_CONNECTIONS)
            result = cli("--stop", name)
            assert (result.returncode, result.stderr) == (0, "")
            assert launcher.wait(timeout=30) == -signal.SIGTERM
        finally:
            for sock in silent:
                sock.close()


# -- bad input --------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, code, words", [
    (["--stop", "no-such-sandbox-x"], 1, "no running sandbox named no-such-sandbox-x"),
    (["--enter", "no-such-sandbox-x", "--", "true"], 125, "no running sandbox named no-such-sandbox-x"),
    (["--stop", "nobody-there", "--grace", "-1"], 2, "--grace"),
    (["--stop", "nobody-there", "--grace", "10 parsecs"], 2, "--grace"),
    (["--stop", "x", "--", "true"], 2, "--stop takes no command"),
    (["--list", "--tmpfs", "/mnt"], 2, "--tmpfs does not go with --list"),
    (["--list", "--stop", "x"], 2, "exclude each other"),
    (["--json"], 2, "--json goes with --list"),
    (["--name", "a b", "--", "true"], 2, "--name 'a b'"),
    (["--name", "-x", "--", "true"], 2, "starting with a letter or digit"),
    (["--name", "x" * 65, "--", "true"], 2, "1 to 64"),
    (["--stop", "a/b/c"], 2, "OWNER/NAME"),
    (["--stop", "no-such-user-xyz/box"], 1, "no user named no-such-user-xyz"),
    (["--list"], 0, ""),
])
def test_bad_input_gets_one_clear_line(args, code, words, no_leftovers):
    result = cli(*args)
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    if words:
        assert result.stderr.count("\n") == 1 and words in result.stderr, result.stderr


def test_api_checks_names_and_raises_lookup_errors(no_leftovers):
    with pytest.raises(ValueError, match="^name 'a/b'"):
        sandbox.run(["true"], name="a/b")
    with pytest.raises(TypeError, match="^name must be a string"):
        sandbox.Popen(["true"], name=5)
    for bad, error in ((None, TypeError), (5, TypeError), (b"box", TypeError), ("", ValueError), ("/x", ValueError),
                       ("a b", ValueError), ("root/", ValueError), ("x\0y", ValueError), ("x" * 65, ValueError)):
        with pytest.raises(error, match="^name"):
            sandbox.stop_running(bad)
    with pytest.raises(sandbox.SandboxNotFound) as caught:
        sandbox.stop_running("no-such-sandbox-x")
    assert isinstance(caught.value, LookupError) and caught.value.exit_code == 1
    with pytest.raises(ValueError, match="grace"):
        sandbox.stop_running("no-such-sandbox-x", grace=-1)
    with pytest.raises(ValueError, match="grace"):
        sandbox.stop_running("no-such-sandbox-x", grace="soon")


def test_stop_waits_until_every_process_and_the_namespace_are_gone(tmp_path, no_leftovers):
    name = unique_name()
    argv, log = signal_job(tmp_path, cleanup=1.0)
    daemon = f"{argv[0]} {' '.join(argv[1:])} &"  # a second process of the job, in the background
    with launched([CLI, "--name", name, "--tmpfs", "/mnt", "--", "sh", "-c", f"{daemon} exec sleep 1000"]) as launcher:
        assert wait_for(lambda: log_lines(log))
        shown = wait_listed(name)
        mnt_ns = os.stat(f"/proc/{shown['job_pid']}/ns/mnt").st_ino
        sandbox.stop_running(name, grace="30s")
        assert log_lines(log)[-1] == "cleaned"  # its cleanup was waited for
        assert ns_holders(mnt_ns) == []  # no process of the sandbox is left, and its mounts are gone
        assert launcher.wait(timeout=30) == -signal.SIGTERM


def garbage() -> list[tuple[bytes, list[int]]]:
    """Packets that are not messages of ours, and the descriptors each carries (ours to close)."""
    read_end, write_end = os.pipe()  # a "message in a memfd" that is a pipe nobody writes to
    unsealed = os.memfd_create("unsealed", os.MFD_ALLOW_SEALING)
    huge = os.memfd_create("huge", os.MFD_ALLOW_SEALING)
    os.ftruncate(huge, wire.MAX_MESSAGE + 1)  # sparse: costs us nothing, reading it all would cost the reaper
    fcntl.fcntl(huge, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
                | fcntl.F_SEAL_WRITE)
    nested = wire.encode(wire.Query())
    for _ in range(1500):  # Spawn(Spawn(...(Query))): within marshal's depth, deeper than Python's stack
        nested = b")\x02i" + struct.pack("<i", wire.Kind.SPAWN) + nested  # marshal: (kind, nested)
    return [(b"not a message", []), (b"i\x00garbage", []), (b"m", [read_end]), (b"m", [write_end]),
            (b"m", [unsealed]), (b"m", [huge]), (b"m", []), (b"i" + nested[:60000], [])]


def test_the_socket_speaks_only_our_protocol(no_leftovers):
    """Garbage on a reaper's registry socket is ignored; the sandbox runs on."""
    name = unique_name()
    with launched([CLI, "--name", name, "--", "sleep", "1000"]):
        wait_listed(name)
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
            sock.connect(os.path.join(our_registry(), name))
            for packet, fds in garbage():
                try:
                    sock.sendmsg([packet], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds
                                 else [])
                finally:
                    for fd in fds:
                        os.close(fd)
            wire.send(sock, wire.Query())
            assert isinstance(wire.recv_kind(sock, (wire.About,))[0], wire.About)  # it answers after all that
        assert listed()[name]["state"] == "running"
        assert cli("--stop", name).returncode == 0


def test_the_shell_completes_the_names_of_running_sandboxes(no_leftovers):
    name = unique_name()
    with launched([CLI, "--name", name, "--", "sleep", "1000"]):
        wait_listed(name)
        for line in (f"sandboxed-run --stop {name[:4]}", f"sandboxed-run --enter {name[:6]}"):
            env = {**os.environ, "_SANDBOXED_RUN_COMPLETE": "bash_complete", "COMP_WORDS": line, "COMP_CWORD": "2"}
            result = subprocess.run([CLI], capture_output=True, text=True, timeout=60, env=env)
            assert result.returncode == 0 and f"plain,{name}" in result.stdout.splitlines(), result
        assert cli("--stop", name).returncode == 0


def test_list_shows_control_characters_escaped(no_leftovers):
    """A command and mount points are the owner's to choose; --list shows them, it does not send them to the
    terminal (root lists everyone's): no escape sequence gets through, no mount point starts a row."""
    name = unique_name()
    with launched([CLI, "--name", name, "--tmpfs", "/mnt", "--tmpfs", "/mnt/a\nb0gus  root  1", "--",
                   "sh", "-c", "exec sleep 1000", "\x1b]0;title\x07"]):
        wait_listed(name)
        result = cli("--list")
        assert not any(c in result.stdout for c in "\x1b\x07"), result.stdout
        assert "'\\x1b]0;title\\x07'" in result.stdout and "    /mnt/a\\nb0gus  root  1  tmpfs" in result.stdout
        assert not [line for line in result.stdout.splitlines() if line.startswith("b0gus")]
        assert json.loads(cli("--list", "--json").stdout)  # JSON escapes them itself
        assert cli("--stop", name).returncode == 0

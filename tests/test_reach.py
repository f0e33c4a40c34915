"""Who reaches a sandbox through the registry: the host (and root), never a job. A process inside any
sandbox (another sandbox beside it, whatever its capabilities; a command --enter put inside it; another
user's sandbox of the same user) that connects to a reaper's socket and speaks the protocol itself is
refused with one line, and the sandbox runs on to its own end. The registry is out of a job's sight: a
sandbox started inside a sandbox registers in there, and is listed and stopped from there."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_named import ENTRY_POINTS, cli, start_argv, unique_name, wait_listed
from test_named_users import free_uids

from sandboxed_run_helpers.shared import registry
from support import CLI, PYTHON, launched, log_lines, read_status, wait_for

# Inside a sandbox: what the registry directory shows, then the raw protocol on the path given. A refused
# client gets a Failed at once, unasked; whatever it sends then is never read.
ATTACK = """
import os, socket, sys
from sandboxed_run_helpers.shared import wire
directory, path = sys.argv[1], sys.argv[2]
try:
    print("seen", sorted(os.listdir(directory)))
except OSError as exc:
    print("seen", exc.strerror)
sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
sock.connect(path)
sock.settimeout(5)
try:
    message, fds, _ = wire.recv(sock)
    print("told", type(message).__name__, getattr(message, "errno", None), len(fds))
    print(getattr(message, "message", ""))
except TimeoutError:
    print("told nothing")
try:
    wire.send(sock, wire.Stop(0.0, wire.StopReason.REQUESTED, False))
    sock.send(b"i" + __import__("marshal").dumps((int(wire.Kind.QUERY),)))  # the same Query, as raw bytes
    message, fds, _ = wire.recv(sock)
    print("answered", type(message).__name__, len(fds))
except (OSError, wire.Closed):
    print("dropped")
"""

# A job that runs until told to end, then exits 7 through its EXIT trap, which notes the status.
VICTIM = 'trap "echo trap \\$? >> {log}" EXIT; while [ ! -e {go} ]; do sleep 0.05; done; exit 7'


class Victim:
    """A sandbox that must live through the attack and end by itself: its trap at its own end, status 7."""

    def __init__(self, tmp_path: Path, entry: str, prefix: tuple[str, ...] = (), cwd: Path | None = None) -> None:
        self.name = unique_name()
        self.entry = entry
        self.log = tmp_path / "trap.log"
        self.go = tmp_path / "go"
        self.events = tmp_path / "events.jsonl"
        argv = ["sh", "-c", VICTIM.format(log=self.log, go=self.go)]
        self.argv = [*prefix, *start_argv(entry, self.name, argv, self.events)]
        self.cwd = cwd or tmp_path

    def end_by_itself(self, launcher: subprocess.Popen) -> None:
        assert launcher.poll() is None and log_lines(self.log) == [], "the attack ended the sandbox"
        self.go.touch()
        status = launcher.wait(timeout=60)
        assert status == (7 if self.entry == "cli" else 0)
        assert log_lines(self.log) == ["trap 7"]
        events = read_status(self.events)
        if self.entry not in ("Job", "AsyncJob"):  # a session's events are not its command's
            assert [e.get("code") for e in events if e["event"] == "exited"] == [7], events
        assert not [e for e in events if e["event"] == "stopping" and e["reason"] == "requested"], events


def attack(directory: str, path: Path, prefix: list[str], cwd: Path) -> list[str]:
    """ATTACK run by prefix (a sandbox's command line) inside; its lines."""
    result = subprocess.run([*prefix, PYTHON, "-c", ATTACK, directory, str(path)], capture_output=True, text=True,
                            timeout=60, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def unreachable(name: str) -> str:
    return f"sandbox {name} cannot be reached from inside a sandbox: list, enter or stop it from where it was started"


def refused(lines: list[str], name: str) -> bool:
    return lines[1:] == ["told Failed 13 0", unreachable(name), "dropped"]


@contextmanager
def linked(socket_path: str) -> Iterator[Path]:
    """A second name for a reaper's socket, where a job can reach it (beside the registry directory: a hard
    link stays on its file system). The reaper itself must refuse."""
    hole = Path(tempfile.mkdtemp(prefix="sbx-hole-", dir=os.path.dirname(os.path.dirname(socket_path))))
    try:
        hole.chmod(0o755)
        os.link(socket_path, hole / "link")
        yield hole / "link"
    finally:
        shutil.rmtree(hole, ignore_errors=True)


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_job_of_another_sandbox_neither_stops_nor_queries_a_sandbox(tmp_path, entry, no_leftovers):
    """Even with no capabilities, no new privileges and / read-only, or with all of root's, the job of another
    root sandbox gets one refusal; the registry it sees is empty."""
    victim = Victim(tmp_path, entry)
    with launched(victim.argv, cwd=tmp_path, stdout=subprocess.DEVNULL) as launcher:
        wait_listed(victim.name)
        with linked(os.path.join(registry.ROOT_DIRECTORY, victim.name)) as link:
            for confined in (["--cap-drop", "ALL", "--no-new-privs", "--read-only", "/"], []):
                lines = attack(registry.ROOT_DIRECTORY, link, [CLI, *confined, "--"], tmp_path)
                assert refused(lines, victim.name), lines
                assert lines[0] == "seen []", lines
        victim.end_by_itself(launcher)


def test_a_command_entered_into_a_sandbox_cannot_stop_it_through_the_registry(tmp_path, no_leftovers):
    victim = Victim(tmp_path, "cli")
    with launched(victim.argv, cwd=tmp_path) as launcher:
        wait_listed(victim.name)
        with linked(os.path.join(registry.ROOT_DIRECTORY, victim.name)) as link:
            lines = attack(registry.ROOT_DIRECTORY, link, [CLI, "--enter", victim.name, "--"], tmp_path)
        assert refused(lines, victim.name) and lines[0] == "seen []", lines
        victim.end_by_itself(launcher)


@pytest.fixture
def user(nobody_dir):
    """An ordinary user: (uid, setpriv prefix, a directory of theirs); its registry is removed afterwards."""
    (uid,) = free_uids(1)
    try:
        yield uid, ("setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"), nobody_dir
    finally:
        shutil.rmtree(f"{registry.TMP_PREFIX}{uid}", ignore_errors=True)


@pytest.mark.parametrize("attacker", ["the same user's sandbox", "root's sandbox"])
def test_a_users_sandbox_is_out_of_reach_of_other_sandboxes(user, attacker, no_leftovers):
    """A user's sandbox has a user namespace: its reaper may not read a process outside it (the kernel refuses
    it the peer's PID namespace), and tells where a client lives by the /proc it was started under. Another
    sandbox of the same user (its uid maps to the same) and root's sandbox are refused alike."""
    uid, prefix, directory = user
    victim = Victim(directory, "cli", prefix, directory)
    user_registry = f"{registry.TMP_PREFIX}{uid}"
    with launched(victim.argv, cwd=directory) as launcher:
        assert wait_for(lambda: os.path.exists(os.path.join(user_registry, victim.name)))
        own = [*prefix, CLI, "--"] if attacker == "the same user's sandbox" else [CLI, "--"]
        with linked(os.path.join(user_registry, victim.name)) as link:
            lines = attack(user_registry, link, own, directory)
        assert refused(lines, victim.name), lines
        if attacker == "the same user's sandbox":
            assert lines[0] == "seen []", lines
        # The owner on the host still reaches it.
        shown = json.loads(cli("--list", "--json", prefix=prefix, cwd=directory).stdout)
        assert [s["name"] for s in shown] == [victim.name], shown
        victim.end_by_itself(launcher)


def test_inside_a_sandbox_list_stop_and_enter_reach_nothing_outside(user, no_leftovers):
    """Root's job sees other users' registry directories (its own is hidden): it lists none of their
    sandboxes, and --stop and --enter of one are refused in one line."""
    uid, prefix, directory = user
    victim = Victim(directory, "cli", prefix, directory)
    with launched(victim.argv, cwd=directory) as launcher:
        assert wait_for(lambda: os.path.exists(os.path.join(f"{registry.TMP_PREFIX}{uid}", victim.name)))
        inside = [CLI, "--"]
        listing = subprocess.run([*inside, CLI, "--list", "--json"], capture_output=True, text=True, timeout=60)
        assert (listing.returncode, listing.stdout, listing.stderr) == (0, "[]\n", "")
        qualified = f"{uid}/{victim.name}"
        for args, code in ((["--stop", qualified], 4), (["--enter", qualified, "--", "true"], 125)):
            result = subprocess.run([*inside, CLI, *args], capture_output=True, text=True, timeout=60)
            assert (result.returncode, result.stderr) == (code, f"sandboxed-run: {unreachable(victim.name)}\n")
        victim.end_by_itself(launcher)


NESTED = """
{cli} --name {inner} -- sleep 1000 &
for i in $(seq 300); do {cli} --list --json | grep -q '"{inner}"' && break; sleep 0.1; done
{cli} --list --json > {listing}
ls {registry} > {seen}
while [ ! -e {go} ]; do sleep 0.05; done
{cli} --stop {inner}
echo "stop $?" >> {seen}
wait
"""


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_sandbox_started_inside_a_sandbox_is_listed_and_stopped_in_there_alone(tmp_path, entry, no_leftovers):
    outer, inner = unique_name(), unique_name()
    listing, seen, go = tmp_path / "listing.json", tmp_path / "seen", tmp_path / "go"
    script = NESTED.format(cli=CLI, inner=inner, listing=listing, registry=registry.ROOT_DIRECTORY, seen=seen, go=go)
    with launched(start_argv(entry, outer, ["sh", "-c", script], tmp_path / "events.jsonl"), cwd=tmp_path,
                  stdout=subprocess.DEVNULL) as launcher:
        assert wait_for(lambda: log_lines(seen), timeout=60)
        assert log_lines(seen) == [inner]  # its registry holds the inner sandbox alone
        assert [s["name"] for s in json.loads(listing.read_text())] == [inner]
        assert not os.path.exists(os.path.join(registry.ROOT_DIRECTORY, inner))  # the host's registry never had it
        go.touch()
        assert launcher.wait(timeout=60) == 0
        assert log_lines(seen) == [inner, "stop 0"]


USERS_JOB = """
echo root:; ls -A {root}; echo own:; ls -A {own}
{cli} --name {inner} -- sleep 1000 &
for i in $(seq 300); do {cli} --list --json | grep -q '"{inner}"' && break; sleep 0.1; done
echo inner:; ls -A {root}
{cli} --stop {inner}; echo "stop $?"
wait
"""


def test_a_users_job_sees_no_registry_but_its_own(user, no_leftovers):
    """A user's job is root in its user namespace: root's registry and the user's own are empty there (the
    user's other sandbox is not seen), and a sandbox it starts registers in there, where it is listed and
    stopped."""
    uid, prefix, directory = user
    first, inner = unique_name(), unique_name()
    script = USERS_JOB.format(root=registry.ROOT_DIRECTORY, own=f"{registry.TMP_PREFIX}{uid}", cli=CLI, inner=inner)
    with launched([*prefix, CLI, "--name", first, "--", "sleep", "1000"], cwd=directory):
        assert wait_for(lambda: os.path.exists(f"{registry.TMP_PREFIX}{uid}/{first}"))
        result = subprocess.run([*prefix, CLI, "--", "sh", "-c", script], capture_output=True, text=True,
                                timeout=120, cwd=directory)
        assert result.stdout.split() == ["root:", "own:", "inner:", inner, "stop", "0"], result
        assert result.returncode == 0 and result.stderr == "", result.stderr
        assert cli("--stop", f"{uid}/{first}").returncode == 0


# On a kernel without SO_PEERPIDFD the client proves where it lives with a pidfd of itself. The best a job can
# send: a pidfd of itself, of a process of its own sandbox, or nothing.
ATTACK_WITH_PROOF = """
import os, socket, sys
from sandboxed_run_helpers.shared import wire
path = sys.argv[1]
for proof in ("none", "own", "its PID 1", "a list of 2**31-1 items"):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.connect(path)
    sock.settimeout(5)
    fds = [] if proof in ("none", "a list of 2**31-1 items") else [os.pidfd_open(os.getpid() if proof == "own" else 1)]
    if proof.startswith("a list"):  # 6 bytes that marshal would take for 16 GiB of list, never to be decoded
        sock.send(b"i[" + (2**31 - 1).to_bytes(4, "little"))
    else:
        wire.send(sock, wire.Stop(0.0, wire.StopReason.REQUESTED, False), fds)
    try:
        message, _, _ = wire.recv(sock)
        print(proof, type(message).__name__, getattr(message, "errno", None))
    except (OSError, wire.Closed):
        print(proof, "dropped")
"""

BEFORE_6_5 = [PYTHON, str(Path(__file__).parent / "before_6_5.py")]


@pytest.mark.parametrize("owner", ["root", "an ordinary user"])
def test_on_a_kernel_without_so_peerpidfd_the_host_reaches_a_sandbox_and_a_job_does_not(
        tmp_path, owner, request, no_leftovers):
    """Before Linux 6.5 (Debian 12's 6.1) the reaper cannot ask the kernel for its peer: our clients send a pidfd
    of themselves, which the reaper accepts only for a process that lives where the sandbox was started from and
    holds the other end of the connection. --list, --enter and --stop work from the host; a job's raw Stop,
    with no pidfd, its own or its sandbox's PID 1's, is refused."""
    if owner == "root":
        prefix, directory, where = (), tmp_path, registry.ROOT_DIRECTORY
    else:
        uid, prefix, directory = request.getfixturevalue("user")
        where = f"{registry.TMP_PREFIX}{uid}"
    victim = Victim(directory, "cli", (*BEFORE_6_5, *prefix), directory)
    with launched(victim.argv, cwd=directory) as launcher:
        assert wait_for(lambda: os.path.exists(os.path.join(where, victim.name)))
        def listed() -> list:
            shown = json.loads(cli("--list", "--json", prefix=prefix, cwd=directory).stdout)
            return [(s["name"], s["state"]) for s in shown if s["name"] == victim.name]

        assert wait_for(lambda: listed() == [(victim.name, "running")]), listed()
        entered = cli("--enter", victim.name, "--", "cat", "/proc/1/comm", prefix=prefix, cwd=directory)
        assert (entered.returncode, entered.stdout) == (0, "sandbox-reaper\n"), entered.stderr
        with linked(os.path.join(where, victim.name)) as link:
            result = subprocess.run([*prefix, CLI, "--", PYTHON, "-c", ATTACK_WITH_PROOF, str(link)],
                                    capture_output=True, text=True, timeout=60, cwd=directory)
        assert result.stdout.splitlines() == ["none Failed 13", "own Failed 13", "its PID 1 Failed 13",
                                              "a list of 2**31-1 items Failed 13"], result
        if owner == "root":
            # A pidfd of a process that lives on the host but does not hold the connection proves nothing.
            sleeper = subprocess.Popen(["sleep", "60"])
            try:
                script = ATTACK_WITH_PROOF.replace("os.getpid() if proof == \"own\" else 1", str(sleeper.pid))
                result = subprocess.run([PYTHON, "-c", script, os.path.join(where, victim.name)],
                                        capture_output=True, text=True, timeout=60)
            finally:
                sleeper.kill()
                sleeper.wait()
            assert result.stdout.splitlines()[1:3] == ["own Failed 13", "its PID 1 Failed 13"], result
        victim.end_by_itself(launcher)
    second = directory / "second"
    second.mkdir(mode=0o777)
    second.chmod(0o777)
    victim = Victim(second, "cli", (*BEFORE_6_5, *prefix), directory)
    with launched(victim.argv, cwd=directory) as launcher:
        assert wait_for(lambda: os.path.exists(os.path.join(where, victim.name)))
        stopped = cli("--stop", victim.name, "--grace", "30", prefix=prefix, cwd=directory)
        assert (stopped.returncode, stopped.stderr) == (0, "")
        assert launcher.wait(timeout=60) == -15  # it died of the SIGTERM of --stop, as its job did
        assert [e["reason"] for e in read_status(victim.events) if e["event"] == "stopping"] == ["requested"]

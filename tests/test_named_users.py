"""Running sandboxes across users: only the owner and root can list details of, enter or stop one.
Ordinary users are uids without an account, through setpriv (their registry falls back to
/tmp/sandboxed-run-UID, removed afterwards)."""

from __future__ import annotations

import json
import os
import pwd
import random
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
from test_named import cli, listed, unique_name, wait_listed

from sandboxed_run_helpers.shared import registry
from support import CLI, PYTHON, launched, wait_for


def free_uids(count: int) -> list[int]:
    uids: list[int] = []
    while len(uids) < count:
        uid = random.randint(61000, 64999)
        try:
            pwd.getpwuid(uid)
        except KeyError:
            if uid not in uids and not os.path.exists(f"{registry.TMP_PREFIX}{uid}"):
                uids.append(uid)
    return uids


@pytest.fixture
def user_dir(request) -> Path:
    """A directory any user may use, and our interpreter made reachable for them (conftest's nobody_dir)."""
    return request.getfixturevalue("nobody_dir")


@pytest.fixture
def users():
    """Two ordinary users (uids), as setpriv prefixes; their registries are removed afterwards."""
    uids = free_uids(2)
    try:
        yield [(uid, ("setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups")) for uid in uids]
    finally:
        for uid in uids:
            shutil.rmtree(f"{registry.TMP_PREFIX}{uid}", ignore_errors=True)


def as_user(prefix: tuple[str, ...], code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, PYTHON, "-c", code], capture_output=True, text=True, timeout=60, cwd=cwd)


def test_an_ordinary_user_can_neither_see_nor_enter_nor_stop_roots_sandbox(users, user_dir, no_leftovers):
    (_, user), _ = users
    name = unique_name()
    with launched([CLI, "--name", name, "--", "sleep", "1000"]) as launcher:
        wait_listed(name)
        assert cli("--list", "--json", prefix=user, cwd=user_dir).stdout == "[]\n"
        result = cli("--stop", name, prefix=user, cwd=user_dir)
        assert result.returncode == 1 and f"no running sandbox named {name} of yours" in result.stderr
        result = cli("--stop", f"root/{name}", prefix=user, cwd=user_dir)
        assert result.returncode == 4 and "not yours" in result.stderr, result.stderr
        result = cli("--enter", name, "--", "true", prefix=user, cwd=user_dir)
        assert result.returncode == 125 and "no running sandbox" in result.stderr
        result = cli("--enter", f"root/{name}", "--", "true", prefix=user, cwd=user_dir)
        assert result.returncode == 125 and "not yours" in result.stderr, result.stderr
        api = as_user(user, f"""
import socket, sandbox
print(sandbox.list_running())
try:
    sandbox.stop_running("root/{name}")
except sandbox.SandboxNotPermitted as exc:
    print("not permitted", exc.exit_code)
with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
    try:
        sock.connect("{registry.ROOT_DIRECTORY}/{name}")
    except PermissionError:
        print("no way in")
""", user_dir)
        assert api.stdout.splitlines() == ["[]", "not permitted 4", "no way in"], api.stderr
        assert listed()[name]["state"] == "running" and launcher.poll() is None
        assert cli("--stop", name).returncode == 0


def test_the_reaper_itself_refuses_others_who_reach_its_socket(users, user_dir, no_leftovers):
    """The registry directory keeps other users out; should anything let one through (here: a link to the
    socket in a directory anyone may enter), the reaper checks its peer's credentials itself."""
    (_, user), _ = users
    name = unique_name()
    socket_path = Path(registry.ROOT_DIRECTORY) / name
    hole = Path(tempfile.mkdtemp(prefix="sbx-hole-", dir="/run"))
    try:
        with launched([CLI, "--name", name, "--", "sleep", "1000"]):
            wait_listed(name)
            hole.chmod(0o755)
            os.link(socket_path, hole / name)
            os.chmod(hole / name, 0o666)
            probe = as_user(user, f"""
import socket
from sandboxed_run_helpers.shared import wire
sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
sock.connect("{hole / name}")
print("connected")
answer, fds, _ = wire.recv(sock)
print(type(answer).__name__, answer.errno, fds)
try:
    wire.send(sock, wire.Stop(0.0, wire.StopReason.REQUESTED, False))
    wire.send(sock, wire.Query())
    print(wire.recv(sock))
except (OSError, wire.Closed) as exc:
    print("dropped")
""", user_dir)
            lines = probe.stdout.splitlines()
            assert lines[:2] == ["connected", "Failed 13 []"], probe.stderr
            assert lines[2] == "dropped"
            assert listed()[name]["state"] == "running"  # its Stop was never read
            os.chmod(socket_path, 0o600)
            assert cli("--stop", name).returncode == 0
    finally:
        shutil.rmtree(hole, ignore_errors=True)


def test_an_ordinary_users_sandbox_is_for_its_owner_and_root(users, user_dir, no_leftovers):
    (uid, user), (_, other) = users
    name = unique_name()
    script = "echo from-the-job > /mnt/f && cd /mnt && exec sleep 1000"
    with launched([*user, CLI, "--name", name, "--tmpfs", "/mnt", "--", "sh", "-c", script],
                  cwd=user_dir) as launcher:
        qualified = f"{uid}/{name}"
        shown = wait_listed(qualified)
        assert shown["owner"] == uid and shown["command"] == ["sh", "-c", script]
        registry_dir = os.stat(f"{registry.TMP_PREFIX}{uid}")
        assert (registry_dir.st_uid, registry_dir.st_mode & 0o777) == (uid, 0o700)
        # Its owner sees it, and enters it as the job is: uid 0 of its user namespace.
        mine = json.loads(cli("--list", "--json", prefix=user, cwd=user_dir).stdout)
        assert [(s["name"], s["owner"], s["job_pid"]) for s in mine] == [(name, uid, shown["job_pid"])]
        result = cli("--enter", name, "--", "sh", "-c", "id -u; cat f; pwd", prefix=user, cwd=user_dir)
        assert result.stdout.splitlines() == ["0", "from-the-job", "/mnt"], result.stderr
        # Root enters it as its owner would: no root groups, none of root's environment.
        result = subprocess.run([CLI, "--enter", qualified, "--", "sh", "-c",
                                 "id -u; echo ${SECRET-unset}; grep Groups: /proc/self/status; cat f"],
                                capture_output=True, text=True, timeout=60, env={**os.environ, "SECRET": "s3"})
        assert [line.split() for line in result.stdout.splitlines()] == [["0"], ["unset"], ["Groups:"],
                                                                          ["from-the-job"]], result.stderr
        # Another user sees nothing, and may do nothing.
        assert cli("--list", "--json", prefix=other, cwd=user_dir).stdout == "[]\n"
        assert cli("--stop", qualified, prefix=other, cwd=user_dir).returncode == 4
        assert cli("--stop", name, prefix=other, cwd=user_dir).returncode == 1
        # Root stops it (its name is unique among everyone's: no OWNER/ needed).
        assert cli("--stop", name).returncode == 0
        assert launcher.wait(timeout=30) == -signal.SIGTERM
    assert qualified not in listed()


def squatted_by(uid: int, other_uid: int) -> str:
    """What the user uid is told of its /tmp registry directory, made first by other_uid (without a /run/user/UID)."""
    return (f"the registry of running sandboxes {registry.TMP_PREFIX}{uid} is a directory of uid {other_uid}, not "
            f"yours: ask root to remove it, or log in (or enable lingering) so that /run/user/{uid} exists and "
            "sandboxes are listed there")


def test_a_registry_directory_made_by_someone_else_is_never_used(users, user_dir, no_leftovers):
    """The victim cannot remove it (/tmp is sticky): the line says whose it is and what the victim can do."""
    (uid, user), (other_uid, _) = users
    planted = Path(f"{registry.TMP_PREFIX}{uid}")
    planted.mkdir(mode=0o777)
    os.chown(planted, other_uid, other_uid)
    result = cli("--name", unique_name(), "--", "true", prefix=user, cwd=user_dir)
    assert (result.returncode, result.stderr) == (125, f"sandboxed-run: {squatted_by(uid, other_uid)}\n")
    result = cli("--", "true", prefix=user, cwd=user_dir)
    assert (result.returncode, result.stderr) == (0, "sandboxed-run: the sandbox runs unlisted (sandboxed-run --list "
                                                     f"will not show it): {squatted_by(uid, other_uid)}\n")
    assert os.listdir(planted) == []


def test_a_list_that_may_lack_sandboxes_says_why(users, user_dir, no_leftovers):
    """With the /tmp registry directory someone else's, the user's unnamed sandboxes run unlisted: --list (and
    --list --json) shows what it can, then one line saying whose the directory is and what to do, and exits 125;
    list_running() gives a RuntimeWarning saying the same. Once /run/user/UID is the user's, the line still
    comes (a cron job's sandbox would run unlisted), asking root to remove it."""
    (uid, user), (other_uid, _) = users
    planted = Path(f"{registry.TMP_PREFIX}{uid}")
    planted.mkdir(mode=0o777)
    os.chown(planted, other_uid, other_uid)
    run_user = Path(registry.RUN_USER, str(uid))
    name = unique_name()
    api = ("import warnings, sandbox\nwith warnings.catch_warnings(record=True) as caught:\n"
           "    warnings.simplefilter('always')\n    found = sandbox.list_running()\n"
           "print([s.name for s in found])\nprint([(w.category.__name__, str(w.message)) for w in caught])")
    try:
        for logged_in in (False, True):
            said = squatted_by(uid, other_uid) if not logged_in else \
                f"{squatted_by(uid, other_uid).split(': ask root')[0]}: ask root to remove it"
            expected = f"sandboxed-run: this list may lack sandboxes of yours, which run unlisted: {said}\n"
            for words, out in ((["--list"], ""), (["--list", "--json"], "[]\n")):
                result = cli(*words, prefix=user, cwd=user_dir)
                assert (result.returncode, result.stdout, result.stderr) == (125, out, expected)
            result = as_user(user, api, user_dir)
            assert result.stdout.splitlines() == ["[]", str([("RuntimeWarning", said)])], result.stderr
            if not logged_in:
                run_user.mkdir(mode=0o700)  # what logind makes at login
                os.chown(run_user, uid, uid)
        # A sandbox listed in /run/user/UID is shown all the same.
        with launched([*user, CLI, "--name", name, "--", "sleep", "1000"], cwd=user_dir):
            assert wait_for(lambda: name in cli("--list", prefix=user, cwd=user_dir).stdout)
            result = cli("--list", "--json", prefix=user, cwd=user_dir)
            assert result.returncode == 125 and [s["name"] for s in json.loads(result.stdout)] == [name]
            assert cli("--stop", name, prefix=user, cwd=user_dir).returncode == 0
    finally:
        shutil.rmtree(run_user, ignore_errors=True)


# A listener of the user's that answers as a reaper would, with fields (an expression of spec and os): argv NAME
# FIELDS [hold] [in DIRECTORY] (hold: never lets a client go; in: listens there, not in the user's registry).
FORGER = """
import array, marshal, os, socket, sys
from sandboxed_run_helpers.shared import registry, wire
from sandboxed_run_helpers.shared.options import SandboxSpec
name, fields, *how = sys.argv[1:]
fields = eval(fields, {"spec": SandboxSpec.build({}).to_wire(), "os": os})
directory = how[how.index("in") + 1] if "in" in how else registry.prepare()
listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
listener.bind(os.path.join(directory, name))
listener.listen(8)
print("listening", flush=True)
held = []
while True:
    conn, _ = listener.accept()
    pidfd = os.pidfd_open(os.getpid())
    try:
        conn.recv(4096)
        conn.sendmsg([b"i" + marshal.dumps((int(wire.Kind.ABOUT), *fields))],
                     [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [pidfd]))])
    except OSError:
        pass
    os.close(pidfd)
    if "hold" in how:
        held.append(conn)  # answers, then never lets go
    else:
        conn.close()
"""


@pytest.mark.parametrize("fields", [
    # Types no reaper of ours sends.
    '(5, "noon", 7, 8, 9, 10, spec, [], 11)',
    # Well formed, and full of control characters for root's terminal: a title, a cleared screen, a fake row.
    '("evil\\n\\x1b]0;owned\\x07", 1.0e300, [b"sleep", b"\\x1b[2J"], b"/", "running", None, spec, {}, '
    'b"1 2 0:1 / /x\\\\012evil  root  1  1  -  running  sleep rw - tmpfs \\x1b[31m rw\\n")',
])
def test_a_users_forged_answers_neither_break_nor_steer_roots_list(users, user_dir, fields, no_leftovers):
    """Anyone may listen in their own registry directory with a program of their own; root lists everyone's.
    What such a program answers is shown escaped, under the entry's own name, or not at all: never a traceback."""
    (uid, user), _ = users
    name = unique_name()
    with launched([*user, PYTHON, "-c", FORGER, name, fields], cwd=user_dir, stdout=subprocess.PIPE) as forger:
        assert forger.stdout.readline() == b"listening\n"
        for args in (["--list"], ["--list", "--json"]):
            result = cli(*args)
            assert result.returncode == 0 and result.stderr == "", result.stderr
            assert not any(c in result.stdout for c in "\x1b\x07"), result.stdout
        rows = [line for line in cli("--list").stdout.splitlines() if "evil" in line or name in line]
        assert all(line.startswith((name, " ")) for line in rows), rows  # no row but the entry's own
        shown = [s for s in json.loads(cli("--list", "--json").stdout) if s["owner"] == uid]
        assert [s["name"] for s in shown] == ([] if fields.startswith("(5") else [name]), shown


def test_root_never_enters_a_users_forged_sandbox_as_root(users, user_dir, tmp_path, no_leftovers):
    """A user's own listener answers as a reaper would, from the host's namespaces: root entering it would run
    the command as root, on the host, where the user chose. Only a user namespace of the user's own is entered."""
    (_, user), _ = users
    name = unique_name()
    fields = f'("{name}", 1.0, [b"sleep"], b"{user_dir}", "running", None, spec, {{"pid": 1, "mnt": 1}}, b"")'
    witness = tmp_path / "ran"
    with launched([*user, PYTHON, "-c", FORGER, name, fields], cwd=user_dir, stdout=subprocess.PIPE) as forger:
        assert forger.stdout.readline() == b"listening\n"
        qualified = f"{users[0][0]}/{name}"
        result = cli("--enter", qualified, "--", "touch", str(witness))
        assert result.returncode == 125 and result.stderr.count("\n") == 1, result.stderr
        assert "user namespace" in result.stderr
        assert not witness.exists()


def test_root_enters_a_users_sandbox_as_that_user_whatever_its_answer_says(users, user_dir, tmp_path, no_leftovers):
    """A user's own listener, in a user namespace of the user's own (unshare -U), answers that its sandbox has no
    user namespace: root took the ids to become inside from that answer, so its command ran as the host's uid 0
    in the user's namespaces (shown as nobody there, but the owner of root's files, in mounts the user chose).
    Root's command runs as the owner does, on the host, whatever the answer says."""
    (uid, user), _ = users
    name = unique_name()
    directory = Path(f"{registry.TMP_PREFIX}{uid}")
    directory.mkdir(mode=0o700)
    os.chown(directory, uid, uid)
    closed = tmp_path / "root-only"
    closed.mkdir(mode=0o700)
    witness = closed / "ran"
    # A spec without a user namespace (userns_ids None), from a user namespace of the user's own.
    fields = (f'("{name}", 1.0, [b"sleep"], b"/", "running", None, spec, '
              '{"user": os.stat("/proc/self/ns/user").st_ino}, b"")')
    with launched([*user, "unshare", "--user", "--map-root-user", PYTHON, "-c", FORGER, name, fields, "in",
                   str(directory)], cwd=user_dir, stdout=subprocess.PIPE) as forger:
        assert forger.stdout.readline() == b"listening\n"
        script = f"touch {witness}; grep -E '^(Uid|Gid):' /proc/self/status"
        result = cli("--enter", f"{uid}/{name}", "--", "sh", "-c", script)
        assert not witness.exists(), result.stdout
        assert "Permission denied" in result.stderr, result.stderr
        # In the user's namespace, which maps the user to 0: the owner, not the host's root (nobody there).
        assert [line.split()[1] for line in result.stdout.splitlines()] == ["0", "0"], result.stdout


def test_roots_stop_of_a_users_forged_sandbox_ends(users, user_dir, no_leftovers):
    """A listener that answers as a reaper and never exits: root's stop waits for its end a bounded time (the
    grace and a margin), then says so, instead of waiting forever."""
    (uid, user), _ = users
    name = unique_name()
    fields = f'("{name}", 1.0, [b"sleep"], b"{user_dir}", "running", None, spec, {{"pid": 1, "mnt": 1}}, b"")'
    stop = ("import sandbox, sys; from sandbox import running; running.END_MARGIN = 1.0\n"
            "try:\n    running.stop_running(sys.argv[1], grace=0)\nexcept sandbox.SandboxError as exc:\n    print(exc)")
    with launched([*user, PYTHON, "-c", FORGER, name, fields, "hold"], cwd=user_dir, stdout=subprocess.PIPE) as forger:
        assert forger.stdout.readline() == b"listening\n"
        result = subprocess.run([PYTHON, "-c", stop, f"{uid}/{name}"], capture_output=True, text=True, timeout=30)
        assert f"sandbox {uid}/{name} did not end within 1 s" in result.stdout, (result.stdout, result.stderr)
        assert forger.poll() is None


def test_a_name_is_unique_across_both_of_a_users_registries(users, user_dir, no_leftovers):
    """A cron job's sandbox registers in /tmp/sandboxed-run-UID (no /run/user/UID then); once the user logs
    in, new ones register in /run/user/UID/sandboxed-run: the name is still taken."""
    (uid, user), _ = users
    name = unique_name()
    run_user = Path(registry.RUN_USER, str(uid))
    try:
        with launched([*user, CLI, "--name", name, "--", "sleep", "1000"], cwd=user_dir) as first:
            assert wait_for(lambda: f"{uid}/{name}" in listed(prefix=user))
            assert os.path.exists(os.path.join(f"{registry.TMP_PREFIX}{uid}", name))
            run_user.mkdir(mode=0o700)  # what logind makes at login
            os.chown(run_user, uid, uid)
            for start in ([CLI, "--name", name, "--", "true"],
                          [PYTHON, "-c", f"import sandbox; sandbox.run(['true'], name={name!r})"]):
                result = subprocess.run([*user, *start], capture_output=True, text=True, timeout=60, cwd=user_dir)
                assert result.returncode != 0 and f"a sandbox named {name} is already running" in result.stderr
                if start[0] == CLI:
                    assert (result.returncode, result.stderr.count("\n")) == (125, 1), result.stderr
            assert not os.path.exists(run_user / "sandboxed-run" / name)
            assert cli("--stop", name, prefix=user).returncode == 0
            assert first.wait(timeout=30) == -signal.SIGTERM
    finally:
        shutil.rmtree(run_user, ignore_errors=True)


@pytest.mark.parametrize(("entry", "limit"), [("cli", 2), ("cli", 3), ("run", 2), ("run", 3)])
def test_a_process_limit_too_low_for_our_processes_is_one_clear_error(entry, limit, user_dir, no_leftovers):
    """An ordinary user whose RLIMIT_NPROC leaves no room for our helpers, the reaper or the job: our failure
    (125, SandboxError) naming the limit, wherever the fork failed. It was 126 'sh: cannot execute' (the
    job's spawn), a BlockingIOError's repr (a helper), or a RuntimeError traceback (the API's thread)."""
    (uid,) = free_uids(1)
    prefix = ["prlimit", f"--nproc={limit}", "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
    try:
        if entry == "cli":
            result = subprocess.run([*prefix, CLI, "true"], capture_output=True, text=True, timeout=60, cwd=user_dir)
            assert result.returncode == 125 and result.stderr.count("\n") == 1, result.stderr
            said = result.stderr
        else:
            code = ("import sandbox\ntry:\n    sandbox.run(['true'])\nexcept sandbox.SandboxError as exc:\n"
                    "    print(exc)\n")
            result = subprocess.run([*prefix, PYTHON, "-c", code], capture_output=True, text=True, timeout=60,
                                    cwd=user_dir)
            assert result.returncode == 0 and result.stderr == "", result.stderr
            said = result.stdout
        assert f"too many processes (this user's limit is {limit}: raise it" in said, said
    finally:
        shutil.rmtree(f"{registry.TMP_PREFIX}{uid}", ignore_errors=True)


# A user's registry directory, swapped for a link to root's while root's client waits for room in the backlog of
# one of its entries (full: the user connected to it first), then given room: the client goes on to the next entry.
SWAPPER = """
import os, socket, sys
directory, name = sys.argv[1], sys.argv[2]
os.mkdir(directory, 0o700)
first = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
first.bind(directory + "/a-first")
first.listen(0)
filler = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
filler.connect(directory + "/a-first")
entry = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
entry.bind(directory + "/" + name)
print("ready", flush=True)
sys.stdin.readline()
os.rename(directory, directory + ".real")
os.symlink("/run/sandboxed-run", directory)
first.accept()
print("swapped", flush=True)
sys.stdin.readline()
"""
LIST_RUNNING = "import json, sandbox; print(json.dumps([s.to_json() for s in sandbox.list_running()]))"


def waits_for_room(pid: int) -> bool:
    """Whether process pid waits in connect() for room in a unix socket's backlog."""
    try:
        return Path(f"/proc/{pid}/wchan").read_text() == "unix_wait_for_peer"
    except OSError:
        return False


@pytest.mark.parametrize("entry", ["cli", "api"])
def test_root_never_follows_a_users_registry_swapped_for_a_link(entry, users, user_dir, no_leftovers):
    """Root lists (and stops, enters) a user's sandboxes through the user's directory as it is when it connects,
    never through a link the user put there meanwhile: the user's entry named as root's sandbox is never root's
    sandbox (a --stop of USER/NAME would stop root's NAME)."""
    (uid, user), _ = users
    name = unique_name()
    directory = f"{registry.TMP_PREFIX}{uid}"
    lister = [CLI, "--list", "--json"] if entry == "cli" else [PYTHON, "-c", LIST_RUNNING]
    with launched([CLI, "--name", name, "--", "sleep", "1000"]):
        wait_listed(name)
        try:
            with launched([*user, PYTHON, "-c", SWAPPER, directory, name], cwd=user_dir, stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE) as swapper:
                assert swapper.stdout.readline() == b"ready\n"
                with launched(lister, stdout=subprocess.PIPE) as listing:
                    assert wait_for(lambda: waits_for_room(listing.pid))
                    swapper.stdin.write(b"\n")
                    swapper.stdin.flush()
                    assert swapper.stdout.readline() == b"swapped\n"
                    out, _ = listing.communicate(timeout=30)
        finally:
            if os.path.islink(directory):
                os.unlink(directory)
            shutil.rmtree(directory + ".real", ignore_errors=True)
    shown = {(s["owner"], s["name"]): s for s in json.loads(out)}
    assert shown[(0, name)]["command"] == ["sleep", "1000"]
    assert shown.get((uid, name), {}).get("command") is None, shown


# In a PID namespace of its own (nobody else takes PIDs there): an entry of a user's whose listening socket outlived
# the process that listened (it handed the socket on, then exited), and that process's PID taken since by a PID 1
# of another namespace, the victim (a container's init, another sandbox's reaper). The holder answers as a reaper
# would, with a pidfd of that PID, or not at all.
REUSED = """
import array, marshal, os, signal, socket, subprocess, sys, time
uid, name, answer, what = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "answers", sys.argv[4]
from sandboxed_run_helpers.shared import registry, wire
from sandboxed_run_helpers.shared.options import SandboxSpec
directory = registry.TMP_PREFIX + str(uid)
os.mkdir(directory, 0o700)
os.chown(directory, uid, uid)
go = os.pipe()
spare = os.fork()  # a PID left free below the listener's, for the victim's unshare
if spare == 0:
    os._exit(0)
os.waitpid(spare, 0)
listener = os.fork()
if listener == 0:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.bind(os.path.join(directory, name))
    os.chown(os.path.join(directory, name), uid, uid)
    sock.listen(8)
    if os.fork() == 0:  # the holder
        os.read(go[0], 1)
        while True:
            conn, _ = sock.accept()
            conn.recv(4096)
            if answer:
                fields = (name, 1.0, [b"sleep"], b"/", "running", None, SandboxSpec.build({}).to_wire(),
                          {"pid": 1, "mnt": 1}, b"")
                pidfd = os.pidfd_open(int(open("/tmp/victim-pid-" + name).read()))
                conn.sendmsg([b"i" + marshal.dumps((int(wire.Kind.ABOUT), *fields))],
                             [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [pidfd]))])
            time.sleep(1000)
    os._exit(0)
os.waitpid(listener, 0)
with open("/proc/sys/kernel/ns_last_pid", "w") as f:
    f.write(str(listener - 2))
victim = subprocess.Popen(["unshare", "--pid", "--fork", "sleep", "1000"])  # unshare takes listener - 1
time.sleep(0.5)
assert open(f"/proc/{listener}/status").read().count("NSpid:\\t%d\\t1\\n" % listener) == 1, "the PID was not reused"
with open("/tmp/victim-pid-" + name, "w") as f:
    f.write(str(listener))
os.write(go[1], b"x")
import sandbox
from sandbox import running
running.END_MARGIN = 1.0
try:
    if what == "stop":
        sandbox.stop_running(f"{uid}/{name}", grace=0)
    else:
        print([s.reaper_pid for s in sandbox.list_running() if s.name == name])
except sandbox.SandboxError as exc:
    print("error:", exc)
try:
    state = open(f"/proc/{listener}/stat").read().rsplit(")", 1)[1].split()[0]
except OSError:
    state = "gone"
print("victim", "killed" if state in ("Z", "X", "gone") else "alive", flush=True)
victim.kill()
os.unlink("/tmp/victim-pid-" + name)
"""


@pytest.mark.parametrize("answer", ["answers", "silent"])
@pytest.mark.parametrize("what", ["stop", "list"])
def test_a_listener_gone_whose_pid_was_reused_is_never_taken_for_a_reaper(what, answer, users, no_leftovers):
    """The kernel's SO_PEERCRED names the process that listened by its PID, as it was then: root's stop of the
    entry SIGKILLed whatever PID 1 had that PID now, and listed it as the entry's reaper. The listener's pidfd
    (SO_PEERPIDFD) says that it is gone: no sandbox of ours listens there."""
    (uid, _), _ = users
    name = unique_name()
    result = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", PYTHON, "-c", REUSED, str(uid), name,
                             answer, what], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("victim alive\n"), result.stdout
    assert "[" not in result.stdout or result.stdout.startswith("[]"), result.stdout


# A user's listener that answers with a descriptor whose close waits: a TCP socket (over loopback) lingering for ten
# minutes on data its peer never reads, the listener's own copy closed: root's would be the last.
LINGERER = """
import array, marshal, os, socket, struct, sys
from sandboxed_run_helpers.shared import registry, wire
from sandboxed_run_helpers.shared.options import SandboxSpec
name = sys.argv[1]
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a window that stays shut
server.bind(("127.0.0.1", 0))
server.listen(64)
held = []

def lingering():
    # One for each client (whoever else lists meanwhile gets one too), its peer held and never read.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sock.connect(server.getsockname())
    held.append(server.accept()[0])
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 600))
    sock.setblocking(False)
    try:
        while True:
            sock.send(b"x" * 65536)
    except BlockingIOError:
        pass
    return sock

listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
listener.bind(os.path.join(registry.prepare(), name))
listener.listen(8)
print("listening", flush=True)
fields = (name, 1.0, [b"sleep"], b"/", "running", None, SandboxSpec.build({}).to_wire(), {}, b"")
while True:
    conn, _ = listener.accept()
    conn.recv(4096)
    pidfd, sock = os.pidfd_open(os.getpid()), lingering()
    conn.sendmsg([b"i" + marshal.dumps((int(wire.Kind.ABOUT), *fields))],
                 [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [pidfd, sock.fileno()]))])
    os.close(pidfd)
    os.close(sock.detach())  # our copy goes: the one root received is the last
    conn.close()
"""


@pytest.mark.parametrize("entry", ["cli", "api"])
def test_a_descriptor_whose_close_waits_never_holds_up_roots_list(entry, users, user_dir, no_leftovers):
    """Root closed whatever came with a user's answer at once, and close() waited for the socket's linger (ten
    minutes here): root's --list, and a cron job's --stop, hung on any user's listener."""
    (uid, user), _ = users
    name = unique_name()
    lister = [CLI, "--list", "--json"] if entry == "cli" else [PYTHON, "-c", LIST_RUNNING]
    with launched([*user, PYTHON, "-c", LINGERER, name], cwd=user_dir, stdout=subprocess.PIPE) as lingerer:
        assert lingerer.stdout.readline() == b"listening\n"
        result = subprocess.run(lister, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    shown = {(s["owner"], s["name"]): s for s in json.loads(result.stdout)}
    assert shown[(uid, name)]["command"] == ["sleep"]

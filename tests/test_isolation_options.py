"""Isolation options, checked from outside: --net none/netns:NAME, rootless use through a user
namespace (as uid 65534, via setpriv), the error when user namespaces are disabled, --read-only,
--hostname and --proc/--no-proc, and the errors for bad values."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from test_leftovers import _leaver

import sandbox
from support import (
    CLI,
    PYTHON,
    all_ended,
    host_mounts,
    kill_and_expect_a_graceful_stop,
    log_lines,
    marked_processes,
    signal_job,
    wait_for,
)

NOBODY = 65534
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]

LINKS = "import socket; print(' '.join(name for _, name in socket.if_nameindex()))"


def run_cli(*args: str, prefix: list[str] = (), **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, CLI, *args], capture_output=True, text=True, timeout=60, **kw)


# -- network ---------------------------------------------------------------------------------------


@pytest.fixture
def host_listener():
    """A TCP listener on the host's 127.0.0.1; yields its port."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


def _probe(port: int) -> str:
    return (f"import socket\n{LINKS}\n"
            "import subprocess; print(subprocess.run(['ip', '-o', 'link', 'show', 'lo'], capture_output=True, "
            "text=True).stdout.split('>')[0])\n"
            f"try:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2); print('reached')\n"
            "except OSError as exc:\n    print('unreachable', type(exc).__name__)\n")


def test_net_none_has_only_lo_up_and_the_host_loopback_is_unreachable(host_listener):
    # The listener is reachable without the option: the probe itself works.
    assert run_cli(PYTHON, "-c", _probe(host_listener)).stdout.splitlines()[-1] == "reached"
    result = run_cli("--net", "none", PYTHON, "-c", _probe(host_listener))
    assert result.returncode == 0, result.stderr
    links, lo, reached = result.stdout.splitlines()
    assert links == "lo"
    assert ",UP" in lo, lo
    assert reached == "unreachable ConnectionRefusedError"


def test_api_net_none(host_listener):
    result = sandbox.run([PYTHON, "-c", _probe(host_listener)], net="none", capture_output=True, text=True)
    links, lo, reached = result.stdout.splitlines()
    assert (links, ",UP" in lo, reached.split()[0]) == ("lo", True, "unreachable")


@pytest.fixture
def named_netns():
    name = f"sbx-test-{uuid.uuid4().hex[:8]}"
    was_mounted = "/run/netns" in host_mounts()  # ip netns add mounts it on first use
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "add", "sbxtest0", "type", "bridge"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)
        if not was_mounted and not os.listdir("/run/netns"):
            subprocess.run(["umount", "/run/netns"], check=True)


def test_joining_a_named_netns_sees_its_links(named_netns):
    result = run_cli("--net", f"netns:{named_netns}", PYTHON, "-c", LINKS)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["lo", "sbxtest0"]
    result = sandbox.run([PYTHON, "-c", LINKS], net=f"netns:{named_netns}", capture_output=True, text=True)
    assert result.stdout.split() == ["lo", "sbxtest0"]


# -- rootless --------------------------------------------------------------------------------------


def test_an_ordinary_user_gets_a_private_tmpfs_and_mount_that_the_host_never_sees(nobody_dir):
    before = host_mounts()
    inner = nobody_dir / "inner"
    inner.mkdir()
    inner.chmod(0o777)
    script = (f"id -u; touch /mnt/x && ls /mnt; mount -t tmpfs made-by-nobody {inner} && touch {inner}/inside "
              f"&& echo mounted; touch {nobody_dir}/made-inside")
    result = run_cli("--tmpfs", "/mnt", "--bind", f"{nobody_dir}", "sh", "-c", script, prefix=AS_NOBODY,
                     cwd=nobody_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "x", "mounted"]
    assert not (inner / "inside").exists()
    assert host_mounts() == before
    made = (nobody_dir / "made-inside").stat()
    assert (made.st_uid, made.st_gid) == (NOBODY, NOBODY), "files made inside must belong to the real caller"


def test_uid_and_gid_inside_the_user_namespace(nobody_dir):
    result = run_cli("--userns-uid", "1000", "--userns-gid", "100", "sh", "-c", f"id -u; id -g; touch {nobody_dir}/f",
                     prefix=AS_NOBODY, cwd=nobody_dir)
    assert result.stdout.split() == ["1000", "100"], result.stderr
    assert (nobody_dir / "f").stat().st_uid == NOBODY


ENTRY_POINTS = ["cli", "run", "Popen", "Job", "run_async", "create_process", "AsyncJob"]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize(("old", "new"), [("uid", "userns_uid"), ("gid", "userns_gid")])
def test_the_old_names_of_the_user_namespace_ids_are_refused_with_the_new_one(entry, old, new, tmp_path):
    """--uid and --gid looked like a switch of user, and were the host's root for root: they are
    --userns-uid and --userns-gid now; the old names get one line naming the new one and what it does."""
    from test_limits import through

    flag = tmp_path / "ran"
    what = "uid" if old == "uid" else "gid"
    said = (f"{{old}} is now {{new}}: it maps the caller to that {what} inside a user namespace, and does not switch "
            "user (on the host the job's processes are still the caller)")
    if entry == "cli":
        for words in ([f"--{old}", "1000"], [f"--{old}=1000"], ["--userns", f"--{old}", "x"]):
            result = run_cli(*words, "--", "touch", str(flag))
            expected = said.format(old=f"--{old}", new=f"--{new.replace('_', '-')}")
            assert (result.returncode, result.stderr) == (2, f"sandboxed-run: {expected} (see --help)\n")
        assert run_cli("--", "true", f"--{old}", "5").returncode == 0, "the command's own words are its own"
    else:
        with pytest.raises(TypeError) as raised:
            through(entry, ["touch", str(flag)], {old: 1000}, tmp_path)
        assert str(raised.value) == said.format(old=old, new=new)
    assert not flag.exists()


def test_an_ordinary_user_sigkilled_the_job_gets_the_stop_signal_and_its_grace_period(nobody_dir, no_leftovers):
    argv, log = signal_job(nobody_dir, cleanup=1.0)
    launcher = subprocess.Popen([*AS_NOBODY, CLI, "--grace", "5", *argv], cwd=nobody_dir, start_new_session=True)
    assert wait_for(lambda: log_lines(log))
    kill_and_expect_a_graceful_stop(launcher, log, no_leftovers)


def test_an_ordinary_user_leftovers_are_stopped(nobody_dir, no_leftovers):
    argv, log = _leaver(nobody_dir)
    log.chmod(0o666)
    result = subprocess.run([*AS_NOBODY, CLI, "--grace", "1", *argv], cwd=nobody_dir, timeout=60)
    assert result.returncode == 3
    assert "daemon cleaned" in log_lines(log)
    assert not marked_processes(no_leftovers, {os.getpid()})


def test_an_ordinary_user_api_caller_sigkilled(nobody_dir, no_leftovers):
    argv, log = signal_job(nobody_dir, cleanup=1.0)
    program = f"import sandbox; sandbox.run({argv!r}, grace=5, tmpfs=['/mnt'])"
    caller = subprocess.Popen([*AS_NOBODY, PYTHON, "-c", program], cwd=nobody_dir, start_new_session=True)
    assert wait_for(lambda: log_lines(log))
    kill_and_expect_a_graceful_stop(caller, log, no_leftovers)


# Sets the limit to 0 for the commands run under it; yields a command prefix.
DISABLE_IN_CHILD_USERNS = ["unshare", "--user", "--map-root-user", "sh", "-c",
                           'echo 0 > /proc/sys/user/max_user_namespaces && exec "$@"', "sh"]


@pytest.mark.parametrize("launcher", ["cli", "api"])
def test_an_ordinary_user_killed_during_start_up_leaves_no_process(nobody_dir, no_leftovers, launcher):
    rng = random.Random(f"rootless start-up race {launcher}")
    if launcher == "cli":
        argv = [*AS_NOBODY, CLI, "sleep", "300"]
    else:
        argv = [*AS_NOBODY, PYTHON, "-c", "import sandbox; sandbox.run(['sleep', '300'])"]
    for delay in sorted(rng.uniform(0, 0.15) for _ in range(20)):
        caller = subprocess.Popen(argv, cwd=nobody_dir, start_new_session=True)
        time.sleep(delay)
        caller.kill()
        caller.wait()
    me = {os.getpid()}
    assert wait_for(lambda: all_ended(no_leftovers, me), timeout=30), marked_processes(no_leftovers, me)


@pytest.fixture
def userns_disabled():
    """user.max_user_namespaces=0 for the test, set back afterwards however the test ends.

    Writing it needs CAP_SYS_RESOURCE; where root lacks it (some containers and CI sandboxes) the
    same sysctl is set to 0 in a child user namespace, where it binds the same way for every user
    namespace created below it, and the commands run there.
    """
    path = Path("/proc/sys/user/max_user_namespaces")
    old = path.read_text()
    try:
        path.write_text("0\n")
    except PermissionError:
        yield DISABLE_IN_CHILD_USERNS
        return
    try:
        yield []
    finally:
        path.write_text(old)


@pytest.mark.parametrize("who", ["root with --userns",
                                 pytest.param("an ordinary user", marks=pytest.mark.root("runs as nobody"))])
def test_disabled_user_namespaces_get_one_line_naming_the_setting(userns_disabled, request, who):
    if who == "an ordinary user":
        nobody_dir = request.getfixturevalue("nobody_dir")
        if userns_disabled:
            pytest.skip("root here lacks CAP_SYS_RESOURCE: the host's sysctl cannot be changed")
        result = run_cli("true", prefix=AS_NOBODY, cwd=nobody_dir)
    else:
        result = run_cli("--userns", "true", prefix=userns_disabled)
    assert result.returncode == 125
    assert result.stderr.count("\n") == 1, result.stderr
    assert "user.max_user_namespaces" in result.stderr


# -- read-only, hostname, /proc --------------------------------------------------------------------


@pytest.fixture
def outside_tmp():
    """A directory that is not below /tmp (which the tests cover with a tmpfs)."""
    directory = Path(tempfile.mkdtemp(prefix="sbx-ro-", dir="/var/tmp"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory)


def test_read_only_root_with_a_tmpfs_lets_the_job_write_only_to_tmp(outside_tmp):
    script = (f"touch /tmp/ok && echo tmp; touch {outside_tmp}/no 2>/dev/null || echo ro; "
              "touch /etc/sbx-no 2>/dev/null || echo ro; mkdir /var/sbx-no 2>/dev/null || echo ro")
    result = run_cli("--read-only", "/", "--tmpfs", "/tmp", "--chdir", "/", "sh", "-c", script)
    assert result.stdout.split() == ["tmp", "ro", "ro", "ro"], result.stderr
    assert not (outside_tmp / "no").exists() and not Path("/etc/sbx-no").exists()


def test_a_bind_opens_a_writable_hole_in_a_read_only_path(outside_tmp):
    hole = outside_tmp / "hole"
    hole.mkdir()
    result = sandbox.run(["sh", "-c", f"touch {hole}/yes && touch {outside_tmp}/no"], read_only=[str(outside_tmp)],
                         bind=[str(hole)], capture_output=True, text=True)
    assert "Read-only" in result.stderr and result.returncode != 0
    assert (hole / "yes").exists() and not (outside_tmp / "no").exists()


def test_hostname_and_proc_options():
    result = run_cli("--hostname", "sbx-box", "hostname")
    assert result.stdout == "sbx-box\n" and socket.gethostname() != "sbx-box"
    assert run_cli("cat", "/proc/1/comm").stdout == "sandbox-reaper\n"
    assert run_cli("--no-proc", "cat", "/proc/1/comm").stdout != "sandbox-reaper\n"
    result = sandbox.run(["cat", "/proc/1/comm"], proc=False, hostname="x", capture_output=True, text=True)
    assert result.stdout != "sandbox-reaper\n"


# -- bad values and documentation -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--net", "bridge", "true"], 2, "unknown net mode"),
        (["--net", "netns:", "true"], 2, "netns"),
        (["--net", "netns:no-such-netns-here", "true"], 125, "ip netns add"),
        (["--userns-uid", "-1", "true"], 2, "out of range"),
        (["--userns-gid", "4294967295", "true"], 2, "out of range"),
        (["--userns-uid", "root", "true"], 2, "uid"),
        (["--hostname", "not a name", "true"], 2, "hostname"),
        (["--hostname", "h\udcff", "true"], 2, "--hostname 'h\\udcff': use 1 to 64"),  # the byte 0xff
        (["--read-only", "relative", "true"], 2, "absolute"),
        (["--read-only", "/no/such/path", "true"], 125, "does not exist"),
    ],
)
def test_bad_isolation_values_get_one_clear_line(args, code, words):
    result = run_cli(*args)
    assert result.returncode == code, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert words.lower() in result.stderr.lower(), result.stderr


@pytest.mark.parametrize("options", [{"net": "nope"}, {"userns_uid": -5}, {"userns_uid": 1, "userns": False},
                                     {"proc": "yes"},
                                     {"read_only": "/"}, {"hostname": ""}])
def test_api_rejects_bad_isolation_values(options):
    with pytest.raises(ValueError):
        sandbox.run(["true"], **options)


def test_an_undecodable_hostname_is_named_in_the_api_error():
    with pytest.raises(ValueError, match=r"^hostname 'h\\udcff': use 1 to 64"):
        sandbox.run(["true"], hostname="h\udcff")


def test_help_lists_the_isolation_options():
    out = run_cli("--help").stdout
    for option in ("--net", "--userns", "--userns-uid", "--userns-gid", "--read-only", "--hostname", "--proc",
                   "--no-proc"):
        assert option in out



# A pyroute2 whose layout differs: its rtnl part fails to load once, the way into it without the package's
# __init__; the whole package, loaded as its authors meant, works.
FAILS_ONCE = """
class FailsOnce:
    failed = False
    def find_spec(self, name, path=None, target=None):
        if name == "pyroute2.netlink.rtnl" and not FailsOnce.failed:
            FailsOnce.failed = True
            raise ImportError("another layout")
sys.meta_path.insert(0, FailsOnce())
"""

# The message that turns lo on, encoded by what load_netlink gives and by pyroute2's own full link message.
SAME_BYTES = """
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg as full
def encoded(kind):
    m = kind()
    m["family"], m["index"], m["flags"], m["change"] = 0, 1, 1, 1
    m["header"].update(type=newlink, flags=flags, sequence_number=1)
    m.encode()
    return m.data
assert encoded(ifinfmsg) == encoded(full), (encoded(ifinfmsg), encoded(full))
"""


@pytest.mark.parametrize("before", ["", "import pyroute2", FAILS_ONCE],
                         ids=["entered-without-init", "already-loaded", "fallback-to-whole-package"])
def test_netlink_classes_load_every_way(before):
    """The reaper enters pyroute2 without its heavy __init__; a pyroute2 already loaded, or a layout where that
    fails, still gives the message classes that bring lo up, and the same bytes as pyroute2's full message."""
    code = (f"import sys\n{before}\nfrom sandboxed_run_helpers.reaper.network import load_netlink\n"
            "ifinfmsg, flags, nlmsgerr, newlink, route = load_netlink()\n"
            "assert ifinfmsg.__name__ == 'ifinfmsg' and newlink == 16 and route == 0, (newlink, route)\n"
            "print('ok', 'asyncio' in sys.modules)\n" + SAME_BYTES)
    result = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "ok"
    if before == FAILS_ONCE:
        assert result.stdout.split()[1] == "True", "the fallback did not load the whole package"
    if not before:
        assert result.stdout.split()[1] == "False", "the whole package was loaded"

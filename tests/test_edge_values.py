"""Values at the edges: infinite and huge durations, wrong types, reserved signals, paths that would
reach the host's root, and a status file planted by someone else. Each is handled before anything
starts, with one clear line (or a ValueError/TypeError in the API), never a traceback."""

from __future__ import annotations

import os
import subprocess

import pytest

import sandbox
from sandbox.api import spawner
from support import CLI, all_ended, wait_for


def cli(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *argv], capture_output=True, text=True, timeout=60, **kwargs)


@pytest.mark.parametrize("value", ["inf", "infinity", "1e10", "1e309"])
def test_an_endless_timeout_means_none(value):
    result = cli("--timeout", value, "--", "sh", "-c", "exit 3")
    assert (result.returncode, result.stderr) == (3, "")


@pytest.mark.parametrize("value", ["1e10", "inf"])
def test_a_huge_grace_still_stops_what_the_job_left(value, no_leftovers):
    # The leftover ends on the stop signal; only the grace period is huge.
    result = cli("--grace", value, "--", "sh", "-c", "sleep 100 & exit 3")
    assert (result.returncode, result.stderr) == (3, "")
    assert wait_for(lambda: all_ended(no_leftovers, {os.getpid()}))


@pytest.mark.parametrize("argv", [
    ["--timeout", "nan"], ["--grace", "nan"], ["--grace", "-1"], ["--timeout", "-0.5"],
    ["--stop-signal", "RTMIN-1"], ["--stop-signal", "32"], ["--stop-signal", "RTMAX+1"], ["--stop-signal", "0"],
    ["--unsetenv", "A=B"], ["--unsetenv", ""], ["--setenv", "=x"],
    ["--tmpfs", "/"], ["--bind", "/tmp:/"], ["--ro-bind", "/usr:/"], ["--tmpfs", "/.."], ["--tmpfs", "//"],
    ["--bind", "/tmp://"], ["--json-status-fd", "99999999999"],
])
def test_bad_values_get_one_line_and_status_2(argv, tmp_path):
    result = cli(*argv, "--", "touch", str(tmp_path / "ran"))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("sandboxed-run: ") and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "ran").exists()


def test_the_api_takes_endless_durations(no_leftovers):
    assert sandbox.run(["sh", "-c", "exit 3"], timeout=float("inf")).returncode == 3
    assert sandbox.run(["sh", "-c", "sleep 100 & exit 4"], grace=1e10).returncode == 4
    assert sandbox.run(["sh", "-c", "exit 5"], timeout=1e10, grace=float("inf")).returncode == 5


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"stop_signal": 1.5}, TypeError), ({"stop_signal": None}, TypeError), ({"stop_signal": True}, TypeError),
    ({"stop_signal": "RTMIN-1"}, ValueError), ({"stop_signal": 33}, ValueError),
    ({"timeout": b"1"}, TypeError), ({"timeout": float("nan")}, ValueError), ({"grace": "1 sec x"}, ValueError),
    ({"cwd": "/tmp\0x"}, ValueError), ({"tmpfs": ["/"]}, ValueError), ({"bind": ["/tmp:/"]}, ValueError),
    ({"tmpfs": ["//"]}, ValueError), ({"stdin": 2**40}, OSError),
    ({"env": {"": "x"}}, ValueError), ({"env": {"A": 1}}, TypeError),
])
def test_the_api_checks_types_and_values_before_anything_starts(kwargs, error):
    before = spawner.current()
    with pytest.raises(error):
        sandbox.run(["true"], **kwargs)
    assert spawner.current() is before


def test_odd_but_valid_values_work(tmp_path):
    import enum

    class Net(enum.StrEnum):
        NONE = "none"

    class Path(str):
        pass

    assert cli("--stop-signal", "RTMAX", "--", "true").returncode == 0
    result = sandbox.run(["sh", "-c", "cat /proc/self/status >/dev/null; hostname"], stop_signal="RTMIN",
                         net=Net.NONE, hostname=Path("odd"), tmpfs=[Path(str(tmp_path))], capture_output=True,
                         text=True, on_exit=[Path("true")])
    assert (result.returncode, result.stdout) == (0, "odd\n")


def test_the_status_file_is_never_reached_through_a_symlink(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    link = tmp_path / "status"
    link.symlink_to(victim)
    result = cli("--json-status", str(link), "--", "true")
    assert result.returncode == 125 and "symbolic link" in result.stderr
    assert victim.read_text() == "precious\n"


@pytest.mark.root("files of another user")
def test_a_status_file_planted_by_another_user_in_a_sticky_directory_is_refused(tmp_path):
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    planted = sticky / "status"
    planted.write_text("theirs\n")
    os.chown(planted, 65534, 65534)
    result = cli("--json-status", str(planted), "--", "true")
    assert result.returncode == 125 and "owned by" in result.stderr, result.stderr
    assert planted.read_text() == "theirs\n"
    # Nor another user's FIFO there (it would hold us, or read our status), nor a path through a link of theirs.
    fifo = sticky / "fifo"
    os.mkfifo(fifo)
    os.chown(fifo, 65534, 65534)
    result = cli("--json-status", str(fifo), "--", "true")
    assert result.returncode == 125 and "owned by" in result.stderr, result.stderr
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "status").write_text("precious\n")
    link = sticky / "dirlink"
    link.symlink_to(victim)
    os.chown(link, 65534, 65534, follow_symlinks=False)
    result = cli("--json-status", str(link / "status"), "--", "true")
    assert result.returncode == 125 and "symbolic link" in result.stderr, result.stderr
    assert (victim / "status").read_text() == "precious\n"
    # Our own file there is fine, and truncated as documented.
    mine = sticky / "mine"
    mine.write_text("old contents that are longer than the new\n")
    assert cli("--json-status", str(mine), "--", "true").returncode == 0
    assert mine.read_text().startswith('{"event":"started"')


@pytest.mark.parametrize("flags", [
    ["--bind", "/no such\nfile:/mnt"],  # a refusal that echoes the value
    ["--chdir", "/no\x1b[31msuch"],  # a failure inside the sandbox that echoes it
    ["--tmpfs", "/mnt\r"],  # a usage error
])
def test_a_value_with_control_characters_is_echoed_on_one_line(tmp_path, flags, no_leftovers):
    done = subprocess.run([CLI, *flags, "--", "true"], cwd=tmp_path, capture_output=True, timeout=60)
    assert done.returncode in (2, 125)
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert "\x1b" not in lines[0] and "\r" not in lines[0]
    assert "\\n" in lines[0] or "\\x1b" in lines[0] or "\\r" in lines[0]


ENTRY_POINTS = ["cli", "run", "Popen", "Job", "run_async", "create_process", "AsyncJob"]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("signal_name", ["KILL", "9", "SIGKILL"])
def test_a_stop_signal_no_trap_can_catch_is_said(entry, signal_name, tmp_path, no_leftovers):
    """--stop-signal KILL leaves no trap a chance at any stop: one warning line (a RuntimeWarning in the API);
    the job runs all the same."""
    from test_limits import through

    said = "stop_signal KILL: no trap can run; every stop kills the job's processes at once, without a grace period"
    if entry == "cli":
        result = cli("--stop-signal", signal_name, "--", "sh", "-c", "exit 3")
        assert (result.returncode, result.stderr) == (3, f"sandboxed-run: warning: --{said.replace('_', '-', 1)}\n")
        return
    with pytest.warns(RuntimeWarning) as caught:
        assert through(entry, ["sh", "-c", "exit 3"], {"stop_signal": signal_name}, tmp_path)[0] == 3
    assert [str(w.message) for w in caught if w.category is RuntimeWarning] == [said]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize(("name", "value", "said"), [
    ("tmpfs", "{tmp}/x/link/..", "{tmp}/x/link/..: write the path without '..': the kernel takes '..' after "
                                 "following the links before it"),
    ("bind", "{tmp}/x/link/..:/mnt", "{tmp}/x/link/..: write the path without '..'"),
    ("read_only", "/usr/../etc", "/usr/../etc: write the path without '..'"),
    ("tmpfs", "/proc/self/attr", "/proc/self/attr: /proc/self names the process that looks; the sandbox's PID 1 "
                                 "makes the mounts, so it would land on PID 1's /proc/1, not on the job's processes"),
    ("read_only", "/proc/thread-self", "/proc/thread-self: /proc/thread-self names the process that looks"),
    ("tmpfs", "/proc/net", "/proc/net: /proc/net is a link to /proc/self/net, which names the process that looks"),
    ("bind", "/tmp:/proc/mounts", "/proc/mounts: /proc/mounts is a link to /proc/self/mounts"),
    ("dir", "/proc/self/x", "/proc/self/x: /proc/self names"),
])
def test_a_mount_path_the_kernel_would_take_elsewhere_is_refused(entry, name, value, said, tmp_path):
    """Paths were normalised by their words: --tmpfs /x/link/.. mounted on /x, where the kernel, following link
    first, takes /x/link/.. to be the parent of wherever link leads; and /proc/self (or a link to it) is the
    process that looks, the sandbox's PID 1, which makes the mounts: a tmpfs landed on /proc/1/attr, not on the
    job's. Both are refused, one line naming the option, before anything starts."""
    from test_limits import through

    (tmp_path / "x").mkdir()
    (tmp_path / "y" / "z").mkdir(parents=True)
    (tmp_path / "x" / "link").symlink_to(tmp_path / "y" / "z")
    value, said = value.format(tmp=tmp_path), said.format(tmp=tmp_path)
    flag = tmp_path / "ran"
    if entry == "cli":
        result = cli(f"--{name.replace('_', '-')}", value, "--", "touch", str(flag))
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith(f"sandboxed-run: --{name.replace('_', '-')} {said}"), result.stderr
    else:
        with pytest.raises(ValueError) as raised:
            through(entry, ["touch", str(flag)], {name: [value]}, tmp_path)
        assert str(raised.value).startswith(f"{name} {said}"), raised.value
    assert not flag.exists()

"""Every test runs with its own mark in the environment, and fails if anything it started outlives it, or if a
status event it produced is not as docs/status.schema.json says."""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from support import (  # noqa: E402
    CLI,
    MARK,
    SESSION,
    all_ended,
    check_event,
    host_links,
    host_mounts,
    loop_devices,
    marked_processes,
    take_schema_violations,
    wait_for,
)

# The tests send real signals and expect what a terminal's processes have: default dispositions. A
# pytest started under nohup or in the background of a script would otherwise pass on SIGHUP or SIGINT
# ignored to everything it starts, and the launchers (rightly) keep them ignored for their jobs.
for _sig in (signal.SIGHUP, signal.SIGTERM):
    if signal.getsignal(_sig) == signal.SIG_IGN:
        signal.signal(_sig, signal.SIG_DFL)
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


# Fixtures that need root, and why: a test that takes one is marked root.
ROOT_FIXTURES = {"nobody_dir": "runs as nobody", "user_dir": "runs as other users", "users": "runs as other users",
                 "read_only_tree": "mounts on the host", "shared_mount": "mounts on the host",
                 "named_netns": "makes a named network namespace"}


def pytest_collection_modifyitems(config, items):
    # vm/suite sets SANDBOXED_RUN_VM=1 in its plain boot and SANDBOXED_RUN_VM=systemd in its systemd boot.
    vm = os.environ.get("SANDBOXED_RUN_VM", "")
    in_vm = vm not in ("", "0")
    unit = Path(__file__).parent / "unit"
    root = os.geteuid() == 0
    for item in items:
        if unit in item.path.parents:
            item.add_marker(pytest.mark.unit)
        if "vm" in item.keywords and not in_vm:
            item.add_marker(pytest.mark.skip(reason="runs only inside the throwaway VM (vm/run)"))
        elif "systemd" in item.keywords and vm != "systemd":
            item.add_marker(pytest.mark.skip(reason="needs systemd as PID 1: runs only in vm/run --systemd"))
        for fixture in ROOT_FIXTURES.keys() & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.root(ROOT_FIXTURES[fixture]))
        if not root and (needs := item.get_closest_marker("root")) is not None:
            what = f" ({needs.args[0]})" if needs.args else ""
            item.add_marker(pytest.mark.skip(reason=f"needs root{what}: README's test command runs the suite as root"))


def pytest_terminal_summary(terminalreporter):
    import support

    terminalreporter.write_line(f"{support.events_checked} status events checked against docs/status.schema.json")


@pytest.fixture(scope="session", autouse=True)
def api_events_checked():
    """Every event the API records in this process is checked against docs/status.schema.json where it is
    recorded: a reaper's, a client's own killed, and the hook runner's hook and finished (also those of a call
    whose sandbox never started, which no client records). The command's are checked where a test reads them
    (support.read_status, support.status_events)."""
    from sandbox.client import ReaperClient
    from sandboxed_run_helpers.shared import hooks

    recorded = ReaperClient.emit
    hooks_emit = hooks._emit

    def record_checked(self, name: str, fields: dict) -> None:
        check_event({"event": str(name), **fields}, "the API's on_event")
        recorded(self, name, fields)

    def emit_checked(emit, name: str, fields: dict) -> None:
        def checked(name: str, fields: dict) -> None:
            check_event({"event": str(name), **fields}, "the API's on_event")
            if emit is not None:
                emit(name, fields)

        hooks_emit(checked, name, fields)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ReaperClient, "emit", record_checked)
        patch.setattr(hooks, "_emit", emit_checked)
        yield


@pytest.fixture(autouse=True)
def no_leftovers(request, tmp_path, tmp_path_factory):
    """Mark the test's processes; afterwards kill and report any process, mount or loop device it left, and
    report the status events it produced that the schema refuses (support.check_event)."""
    token = uuid.uuid4().hex
    os.environ[MARK] = token
    take_schema_violations()  # not this test's
    # An ordinary user's test can leave no mount in the host's namespace and no loop device: those that come and
    # go meanwhile are other sessions'.
    root = os.geteuid() == 0
    mounts_before = host_mounts() if root else set()
    loops_before = set(loop_devices()) if root else set()
    links_before = host_links() if root else set()
    started = time.time()
    try:
        yield token
    finally:
        problems = []
        # The API's spawn server belongs to the test that started it: shutting it down stops its sandboxes.
        from sandbox.api import spawner

        try:
            spawner.shut_down(timeout=30)
        except subprocess.TimeoutExpired:
            problems.append("the spawn server did not exit within 30 s of its channel closing")
        me = {os.getpid()}
        # A process that lingers in its exit (not ours to tell any more) only delays the check.
        if not wait_for(lambda: all_ended(token, me), timeout=15) and (left := marked_processes(token, me)):
            details = []
            for pid in left:
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:80]
                    details.append(f"{pid}: {cmdline!r}")
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            problems.append("processes left running: " + "; ".join(details))
        # Other pytest sessions (other checkouts) may run at the same time: their temp dirs are theirs.
        ours = str(tmp_path_factory.getbasetemp())
        others = str(Path(ours).parent)

        def mine(path: str) -> bool:
            return path.startswith(ours) or not path.startswith(others)

        new_mounts = {m for m in host_mounts() - mounts_before if mine(m)} if root else set()
        if new_mounts:
            for target in sorted(new_mounts, reverse=True):
                subprocess.run(["umount", "-l", target], check=False)
            problems.append(f"mounts left on the host: {sorted(new_mounts)}")
        new_loops = {f: dev for f, dev in loop_devices().items() if f not in loops_before and mine(f)} if root else {}
        if new_loops:
            for dev in new_loops.values():
                subprocess.run(["losetup", "-d", dev], check=False)
            problems.append(f"loop devices left attached: {sorted(new_loops)}")
        # The kernel deletes a veth pair with its namespace, some time after the last process: a SIGKILLed
        # sandbox's link may linger a moment. Links made meanwhile by other sessions are theirs only if they go.
        if root and not wait_for(lambda: not host_links() - links_before, timeout=10):
            left = sorted(name for name, _ in host_links() - links_before)
            for name in left:
                subprocess.run(["ip", "link", "del", name], check=False, capture_output=True)
            problems.append(f"host links of ours left (veth ends, named sr-...): {left}")
        if request.node.get_closest_marker("kills_reapers") or request.node.get_closest_marker("vm"):
            import sandbox

            # Removes the entries of reapers that were killed, as any listing does. (The VM's tests kill
            # everything of ours at every step; they are not marked one by one.)
            sandbox.list_running()
        # The unit layer starts no sandbox: another session's dead entries are none of its business.
        stale = stale_registry_entries(started) if not request.node.get_closest_marker("unit") else []
        if stale:
            problems.append(f"dead entries left in the registry of running sandboxes: {stale}")
        del os.environ[MARK]
        violations = take_schema_violations()
        if violations:
            problems.append("events that docs/status.schema.json refuses: " + "; ".join(violations))
        if problems:
            pytest.fail("; ".join(problems), pytrace=False)


# The names our tests' sandboxes get: test_named's t-0123456789, and generated ones (sleep-3fa2c1). Other
# sessions on the machine (a hostile test planting its own sockets, say) have theirs, which are not ours.
OUR_NAMES = re.compile(rf"t-{SESSION}[0-9a-f]{{6}}|.+-[0-9a-f]{{6}}")


def stale_registry_entries(since: float) -> list[str]:
    """Registry entries made since then whose reaper is gone (removed on the way): a test that kills a
    reaper must see its entry removed (by a listing, or a new claim of the name)."""
    from sandboxed_run_helpers.shared import registry

    found = []
    for _owner, directory in registry.all_directories():
        for name, _uid in registry.entries(directory):
            if not OUR_NAMES.fullmatch(name):
                continue
            path = os.path.join(directory, name)
            try:
                made = os.lstat(path).st_ctime
            except OSError:
                continue
            if made >= since - 1 and registry.remove_if_dead(directory, name):
                found.append(path)
    return found


@pytest.fixture(scope="session", autouse=True)
def no_registry_directories_left():
    """The registry directories the session's sandboxes made for users (/tmp/sandboxed-run-UID), removed
    at the end if empty: they belong to the test users, not to the host."""
    from sandboxed_run_helpers.shared import registry

    before = {directory for _owner, directory in registry.all_directories()}
    yield
    for owner, directory in registry.all_directories():
        if owner != 0 and directory not in before and directory.startswith(registry.TMP_PREFIX):
            try:
                os.rmdir(directory)
            except OSError:
                pass  # not empty: a sandbox of another session runs there


def _not_traversable_by_others(path: str) -> list[str]:
    out = []
    for parent in [*reversed(Path(path).parents)]:
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            out.append(str(parent))
    return out


@pytest.fixture
def nobody_dir():
    """A directory uid 65534 may use, and our interpreter made reachable for it (as it is on most hosts:
    here it may live below a root-only home, which gets o+x for the test and its mode back afterwards)."""
    granted = []
    import sandbox

    for path in {os.path.realpath(sys.executable), os.path.realpath(CLI), os.path.realpath(sandbox.__file__)}:
        for directory in _not_traversable_by_others(path):
            if directory not in (d for d, _ in granted):
                mode = os.stat(directory).st_mode
                granted.append((directory, mode))
                os.chmod(directory, stat.S_IMODE(mode) | stat.S_IXOTH)
    directory = Path(tempfile.mkdtemp(prefix="sbx-nobody-", dir="/var/tmp"))
    directory.chmod(0o777)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        for path, mode in reversed(granted):
            os.chmod(path, stat.S_IMODE(mode))

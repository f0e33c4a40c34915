"""The seed's backup to a LUKS volume, run in the sandbox and killed at every awkward moment.

The backup script (BACKUP below) opens a LUKS volume on a loop file, mounts it, copies files into it
slowly, and unmounts and closes everything in an EXIT/INT/TERM trap. Its "deferred" variant also runs
`cryptsetup close --deferred` right after mounting, so the mapping (and with it the autoclear loop
device) goes away by itself when its last opener, the mount, goes away: when the trap unmounts it, or
when the sandbox's mount namespace dies. The "trap-only" variant relies on the trap alone.

Kill points: during `cryptsetup open` (its key derivation), right after mounting, mid-copy, and during
the trap's own cleanup (after the unmount, before the close). Kill methods: Ctrl+C at a terminal,
SIGKILL of the sandboxed-run launcher, SIGKILL of every process of ours at once (launcher and reaper),
and SIGKILL of a python program that called sandbox.run.

After each kill: no device-mapper mapping and no loop device of ours, nothing mounted, no process left,
and wherever a grace period exists the trap ran to its end.

Device-mapper needs the throwaway VM (vm/run; the host kernel has none): every test is marked vm and
is skipped unless SANDBOXED_RUN_VM=1. Run them all with vm/suite.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from support import CLI, PYTHON, Terminal, all_ended, children, stays, wait_for

pytestmark = pytest.mark.vm

# The trap needs about 2 s under TCG; the grace period must never be what cuts it short.
GRACE = 30
# Everything is slow under emulation: waits are generous, they only bound a failure.
SLOW = 60
# Fast LUKS formatting under emulation (argon2 would take 15 s).
FAST_ITERATIONS = 1000
# For the "during cryptsetup open" kill point: a key slot whose key derivation takes a few seconds.
SLOW_ITERATIONS = 200_000

BACKUP = r"""#!/usr/bin/env bash
# The seed's backup: open a LUKS volume on a loop file, mount it, copy into it, undo it all in a trap.
# usage: backup IMAGE KEYFILE NAME SOURCE_DIR MOUNTPOINT PHASES_FILE deferred|trap-only
# Each phase is appended to PHASES_FILE. $BACKUP_HOLD=PHASE makes it wait after PHASE (for tests).
set -eu
image=$1 keyfile=$2 name=$3 source=$4 mnt=$5 phases=$6 variant=$7

phase() { echo "$*" >> "$phases"; }
hold() {
    if [ "${BACKUP_HOLD:-}" = "$1" ]; then
        while :; do sleep 0.2; done  # short sleeps: bash runs its traps only between commands
    fi
}

cleanup() {
    status=$?
    set +e
    trap '' INT TERM  # a second Ctrl+C or the stop signal must not cut the cleanup short (children inherit it)
    trap - EXIT
    phase trap-start
    sleep 0.5  # stands for the slow parts of a real cleanup (flushing, logging)
    if mountpoint -q "$mnt"; then
        umount "$mnt"
    fi
    phase trap-unmounted
    sleep 1
    # With deferred removal the mapping went with the unmount. Close whatever is still there, also
    # after a `cryptsetup open` that failed: interrupted, it still activates the mapping, then fails.
    if dmsetup info "$name" >/dev/null 2>&1; then
        cryptsetup close "$name"
    fi
    phase trap-done
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

phase opening
cryptsetup open --key-file "$keyfile" "$image" "$name"
phase opened
mkdir -p "$mnt"
mount "/dev/mapper/$name" "$mnt"
if [ "$variant" = deferred ]; then
    # The mapping disappears by itself once nothing holds it open: even if nobody runs the trap.
    # (Between the mount and this line a SIGKILL of everything would still leave it: no way around
    # that, a mapping can only be marked for deferred removal while something holds it open.)
    cryptsetup close --deferred "$name"
fi
phase mounted
hold mounted

if command -v rsync >/dev/null; then copy=(rsync -a); else copy=(cp -a); fi
phase copying
for file in "$source"/*; do
    "${copy[@]}" "$file" "$mnt/"
    phase "copied ${file##*/}"
    sleep 0.1  # a slow medium: leaves a mid-copy window
done
phase copy-done
"""

POINTS = ["opening", "mounted", "mid-copy", "trap"]
VARIANTS = ["deferred", "trap-only"]


@dataclass
class Backup:
    tmp: Path
    name: str
    variant: str

    @property
    def image(self) -> Path:
        return self.tmp / "backup.img"

    @property
    def key(self) -> Path:
        return self.tmp / "backup.key"

    @property
    def source(self) -> Path:
        return self.tmp / "source"

    @property
    def mnt(self) -> Path:
        return self.tmp / "mnt"

    @property
    def phases_file(self) -> Path:
        return self.tmp / "phases"

    def argv(self) -> list[str]:
        script = self.tmp / "backup"
        return ["bash", str(script), str(self.image), str(self.key), self.name, str(self.source), str(self.mnt),
                str(self.phases_file), self.variant]

    def phases(self) -> list[str]:
        try:
            return self.phases_file.read_text().splitlines()
        except FileNotFoundError:
            return []

    def copied(self) -> int:
        return sum(1 for line in self.phases() if line.startswith("copied "))

    def mapped(self) -> bool:
        return subprocess.run(["dmsetup", "info", self.name], capture_output=True).returncode == 0

    def deferred_removal(self) -> bool:
        info = subprocess.run(["dmsetup", "info", self.name], capture_output=True, text=True).stdout
        return "DEFERRED REMOVE" in info

    def listed(self) -> bool:
        out = subprocess.run(["dmsetup", "ls"], capture_output=True, text=True).stdout
        return any(line.split()[0] == self.name for line in out.splitlines() if line.split())

    def loops(self) -> str:
        return subprocess.run(["losetup", "-j", str(self.image)], capture_output=True, text=True,
                              check=True).stdout.strip()

    def mounted_anywhere(self) -> list[str]:
        """Processes (any mount namespace) that still see the volume mounted."""
        found = []
        target = f" {self.mnt} "
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/mountinfo") as f:
                    if target in f.read():
                        found.append(entry)
            except OSError:
                continue
        return found


def _run(*argv: str | Path) -> None:
    subprocess.run([str(a) for a in argv], check=True, capture_output=True)


def make_backup(tmp_path: Path, token: str, variant: str, point: str) -> Backup:
    """The LUKS image with an ext4 inside, its key file, the files to back up, the script."""
    backup = Backup(tmp_path, f"sbxvm-{token[:16]}", variant)
    backup.key.write_bytes(os.urandom(64))
    backup.key.chmod(0o600)
    _run("truncate", "-s", "48M", backup.image)
    _run("cryptsetup", "luksFormat", "-q", "--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations",
         str(FAST_ITERATIONS), "--key-file", backup.key, backup.image)
    _run("cryptsetup", "open", "--key-file", backup.key, backup.image, backup.name)
    try:
        _run("mkfs.ext4", "-q", f"/dev/mapper/{backup.name}")
    finally:
        _run("cryptsetup", "close", backup.name)
    if point == "opening":
        _run("cryptsetup", "luksConvertKey", "-q", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations",
             str(SLOW_ITERATIONS), "--key-file", backup.key, backup.image)
    assert wait_for(lambda: not backup.loops(), timeout=SLOW), "setup left its loop device"
    backup.source.mkdir()
    # Few files when the copy must end (the trap then runs as the normal EXIT cleanup), else plenty.
    for i in range(3 if point == "trap" else 200):
        (backup.source / f"file{i:03d}").write_bytes(os.urandom(16 * 1024))
    script = tmp_path / "backup"
    script.write_text(BACKUP)
    script.chmod(0o755)
    return backup


def reach(backup: Backup, point: str, proc_alive) -> list[str]:
    """Wait until the backup is at the kill point; return its phases at that moment."""
    def there() -> bool:
        phases = backup.phases()
        if point == "opening":
            return "opening" in phases
        if point == "mounted":
            return "mounted" in phases
        if point == "mid-copy":
            return backup.copied() >= 3
        return "trap-unmounted" in phases

    reached = wait_for(lambda: there() or not proc_alive(), timeout=SLOW)
    assert reached and there(), f"never reached {point}: phases {backup.phases()}"
    if point == "opening":
        time.sleep(0.3)  # well inside the key derivation (seconds), before any mapping exists
    phases = backup.phases()
    # The kill really lands at the point: nothing of the next phase has happened yet.
    next_phase = {"opening": "opened", "mounted": "copying", "mid-copy": "copy-done", "trap": "trap-done"}[point]
    assert next_phase not in phases, f"too late for {point}: phases {phases}"
    if point == "opening":
        assert not backup.mapped(), "cryptsetup open was already done"
    if point in ("mounted", "mid-copy"):
        # The path under test: mounted, and (deferred variant) only its mount keeps the mapping.
        assert backup.mapped(), "no mapping while mounted"
        assert backup.deferred_removal() == (backup.variant == "deferred"), "deferred removal not as intended"
    return phases


def check_nothing_left(backup: Backup, token: str, *, mapping_expected: bool = False) -> None:
    assert wait_for(lambda: all_ended(token, {os.getpid()}), timeout=SLOW), "processes left"
    assert wait_for(lambda: not backup.mounted_anywhere(), timeout=SLOW), "the volume is still mounted"
    if mapping_expected:
        return
    assert wait_for(lambda: not backup.mapped(), timeout=SLOW), "the mapping is left (dmsetup info)"
    assert not backup.listed(), "the mapping is left (dmsetup ls)"
    assert wait_for(lambda: not backup.loops(), timeout=SLOW), f"a loop device is left: {backup.loops()}"


def expect_trap_done(backup: Backup) -> None:
    phases = backup.phases()
    assert "trap-done" in phases, f"the trap did not finish: {phases}"
    assert phases.count("trap-start") == 1, f"the trap ran more than once: {phases}"


def _env(point: str) -> dict[str, str]:
    env = dict(os.environ)
    if point == "mounted":
        env["BACKUP_HOLD"] = "mounted"
    return env


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("point", POINTS)
def test_ctrl_c(tmp_path, no_leftovers, point, variant):
    """Ctrl+C reaches the job once; the launcher returns only after the trap closed everything."""
    backup = make_backup(tmp_path, no_leftovers, variant, point)
    term = Terminal([CLI, "--grace", str(GRACE), *backup.argv()], tmp_path, _env(point))
    try:
        reach(backup, point, lambda: term.poll() is None)
        term.ctrl_c()
        status = term.wait(timeout=GRACE + SLOW)
        phases_at_exit = backup.phases()
    finally:
        term.close()
    assert status is not None, f"the launcher did not return; phases {backup.phases()}"
    assert "trap-done" in phases_at_exit, f"the launcher returned before the trap finished: {phases_at_exit}"
    expect_trap_done(backup)
    check_nothing_left(backup, no_leftovers)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("point", POINTS)
def test_launcher_sigkilled(tmp_path, no_leftovers, point, variant):
    """The reaper gives the job SIGTERM and the grace period: the trap closes everything."""
    backup = make_backup(tmp_path, no_leftovers, variant, point)
    launcher = subprocess.Popen([CLI, "--grace", str(GRACE), *backup.argv()], cwd=tmp_path, env=_env(point),
                                start_new_session=True)
    try:
        reach(backup, point, lambda: launcher.poll() is None)
    finally:
        launcher.kill()
        launcher.wait()
    check_nothing_left(backup, no_leftovers)
    expect_trap_done(backup)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("point", POINTS)
def test_api_caller_sigkilled(tmp_path, no_leftovers, point, variant):
    """A python program that called sandbox.run is SIGKILLed: its sandbox still gets the grace period."""
    backup = make_backup(tmp_path, no_leftovers, variant, point)
    program = f"import sandbox; sandbox.run({backup.argv()!r}, grace={GRACE})"
    caller = subprocess.Popen([PYTHON, "-c", program], cwd=tmp_path, env=_env(point), start_new_session=True)
    try:
        reach(backup, point, lambda: caller.poll() is None)
    finally:
        caller.kill()
        caller.wait()
    check_nothing_left(backup, no_leftovers)
    expect_trap_done(backup)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("point", POINTS)
def test_everything_sigkilled(tmp_path, no_leftovers, point, variant):
    """Launcher and reaper SIGKILLed at once: no trap can run, the kernel ends the job and its mount
    namespace. Only deferred removal then gets rid of the mapping and the loop device.

    Limit of the trap-only variant: once the mapping exists, nothing but its trap would close it; with
    everything SIGKILLed the mount goes with the namespace but the mapping (and the loop device under
    it) stays until someone runs `cryptsetup close`. The test asserts that it is left, then closes it.
    Killed during `cryptsetup open` (key derivation, before any mapping exists) both variants leave
    nothing.
    """
    backup = make_backup(tmp_path, no_leftovers, variant, point)
    launcher = subprocess.Popen([CLI, "--grace", str(GRACE), *backup.argv()], cwd=tmp_path, env=_env(point),
                                start_new_session=True)
    try:
        reach(backup, point, lambda: launcher.poll() is None)
        reaper = children(launcher.pid)
        assert len(reaper) == 1, f"the launcher's children: {reaper}"
        os.kill(reaper[0], signal.SIGKILL)
        os.kill(launcher.pid, signal.SIGKILL)
    finally:
        launcher.kill()
        launcher.wait()
    left_behind = variant == "trap-only" and point != "opening"
    check_nothing_left(backup, no_leftovers, mapping_expected=left_behind)
    assert "trap-done" not in backup.phases(), "a trap ran although everything was SIGKILLed"
    if left_behind:
        try:
            # As long as the deferred variant's wait: it is really left, not slow to go.
            assert stays(lambda: backup.mapped() and backup.listed(), 1.0, interval=0.25), \
                "trap-only: expected the mapping to be left"
            assert backup.loops(), "trap-only: expected the loop device under the mapping to be left"
        finally:
            subprocess.run(["cryptsetup", "close", backup.name], capture_output=True)
        assert wait_for(lambda: not backup.mapped() and not backup.loops(), timeout=SLOW)
    else:
        check_nothing_left(backup, no_leftovers)

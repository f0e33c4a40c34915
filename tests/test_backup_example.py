"""examples/backup.sh for real (the plain ext4 path here; LUKS where device-mapper exists): it backs
up, and leaves no mount and no loop device behind when interrupted mid-copy or SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from support import CLI, Terminal, host_mounts, loop_devices, signal_of, stays, wait_for

EXAMPLE = str(Path(__file__).parent.parent / "examples" / "backup.sh")
pytestmark = [pytest.mark.skipif(subprocess.run(["sh", "-c", "command -v rsync"], capture_output=True).returncode,
                                 reason="rsync is not installed"), pytest.mark.root("a loop device")]


def _source(tmp_path: Path, files: int = 3, size: int = 1000) -> Path:
    source = tmp_path / "source"
    (source / "sub").mkdir(parents=True)
    for i in range(files):
        (source / "sub" / f"file{i}").write_bytes(os.urandom(size))
    (source / "note").write_text("hello\n")
    return source


def test_the_example_backs_up_for_real(tmp_path, no_leftovers):
    source = _source(tmp_path)
    image = tmp_path / "backup.img"
    result = subprocess.run([CLI, "--tmpfs", "/mnt", "--", EXAMPLE, str(source), str(image)],
                            capture_output=True, text=True, env={**os.environ, "BACKUP_KIND": "plain"})
    assert result.returncode == 0, result.stderr
    assert "backup: copied 4 files" in result.stdout
    check = f"mkdir /mnt/c && mount -o loop,ro {image} /mnt/c && diff -r {source} /mnt/c/latest"
    verified = subprocess.run([CLI, "--tmpfs", "/mnt", "sh", "-c", check], capture_output=True, text=True)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert str(image) not in loop_devices()


@pytest.mark.parametrize("how", ["ctrl-c", "launcher-sigkill"])
def test_the_example_leaves_nothing_when_interrupted_mid_copy(tmp_path, how, no_leftovers):
    source = _source(tmp_path, files=20, size=100_000)
    image = tmp_path / "backup.img"
    env = {**os.environ, "BACKUP_KIND": "plain", "BACKUP_BWLIMIT": "200"}
    argv = [CLI, "--grace", "5", "--tmpfs", "/mnt", "--", EXAMPLE, str(source), str(image)]
    if how == "ctrl-c":
        term = Terminal(argv, tmp_path, env)
        try:
            assert term.expect(b"backup: copying"), term.output
            assert stays(lambda: str(image) in loop_devices(), 1.0)  # a second into the copy
            term.ctrl_c()
            status = term.wait()
        finally:
            term.close()
        assert b"backup: unmounted /mnt/backup-target" in term.output, term.output
        assert b"copied" not in term.output, "the copy was not interrupted"
        assert status is not None and (signal_of(status) == signal.SIGINT or os.WEXITSTATUS(status) == 130)
    else:
        launcher = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, start_new_session=True)
        try:
            assert wait_for(lambda: str(image) in loop_devices())
            assert stays(lambda: launcher.poll() is None and str(image) in loop_devices(), 1.0)  # into the copy
        finally:
            launcher.kill()
            launcher.wait()
            launcher.stdout.close()
    assert wait_for(lambda: str(image) not in loop_devices()), "the loop device outlived the backup"
    # (Only ours: other test runs on this machine may mount things meanwhile.)
    assert not [m for m in host_mounts() if m.startswith((str(tmp_path), "/mnt/backup-target"))]

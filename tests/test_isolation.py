"""What the job sees: itself as PID 2 under our reaper, a fresh /proc, private mounts that never reach
the host, binds and read-only binds, and the propagation it asked for."""

from __future__ import annotations

import subprocess

import pytest

import sandbox
from support import CLI, host_mounts


def test_the_job_is_pid_2_and_proc_is_fresh():
    out = sandbox.run(["sh", "-c", "echo $$; ls /proc | grep -E '^[0-9]+$' | sort -n | head -1; "
                       "cat /proc/1/comm"], capture_output=True, text=True).stdout.split()
    assert out == ["2", "1", "sandbox-reaper"]


def test_tmpfs_and_mounts_made_by_the_job_stay_inside(tmp_path):
    before = host_mounts()
    script = f"mount -t tmpfs made-inside {tmp_path} && touch {tmp_path}/inside && ls /mnt"
    result = subprocess.run([CLI, "--tmpfs", "/mnt", "sh", "-c", f"touch /mnt/x && {script}"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "x\n"
    assert not (tmp_path / "inside").exists()
    assert not list((tmp_path.parent).glob("x"))
    assert host_mounts() == before


def test_bind_and_ro_bind(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "file").write_text("data")
    dst = tmp_path / "dst"
    dst.mkdir()
    result = sandbox.run(["sh", "-c", f"cat {dst}/file && touch {dst}/new"], bind=[f"{src}:{dst}"],
                         capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout == "data"
    assert (src / "new").exists()
    result = sandbox.run(["sh", "-c", f"touch {dst}/again"], ro_bind=[(str(src), str(dst))],
                         capture_output=True, text=True)
    assert result.returncode != 0 and "Read-only" in result.stderr
    assert not (src / "again").exists()


@pytest.fixture
def shared_mount(tmp_path):
    """A shared mount point on the host, where propagation would carry a mount made inside back out."""
    point = tmp_path / "shared"
    point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "shared-test", str(point)], check=True)
    subprocess.run(["mount", "--make-shared", str(point)], check=True)
    (point / "sub").mkdir()
    try:
        yield point
    finally:
        subprocess.run(["umount", "-R", str(point)], check=True)


@pytest.mark.parametrize("propagation", ["slave", "private"])
def test_mounts_inside_never_leak_through_a_shared_host_mount(shared_mount, propagation):
    result = sandbox.run(["sh", "-c", f"mount -t tmpfs leak {shared_mount}/sub && echo ok"],
                         propagation=propagation, capture_output=True, text=True)
    assert result.stdout == "ok\n", result.stderr
    assert f"{shared_mount}/sub" not in host_mounts()


@pytest.mark.parametrize(("propagation", "sees_it"), [("slave", True), ("private", False)])
def test_slave_sees_new_host_mounts_and_private_does_not(shared_mount, tmp_path, propagation, sees_it):
    script = f"while [ ! -e {tmp_path}/go ]; do sleep 0.02; done; grep -c ' {shared_mount}/sub ' /proc/self/mountinfo"
    with sandbox.Popen(["sh", "-c", script], propagation=propagation, stdout=sandbox.PIPE, text=True) as p:
        subprocess.run(["mount", "-t", "tmpfs", "from-host", f"{shared_mount}/sub"], check=True)
        (tmp_path / "go").touch()
        out, _ = p.communicate(timeout=30)
    assert out.strip() == ("1" if sees_it else "0")


@pytest.mark.root("mounts on the host")
def test_a_mount_made_on_the_host_just_before_a_job_is_seen_by_it(tmp_path):
    """The spawn server keeps a reaper ready with a copy of the mount table: a change must retire it."""
    sandbox.run(["true"])  # the server now holds a ready reaper, forked before the mount below
    point = tmp_path / "fresh"
    point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "fresh-host-mount", str(point)], check=True)
    try:
        result = sandbox.run(["grep", "-c", f" {point} ", "/proc/self/mountinfo"], capture_output=True, text=True)
    finally:
        subprocess.run(["umount", str(point)], check=True)
    assert result.stdout == "1\n"

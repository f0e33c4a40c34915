"""sandbox-mount-image and sandbox-open-luks: the device they make is gone however the job ends,
and they refuse to run where it would not be (outside a sandbox, or without device-mapper)."""

from __future__ import annotations

import os
import subprocess

import pytest

from support import CLI, MOUNT_IMAGE, OPEN_LUKS, Ending, loop_devices, make_image

ENDINGS = ["exit", "ctrl-c", "timeout", "launcher-sigkill", "all-sigkill", "api-caller-sigkill"]


@pytest.mark.root("a loop device")
@pytest.mark.kills_reapers
@pytest.mark.parametrize("how", ENDINGS)
def test_the_loop_device_of_a_mounted_image_is_gone_after_the_job_ends(tmp_path, how, no_leftovers):
    ending = Ending(tmp_path, how)
    assert ending.flag.exists(), "the helper did not mount the image"
    if how not in ("exit", "timeout"):
        assert ending.mounted_seen, "the image was not mounted through a loop device while the job ran"
    assert ending.loop_gone(), f"the loop device outlived the sandbox ({how})"


@pytest.mark.root("a loop device")
def test_the_image_is_mounted_inside_and_its_loop_device_has_autoclear(tmp_path):
    image = make_image(tmp_path)
    script = (f'mkdir /mnt/t && {MOUNT_IMAGE} --ro {image} /mnt/t && findmnt -no OPTIONS /mnt/t && '
              f'cat /sys/block/$(basename $(findmnt -no SOURCE /mnt/t))/loop/autoclear')
    result = subprocess.run([CLI, "--tmpfs", "/mnt", "sh", "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    options, autoclear = result.stdout.split()
    assert options.split(",")[0] == "ro" and autoclear == "1"
    assert str(image) not in loop_devices()


@pytest.mark.parametrize("helper", [MOUNT_IMAGE, OPEN_LUKS])
def test_helpers_refuse_to_run_outside_a_sandbox(tmp_path, helper):
    image = make_image(tmp_path)
    args = [helper, str(image), "name", str(tmp_path)] if helper == OPEN_LUKS else [helper, str(image), str(tmp_path)]
    result = subprocess.run(args, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "refusing to run: not inside a sandbox" in result.stderr
    # Marks naming our own mount namespace do not fool them either: PID 1 is not the sandbox's reaper.
    ns = os.stat("/proc/self/ns/mnt").st_ino
    env = {**os.environ, "SANDBOXED_RUN": "1", "SANDBOXED_RUN_MNT_NS": str(ns)}
    result = subprocess.run(args, capture_output=True, text=True, env=env)
    assert result.returncode == 1 and "refusing to run" in result.stderr
    assert str(image) not in loop_devices()


def test_helpers_refuse_a_mount_namespace_left_by_unshare(tmp_path):
    image = make_image(tmp_path)
    result = subprocess.run([CLI, "--tmpfs", "/mnt", "unshare", "-m", MOUNT_IMAGE, str(image), "/mnt"],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "not inside the sandbox's mount namespace" in result.stderr


def _has_device_mapper() -> bool:
    from sandboxed_run_helpers.inside.blockdev import device_mapper_available

    return device_mapper_available()


@pytest.mark.skipif(_has_device_mapper(), reason="this kernel has device-mapper (the VM tests the LUKS path)")
def test_open_luks_fails_with_one_clear_line_without_device_mapper(tmp_path):
    image = make_image(tmp_path)
    result = subprocess.run([CLI, "--tmpfs", "/mnt", OPEN_LUKS, str(image), "sbx-test", "/mnt"],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("sandbox-open-luks: this kernel has no device-mapper")

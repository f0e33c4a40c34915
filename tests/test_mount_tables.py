"""Mount tables as every reader of mountinfo sees them (helpers/shared/mountinfo.py), for real mounts whose
mount point and source hold a space (which the kernel writes as an octal escape) and a non-ASCII letter
(written as its UTF-8 bytes): --list's and list_running()'s mounts, the block-device helpers' lookup of
what they mounted, the cgroup layer's look at what is mounted where."""

from __future__ import annotations

import json
import subprocess

import pytest

import sandbox
from sandboxed_run_helpers.inside import blockdev
from sandboxed_run_helpers.shared import cgroups
from support import CLI, MOUNT_IMAGE, PYTHON, launched, loop_devices, make_image, unique_name, wait_for

PLACE = "café x"
SOURCE = "made café\\ x"  # a backslash too: written \134


@pytest.mark.root("mounts on the host")
def test_a_host_mount_is_found_by_the_cgroup_and_block_device_lookups(tmp_path):
    target = tmp_path / PLACE
    target.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", SOURCE, str(target)], check=True)
    try:
        assert cgroups.mounted(str(target)) == "tmpfs"
        assert blockdev.mounted_source(str(target)) == SOURCE
        assert blockdev.mounted_source(str(target / ".")) == SOURCE  # looked up by its real path
    finally:
        subprocess.run(["umount", str(target)], check=True)
    assert cgroups.mounted(str(target)) is None


@pytest.mark.parametrize("reader", ["--list --json", "--list", "list_running"])
def test_the_list_shows_mounts_at_a_non_ascii_path_with_a_space(reader, no_leftovers):
    name = unique_name()
    inner = f"/mnt/{PLACE}/in ner"
    script = 'mkdir "$1" && mount -t tmpfs "$2" "$1" && exec sleep 1000'
    with launched([CLI, "--name", name, "--tmpfs", "/mnt", "--tmpfs", f"/mnt/{PLACE}", "--",
                   "sh", "-c", script, "sh", inner, SOURCE]):
        def shown() -> dict[str, tuple[str, str, bool]]:
            if reader == "list_running":
                found = [s for s in sandbox.list_running() if s.name == name]
                return {m.target: (m.fstype, m.source, m.own) for m in found[0].mounts} if found else {}
            result = subprocess.run([CLI, *reader.split()], capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, result.stderr
            if reader == "--list":
                # One row per mount of the sandbox's own: target, type, source, options.
                rows = [line.strip() for line in result.stdout.splitlines() if line.startswith("    /mnt/")]
                return {row.split("  ")[0]: tuple(row.split("  ")[1:3]) + (True,) for row in rows}
            found = [s for s in json.loads(result.stdout) if s["name"] == name]
            return {m["target"]: (m["fstype"], m["source"], m["own"]) for m in found[0]["mounts"]} if found else {}

        mounts: dict = {}

        def listed() -> bool:
            mounts.update(shown())
            return inner in mounts

        assert wait_for(listed, timeout=30), mounts
        assert mounts[f"/mnt/{PLACE}"] == ("tmpfs", "tmpfs", True)
        assert mounts[inner] == ("tmpfs", SOURCE, True)
        assert subprocess.run([CLI, "--stop", name], capture_output=True, timeout=60).returncode == 0


LOOKUP = ("import sys; from sandboxed_run_helpers.inside.blockdev import mounted_source; "
          "print(mounted_source(sys.argv[1]))")


@pytest.mark.root("a loop device")
def test_the_image_helper_finds_the_loop_device_it_mounted_at_a_non_ascii_path_with_a_space(tmp_path):
    image = make_image(tmp_path)
    script = (f'mkdir "$1" && {MOUNT_IMAGE} {image} "$1" && findmnt -no SOURCE "$1" && '
              f'{PYTHON} -c "{LOOKUP}" "$1"')
    result = subprocess.run([CLI, "--tmpfs", "/mnt", "sh", "-c", script, "sh", f"/mnt/{PLACE}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    device, found = result.stdout.split()
    assert device.startswith("/dev/loop") and found == device
    assert str(image) not in loop_devices()

"""Shared paths and cache layout for vm/run and vm/setup (stdlib only).

Both scripts import this file from their own directory, so the layout of the
cache is defined in exactly one place.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

# Bump when the layout or the initramfs /init changes, so that an old cache is
# rebuilt by the next `vm/run` instead of booting a stale /init.
CACHE_FORMAT = 7

CACHE_ENV = "SANDBOXED_RUN_VM_CACHE"
STAMP_NAME = "setup.json"

# Host packages needed to build and boot the VM, plus the tools that the
# typical guest commands (cryptsetup, dmsetup, losetup) run from the host's
# root file system, which the guest sees read-only.
APT_PACKAGES = [
    "qemu-system-x86",
    "qemu-system-data",
    "seabios",
    "busybox-static",
    "kmod",
    "cryptsetup-bin",
    "dmsetup",
    "mount",
    "util-linux",
]

# Modules the initramfs loads itself, before the host root is mounted, in
# the order in which they are loaded. Their dependencies are added by
# vm/setup from modules.dep, so only the top-level names are listed.
INITRAMFS_MODULES = [
    "virtio_pci",
    "virtio_console",
    "9pnet_virtio",
    "9p",
    "overlay",
    "loop",
    "dm-mod",
    "dm-crypt",
]


def cache_dir() -> Path:
    """Where the kernel, modules and initramfs live.

    root gets a system-wide cache so that CI and developers share one copy;
    other users fall back to the XDG cache dir they can write.
    """
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override)
    if os.geteuid() == 0:
        return Path("/var/cache/sandboxed-run-vm")
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache"
    )
    return Path(xdg) / "sandboxed-run-vm"


def read_stamp(cache: Path) -> dict | None:
    """The description of a complete cache, or None if setup must run."""
    try:
        stamp = json.loads((cache / STAMP_NAME).read_text())
    except (OSError, ValueError):
        return None
    if stamp.get("format") != CACHE_FORMAT:
        return None
    for key in ("vmlinux", "initramfs", "modules"):
        if not Path(stamp.get(key, "")).exists():
            return None
    return stamp

"""Block devices that the kernel removes for us when the sandbox ends: commands for scripts inside it.

sandbox-mount-image IMAGE DIR [--ro] [--type FSTYPE] [--options OPTS]
    Loop-mounts an image file. The loop device is attached with the autoclear flag (mount -o loop
    does that), so it detaches by itself when its mount goes, which happens at the latest when the
    sandbox's mount namespace dies: after a normal exit, a Ctrl+C, a SIGKILL of everything.

sandbox-open-luks IMAGE NAME DIR [--key-file FILE] [--ro] [--type FSTYPE] [--options OPTS]
    Opens a LUKS image as /dev/mapper/NAME (cryptsetup attaches its loop device with autoclear too),
    mounts it on DIR, then schedules the mapping's removal (cryptsetup close --deferred): the kernel
    removes it when its last opener, the mount, goes. The passphrase comes from the terminal (or
    standard input), or from --key-file.

Both refuse to run outside a sandbox of ours (see inside.py): on the host the mount and the device
would simply stay. sandbox-open-luks fails with one line where the kernel has no device-mapper.
Unmounting (umount DIR) in a trap is still the polite way to end; it also releases the mapping.
Exit status: 0 done, 1 failed (one line on stderr says why), 2 usage.
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import subprocess
import sys

from ..shared import mountinfo
from ..shared.marks import NotInSandbox, check

SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin",
                               "/usr/local/bin", "/usr/bin", "/bin"])


class Failure(Exception):
    """One line for stderr; exit status 1."""


def _tool(name: str) -> str:
    path = shutil.which(name, path=SEARCH_PATH)
    if path is None:
        raise Failure(f"{name} is not installed (needed here)")
    return path


def _run(argv: list[str], what: str) -> None:
    try:
        result = subprocess.run(argv)
    except OSError as exc:
        raise Failure(f"cannot run {argv[0]}: {exc.strerror}") from None
    if result.returncode != 0:
        raise Failure(f"{what} failed ({os.path.basename(argv[0])} exited with status {result.returncode})")


def _check_image(image: str) -> None:
    try:
        st = os.stat(image)
    except OSError as exc:
        raise Failure(f"{image}: {exc.strerror}") from None
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        raise Failure(f"{image}: not an image file or a block device")


def _check_dir(directory: str) -> None:
    if not os.path.isdir(directory):
        raise Failure(f"{directory}: not a directory (create the mount point first)")


def _mount_options(base: list[str], ro: bool, extra: str | None) -> str:
    options = list(base) + (["ro"] if ro else [])
    if extra:
        options += [o for o in extra.split(",") if o]
    return ",".join(options)


def mounted_source(directory: str) -> str | None:
    """The source of the topmost mount on directory, as /proc/self/mountinfo says."""
    found = mountinfo.topmost(mountinfo.read(), os.path.realpath(directory))
    return found.source if found is not None else None


def device_mapper_available() -> bool:
    """Whether this kernel has device-mapper: its control node exists, or it is listed in /proc/misc."""
    if os.path.exists("/dev/mapper/control"):
        return True
    try:
        with open("/proc/misc") as f:
            return any(line.split()[1:2] == ["device-mapper"] for line in f)
    except OSError:
        return False


def mount_image(image: str, directory: str, ro: bool = False, fstype: str | None = None,
                options: str | None = None) -> str:
    """Loop-mount image on directory with an autoclear loop device; returns the device."""
    _check_image(image)
    _check_dir(directory)
    argv = [_tool("mount"), "-o", _mount_options(["loop"], ro, options)]
    if fstype:
        argv += ["-t", fstype]
    _run(argv + ["--", image, directory], f"mounting {image} on {directory}")
    device = mounted_source(directory) or ""
    name = os.path.basename(device)
    if name.startswith("loop"):
        try:
            with open(f"/sys/block/{name}/loop/autoclear") as f:
                autoclear = f.read().strip() == "1"
        except OSError:
            autoclear = True  # cannot tell; mount -o loop sets it
        if not autoclear:
            subprocess.run([_tool("umount"), "--", directory])
            raise Failure(f"{device} was attached without autoclear, so it would outlive the sandbox; unmounted")
    return device


def open_luks(image: str, name: str, directory: str, key_file: str | None = None, ro: bool = False,
              fstype: str | None = None, options: str | None = None) -> str:
    """cryptsetup open, mount, cryptsetup close --deferred; returns /dev/mapper/NAME."""
    if not name or "/" in name or name.startswith("."):
        raise Failure(f"{name!r} is not a usable mapping name")
    if not device_mapper_available():
        raise Failure("this kernel has no device-mapper (no /dev/mapper/control, none in /proc/misc): "
                      "LUKS volumes cannot be opened here; use a plain image with sandbox-mount-image")
    _check_image(image)
    _check_dir(directory)
    cryptsetup = _tool("cryptsetup")
    mount = _tool("mount")
    device = f"/dev/mapper/{name}"
    argv = [cryptsetup, "open", "--type", "luks"]
    if key_file is not None:
        argv += ["--key-file", key_file]
    if ro:
        argv.append("--readonly")
    _run(argv + ["--", image, name], f"opening {image} as {device}")
    try:
        mount_argv = [mount]
        opts = _mount_options([], ro, options)
        if opts:
            mount_argv += ["-o", opts]
        if fstype:
            mount_argv += ["-t", fstype]
        _run(mount_argv + ["--", device, directory], f"mounting {device} on {directory}")
    except Failure:
        subprocess.run([cryptsetup, "close", name])
        raise
    try:
        # From here on the kernel removes the mapping when the mount, its last opener, goes.
        _run([cryptsetup, "close", "--deferred", name], f"scheduling the removal of {device}")
    except Failure:
        subprocess.run([_tool("umount"), "--", directory])
        subprocess.run([cryptsetup, "close", name])
        raise
    return device


def _main(prog: str, parser: argparse.ArgumentParser, action) -> None:
    args = parser.parse_args()
    try:
        check()
        action(args)
    except NotInSandbox as exc:
        print(f"{prog}: refusing to run: {exc}", file=sys.stderr)
        sys.exit(1)
    except Failure as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        sys.exit(1)
    sys.exit(0)


def _parser(prog: str, description: str, *positionals: tuple[str, str | None]) -> argparse.ArgumentParser:
    """The command's arguments: its positionals (name, help), then the mount options both commands take."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    for name, text in positionals:
        parser.add_argument(name.lower(), metavar=name, help=text)
    parser.add_argument("--ro", action="store_true", help="mount read-only")
    parser.add_argument("--type", "-t", dest="fstype", metavar="FSTYPE", help="file system type (default: probed)")
    parser.add_argument("--options", "-o", metavar="OPTS", help="more mount options, comma-separated")
    return parser


def mount_image_main() -> None:
    prog = "sandbox-mount-image"
    parser = _parser(prog, "Loop-mount an image file inside a sandboxed-run sandbox; the loop device detaches "
                     "itself when the sandbox ends, however it ends.", ("IMAGE", None), ("DIR", None))
    _main(prog, parser, lambda a: mount_image(a.image, a.dir, a.ro, a.fstype, a.options))


def open_luks_main() -> None:
    prog = "sandbox-open-luks"
    parser = _parser(prog, "Open a LUKS image and mount it inside a sandboxed-run sandbox, with the mapping's "
                     "removal scheduled (cryptsetup close --deferred): it vanishes when the sandbox ends.",
                     ("IMAGE", None), ("NAME", "the mapping's name: /dev/mapper/NAME"), ("DIR", None))
    parser.add_argument("--key-file", metavar="FILE", help="read the key from FILE instead of the terminal")
    _main(prog, parser, lambda a: open_luks(a.image, a.name, a.dir, a.key_file, a.ro, a.fstype, a.options))

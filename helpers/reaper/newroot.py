"""--root DIR: the job's / is a directory of the host's, switched to with pivot_root.

The reaper does it in its own mount namespace, which every process of the sandbox shares (--enter joins it
and finds the new root as the namespace's root): DIR is bound on itself (pivot_root wants a mount), every
set-up step is made with its target below DIR as the host sees it (the sources are the host's paths), the
fresh /proc and the minimal /dev that mountspec.steps_of adds for a root too; then pivot_root(".", ".")
stacks the old root on the new one and umount2(".", MNT_DETACH) detaches it: nothing of the host's is left
in the mount table, nor reachable by any path.

From then on the reaper reads no file of the host's: the modules the rest of its life may import are
imported before the switch (preload), and what it keeps of the host (its /proc, the launcher's, the registry's
directory, the cgroup's) it holds as descriptors it opened earlier. The hooks run outside, in the launcher,
the spawn server or the hook monitor, none of which is in here.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

from ..shared import linux
from ..shared.errors import SandboxError, mount_error
from ..shared.mountspec import Step, in_root
from ..shared.options import SandboxSpec


def switch(spec: SandboxSpec, make: Callable[[tuple[Step, ...], bool, bool, str], None]) -> None:
    """Make spec's mounts below spec.root (make: mounts._make, with the root to keep them in), then make
    spec.root our / and detach the host's."""
    assert spec.root is not None
    preload(spec)
    root = os.path.realpath(spec.root)  # what the kernel will find there; every target must stay below it
    try:
        linux.mount(os.fsencode(root), os.fsencode(root), None, linux.MS_BIND | linux.MS_REC)
    except OSError as exc:
        raise mount_error(exc, "bind the new root on itself at", root) from None
    steps = tuple(Step(m.kind, in_root(root, m.target), m.source, m.extra) for m in spec.mounts)
    make(steps, spec.mkdir, spec.userns, root)
    pivot(root)


def preload(spec: SandboxSpec) -> None:
    """Import now what the reaper may import later, when the host's files are out of reach: what sets up each
    command's process (attributes, and what it loads for this spec), a session's check of its caller."""
    import resource  # noqa: F401 - attributes' rlimits

    import prctl  # noqa: F401

    from ..shared import attributes, credentials  # noqa: F401
    if spec.landlock_read or spec.landlock_write:
        from ..shared import landlock  # noqa: F401
    if spec.syscall_filter:
        from ..shared import syscall_filter, syscalls

        syscall_filter._pyseccomp()  # libseccomp is loaded (dlopen) with it
        syscalls.expand([])
        from ..shared import syscall_groups  # noqa: F401


def check_within(step: Step, root: str) -> None:
    """SandboxError if step's path, as the host resolves it now, leads out of root through a symbolic link: the
    kernel would make it there, outside the new root (an absolute link in DIR means a path of the new root,
    which the host's view cannot follow)."""
    path = os.path.dirname(step.target) if step.kind == "symlink" else step.target
    real = os.path.realpath(path)
    if real != root and not real.startswith(root.rstrip("/") + "/"):
        shown = step.target[len(root.rstrip("/")):] or "/"
        raise SandboxError(f"cannot make {shown} in the new root {root}: a symbolic link on its way leads out of it "
                           f"(to {real}); give the path the link leads to, below {root}")


def pivot(root: str) -> None:
    """root's top mount becomes our /; the old / is detached. Our working directory is then the new /."""
    try:
        os.chdir(root)  # the top mount there: an --overlay or --tmpfs on / if there is one
        linux.pivot_root(b".", b".")
    except OSError as exc:
        raise SandboxError(f"cannot make {root} the sandbox's root: {_why(exc)}", err=exc.errno or 0) from None
    try:
        linux.umount(b".", linux.MNT_DETACH)  # the old root, stacked on the new one by pivot_root
    except OSError as exc:
        raise mount_error(exc, "detach the host's root from", root) from None
    os.chdir("/")


def _why(exc: OSError) -> str:
    if exc.errno == errno.EINVAL:
        return ("the kernel refused pivot_root (EINVAL): the host's / must be a mount that is not the initial "
                "rootfs (an initramfs without switch_root), and sandboxed-run must not run in a chroot; start it "
                "from a system booted to a mounted root")
    if exc.errno == errno.EPERM:
        return "operation not permitted (pivot_root needs CAP_SYS_ADMIN in the sandbox's namespaces)"
    if exc.errno == errno.ENOSYS:
        return "this kernel or architecture has no pivot_root"
    return exc.strerror or str(exc)

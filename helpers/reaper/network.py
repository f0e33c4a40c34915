"""The network a request may ask for: a new namespace with only lo (up), or a named one to join."""

from __future__ import annotations

import errno
import os

from ..shared import linux
from ..shared.errors import SandboxError


def loopback_up() -> None:
    """Bring lo up in a new network namespace (it starts down). pyroute2 loads here, never in the launcher.

    A synchronous IPRoute raises inside a running asyncio loop: none runs here (the reaper is a fork of
    the CLI or of the spawn server, never of the API's caller). NetNS is not used: it forks a helper,
    and we are in the namespace already, so a plain IPRoute's socket is bound to it.
    """
    try:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
    except Exception as exc:  # noqa: BLE001 - whatever pyroute2 raises, the sandbox cannot start
        raise SandboxError(f"--net none: cannot bring the loopback interface up: {exc}") from None


def join_netns(name: str, in_userns: bool) -> None:
    path = f"/run/netns/{name}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise SandboxError(f"--net netns:{name}: cannot open {path}: {exc.strerror}") from None
    try:
        linux.setns(fd, linux.CLONE_NEWNET)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            reason = f"{path} is not a network namespace"
        elif exc.errno == errno.EPERM and in_userns:
            reason = "not permitted from a user namespace (a namespace made by the host's root needs root)"
        else:
            reason = exc.strerror
        raise SandboxError(f"--net netns:{name}: cannot join the network namespace: {reason}") from None
    finally:
        os.close(fd)

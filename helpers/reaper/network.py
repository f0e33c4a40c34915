"""The network a request may ask for: a new namespace with only lo (up), or a named one to join."""

from __future__ import annotations

import errno
import importlib.util
import os
import socket
import sys
import types

from ..shared import linux
from ..shared.errors import SandboxError


def loopback_up() -> None:
    """Bring lo up in a new network namespace (it starts down): one RTM_NEWLINK request, encoded by pyroute2,
    on a netlink socket of our own that lives in this namespace."""
    try:
        ifinfmsg, request_flags, nlmsgerr, newlink, route = load_netlink()
        message = ifinfmsg()
        message["family"] = socket.AF_UNSPEC
        message["index"] = socket.if_nametoindex("lo")
        message["flags"] = message["change"] = IFF_UP
        message["header"]["type"] = newlink
        message["header"]["flags"] = request_flags
        message["header"]["sequence_number"] = 1
        message.encode()
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, route) as sock:
            sock.bind((0, 0))
            sock.send(message.data)
            answer = nlmsgerr(sock.recv(65536))
        answer.decode()
        if answer["error"]:
            raise OSError(-answer["error"], os.strerror(-answer["error"]))
    except Exception as exc:  # noqa: BLE001 - whatever pyroute2 or the kernel says, the sandbox cannot start
        raise SandboxError(f"--net none: cannot bring the loopback interface up: {exc}") from None


IFF_UP = 0x1


def load_netlink() -> tuple:
    """pyroute2's rtnetlink message classes. pyroute2's package __init__ imports every part of it (asyncio,
    NDB, conntrack...): about 120 ms, where the link message needs 10. So the package is entered without its
    __init__ when it is not loaded yet; if that fails (another pyroute2 layout), the whole package loads.
    The spawn server calls this once, so that the reapers it forks have it already."""
    if "pyroute2" not in sys.modules:
        spec = importlib.util.find_spec("pyroute2")
        if spec is not None and spec.submodule_search_locations is not None:
            package = types.ModuleType("pyroute2")
            package.__path__ = list(spec.submodule_search_locations)
            package.__spec__ = spec
            sys.modules["pyroute2"] = package
    try:
        return _classes()
    except (ImportError, AttributeError):
        for name in [m for m in sys.modules if m == "pyroute2" or m.startswith("pyroute2.")]:
            del sys.modules[name]
        import pyroute2  # noqa: F401 - the whole package, as its authors meant it to load

        return _classes()


def _classes() -> tuple:
    from pyroute2.netlink import NETLINK_ROUTE, NLM_F_ACK, NLM_F_REQUEST, nlmsg, nlmsgerr
    from pyroute2.netlink.rtnl import RTM_NEWLINK

    class ifinfmsg(nlmsg):  # noqa: N801 - the kernel's struct ifinfomsg, named as pyroute2 names it
        """The link message's fixed part and nothing else: pyroute2's own ifinfmsg loads a plugin for every
        kind of link first (half of the import), and turning lo on needs no attribute."""

        fields = (("family", "B"), ("__align", "x"), ("ifi_type", "H"), ("index", "i"), ("flags", "I"),
                  ("change", "I"))

    return ifinfmsg, NLM_F_REQUEST | NLM_F_ACK, nlmsgerr, RTM_NEWLINK, NETLINK_ROUTE


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

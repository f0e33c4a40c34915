"""--net veth and --net bridge:NAME: a new network namespace joined to the host's by a veth pair.

The reaper does it all, as PID 1 and still in the host's network namespace when the order comes: it opens a
netlink socket there, unshares a new network namespace, and through the host's socket asks for the pair with
one end ("eth0") born in the new namespace (IFLA_NET_NS_PID: ours) and the other (sr-...) on the host, up, with
the host end's address or its bridge. The pair never exists without the sandbox's namespace: when that
namespace goes (the last of its processes ends, SIGKILL included) the kernel deletes both ends, and with the
host end its addresses and routes. Nothing of ours has to run for that.

The messages are pyroute2's rtnetlink classes without the package's __init__ (network.load_netlink: about 20 ms
here, where IPRoute costs over 100); they are loaded only for these two modes.
"""

from __future__ import annotations

import errno
import os
import socket

from ..shared import addresses, linux
from ..shared.errors import SandboxError
from ..shared.options import SandboxSpec
from .network import load_netlink, loopback_up

JOB_END = "eth0"
IFF_UP = 0x1
NLMSG_ERROR = 2
RT_TABLE_MAIN, RTPROT_BOOT, RTN_UNICAST, RT_SCOPE_UNIVERSE = 254, 3, 1, 0


def set_up(spec: SandboxSpec) -> tuple[str, str | None]:
    """Make the new network namespace (we are in it after) and the pair; return the job's ADDR/PREFIX and the
    host end's address (None on a bridge). SandboxError, one line, if the kernel refuses."""
    global _held
    flag = f"--net {spec.net}"
    try:
        load()
        from pyroute2.netlink import NETLINK_ROUTE
    except Exception as exc:  # noqa: BLE001 - no pyroute2 we can use: the sandbox cannot start
        raise SandboxError(f"{flag}: cannot load pyroute2's netlink messages: {exc}") from None
    host = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
    try:
        host.bind((0, 0))
        master = None
        if spec.net.startswith("bridge:"):
            master = _index(host, spec.net[len("bridge:"):], flag)
        try:
            linux.unshare(linux.CLONE_NEWNET)
        except OSError as exc:
            raise SandboxError(f"{flag}: cannot make a network namespace: {exc.strerror}") from None
        if spec.ip is not None:
            ip, host_ip = spec.ip, spec.host_ip
            name = _pair(host, _named(), master, flag)
        else:
            ip, host_ip, name = _claim_block(host, flag)
        # The job cannot run yet, so the link of that name is still the one we made: its index is what we
        # delete at the end, the name may be another sandbox's by then.
        index = _index(host, name, flag)
        _held = (host, name, index)
        if host_ip is not None:
            prefix = int(ip.rpartition("/")[2])
            _check(_request(host, _address(index, host_ip, prefix)),
                   f"{flag}: cannot give the host end {name} the address {host_ip}")
    finally:
        if _held is None:
            host.close()
    loopback_up()
    _job_end(ip, host_ip if spec.net == "veth" else spec.gateway, flag)
    return ip, host_ip


# The host's netlink socket, the host end's name and index, from the pair's making to release(): the job cannot
# reach the socket (it is PID 1's, which no process of the job may trace unless it keeps CAP_SYS_PTRACE in the
# host's user namespace: see docs/roots-and-networks.md).
_held: tuple[socket.socket, str, int] | None = None


def release() -> None:
    """Delete the pair now, as the sandbox ends: the kernel would too once the namespace is gone, but that
    happens some time after its last process (the namespace is torn down by a kernel worker), and whoever waits
    for the sandbox's end should find the host as it was. Deleting one end deletes both.

    By index, and only while that index still bears our name: the job may have deleted its end (and with it
    ours) long ago, and another sandbox made a link of the same name since. The kernel hands out indexes in
    turn and reuses one only after 2**31 more, so the index and the name together are our pair."""
    global _held
    if _held is None:
        return
    host, name, index = _held
    _held = None
    from pyroute2.netlink import NLM_F_ACK
    from pyroute2.netlink.rtnl import RTM_DELLINK, RTM_GETLINK
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    message = ifinfmsg()
    message["family"] = socket.AF_UNSPEC
    message["index"] = index
    try:
        answer = _send(host, message, RTM_GETLINK, 0)
        if _type(answer) == NLMSG_ERROR:
            return  # gone already (the job deleted its end)
        found = ifinfmsg(answer)
        found.decode()
        if found.get_attr("IFLA_IFNAME") != name:
            return
        message = ifinfmsg()
        message["family"] = socket.AF_UNSPEC
        message["index"] = index
        _send(host, message, RTM_DELLINK, NLM_F_ACK)
    except OSError:
        pass  # the kernel deletes it with the namespace all the same
    finally:
        host.close()


def load() -> None:
    """pyroute2's link, address and route messages. The spawn server calls this once, so that the reapers it
    forks have them already."""
    load_netlink()
    import pyroute2.netlink.rtnl.ifaddrmsg
    import pyroute2.netlink.rtnl.ifinfmsg
    import pyroute2.netlink.rtnl.rtmsg  # noqa: F401


def _named() -> str:
    return f"{addresses.PREFIX}x{os.urandom(4).hex()}"


def _claim_block(host: socket.socket, flag: str) -> tuple[str, str, str]:
    """The first block of the range whose host link we could make: the kernel's EEXIST on the link's name is
    the lock, so simultaneous starts never share a block."""
    for index in range(addresses.BLOCKS):
        name = addresses.allocated_name(index)
        if _pair(host, name, None, flag, taken_ok=True):
            ip, host_ip = addresses.block(index)
            return ip, host_ip, name
    raise SandboxError(f"{flag}: every /30 of {addresses.RANGE} is in use (links {addresses.PREFIX}0 to "
                       f"{addresses.allocated_name(addresses.BLOCKS - 1)}): give --ip")


def _pair(host: socket.socket, name: str, master: int | None, flag: str, taken_ok: bool = False) -> str | None:
    """Ask for the pair: name on the host, up (on master if given), JOB_END in our new namespace. None if the
    name is taken and taken_ok; a random name is drawn again."""
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    while True:
        message = ifinfmsg()
        message["family"] = socket.AF_UNSPEC
        message["flags"] = message["change"] = IFF_UP
        peer = {"attrs": [("IFLA_IFNAME", JOB_END), ("IFLA_NET_NS_PID", os.getpid())]}
        attrs = [("IFLA_IFNAME", name), ("IFLA_LINKINFO", {"attrs": [
            ("IFLA_INFO_KIND", "veth"), ("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", peer)]})]})]
        if master is not None:
            attrs.append(("IFLA_MASTER", master))
        message["attrs"] = attrs
        error = _request(host, message, create=True)
        if error != errno.EEXIST:
            _check(error, f"{flag}: cannot make the veth pair {name}")
            return name
        if taken_ok:
            return None
        name = _named()


def _index(sock: socket.socket, name: str, flag: str) -> int:
    """The index of the link name in sock's network namespace."""
    from pyroute2.netlink.rtnl import RTM_GETLINK
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    message = ifinfmsg()
    message["family"] = socket.AF_UNSPEC
    message["attrs"] = [("IFLA_IFNAME", name)]
    answer = _send(sock, message, RTM_GETLINK, 0)
    if _type(answer) == NLMSG_ERROR:
        error = _error(answer)
        raise SandboxError(f"{flag}: no link {name} on the host" if error == errno.ENODEV
                           else f"{flag}: cannot find the link {name}: {os.strerror(error)}")
    found = ifinfmsg(answer)
    found.decode()
    return int(found["index"])


def _job_end(ip: str, via: str | None, flag: str) -> None:
    """In the new namespace: the job's end gets its address, goes up, and the default route goes via `via`."""
    from pyroute2.netlink import NETLINK_ROUTE
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
    from pyroute2.netlink.rtnl.rtmsg import rtmsg

    address, _, prefix = ip.partition("/")
    index = socket.if_nametoindex(JOB_END)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE) as inside:
        inside.bind((0, 0))
        _check(_request(inside, _address(index, address, int(prefix))),
               f"{flag}: cannot give the job's end the address {ip}")
        up = ifinfmsg()
        up["family"] = socket.AF_UNSPEC
        up["index"] = index
        up["flags"] = up["change"] = IFF_UP
        _check(_request(inside, up), f"{flag}: cannot bring the job's end up")
        if via is not None:
            route = rtmsg()
            route["family"] = socket.AF_INET
            route["table"], route["proto"], route["scope"], route["type"] = (RT_TABLE_MAIN, RTPROT_BOOT,
                                                                             RT_SCOPE_UNIVERSE, RTN_UNICAST)
            route["attrs"] = [("RTA_GATEWAY", via), ("RTA_OIF", index)]
            _check(_request(inside, route, create=True), f"{flag}: cannot route the job's traffic via {via}")


def _address(index: int, address: str, prefix: int) -> object:
    from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg

    message = ifaddrmsg()
    message["family"] = socket.AF_INET
    message["prefixlen"] = prefix
    message["index"] = index
    message["attrs"] = [("IFA_LOCAL", address), ("IFA_ADDRESS", address)]
    return message


def _request(sock: socket.socket, message: object, create: bool = False) -> int:
    """Send a new-object request (its kind from the message's class), wait for the kernel's answer: 0 or an
    errno."""
    from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL
    from pyroute2.netlink.rtnl import RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE

    kind = {"ifinfmsg": RTM_NEWLINK, "ifaddrmsg": RTM_NEWADDR, "rtmsg": RTM_NEWROUTE}[type(message).__name__]
    return _error(_send(sock, message, kind, NLM_F_ACK | (NLM_F_CREATE | NLM_F_EXCL if create or kind != RTM_NEWLINK
                                                          else 0)))


def _send(sock: socket.socket, message: object, kind: int, flags: int) -> bytes:
    from pyroute2.netlink import NLM_F_REQUEST

    message["header"]["type"] = kind  # type: ignore[index]
    message["header"]["flags"] = flags | NLM_F_REQUEST  # type: ignore[index]
    message["header"]["sequence_number"] = 1  # type: ignore[index]
    message.encode()  # type: ignore[attr-defined]
    sock.send(message.data)  # type: ignore[attr-defined]
    return sock.recv(65536)


def _type(answer: bytes) -> int:
    return int.from_bytes(answer[4:6], "little")


def _error(answer: bytes) -> int:
    """The errno of an NLMSG_ERROR answer (0: an acknowledgement)."""
    if _type(answer) != NLMSG_ERROR:
        return 0
    return -int.from_bytes(answer[16:20], "little", signed=True)


def _check(error: int, what: str) -> None:
    if not error:
        return
    if error == errno.EPERM:
        raise SandboxError(f"{what}: needs CAP_NET_ADMIN in the host's network namespace (run as root, outside any "
                           "user namespace, with that capability)", err=error)
    if error == errno.EOPNOTSUPP:
        raise SandboxError(f"{what}: this kernel has no veth links (CONFIG_VETH), or the master is not a bridge",
                           err=error)
    raise SandboxError(f"{what}: {os.strerror(error)}", err=error)

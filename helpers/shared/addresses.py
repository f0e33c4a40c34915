"""The addresses of --net veth and --net bridge:NAME: --ip, --host-ip and --gateway checked alone and together,
and the range --net veth takes a block from when no --ip is given.

RANGE (10.213.0.0/16) is cut into /30 blocks, 16384 of them: block N is 10.213.0.0 + 4N, its host end the first
address, the job's end the second. Block N belongs to whoever made the host link named f"{PREFIX}{N}" (sr-0 to
sr-16383): the kernel refuses a second link of the same name (EEXIST), so the link is the claim, and it goes with
the sandbox's network namespace. A host end of another kind (a --ip of the caller's, a bridge's port) is named
PREFIX + "x" + 8 hex digits. The ipaddress module is imported only when a value is checked.
"""

from __future__ import annotations

import socket
import struct

RANGE = "10.213.0.0/16"
RANGE_START = 0x0AD50000  # 10.213.0.0
RANGE_PREFIX = 16
BLOCK_PREFIX = 30
BLOCKS = 1 << (BLOCK_PREFIX - RANGE_PREFIX)  # 16384
PREFIX = "sr-"  # every host link of ours starts so (IFNAMSIZ: at most 15 characters in all)
IFNAMSIZ = 16


def block(index: int) -> tuple[str, str]:
    """Block index of RANGE as (the job's ADDR/PREFIX, the host end's ADDR)."""
    base = RANGE_START + 4 * index
    return f"{_dotted(base + 2)}/{BLOCK_PREFIX}", _dotted(base + 1)


def allocated_name(index: int) -> str:
    return f"{PREFIX}{index}"


def _dotted(number: int) -> str:
    return socket.inet_ntoa(struct.pack("!I", number))


# -- the checks: (value, the option as the caller spells it) -> the value to keep ------------------------------

def interface(value: str, name: str) -> str:
    """A network interface's name as the kernel takes one (dev_valid_name): 1 to 15 bytes, not . or .., no /,
    colon or white space."""
    if (not value or len(value.encode(errors="surrogateescape")) >= IFNAMSIZ or value in (".", "..")
            or any(c in "/:\0" or c.isspace() for c in value)):
        raise ValueError(f"{name}: {value!r} is not an interface name (1 to {IFNAMSIZ - 1} characters, no '/', ':' "
                         "or white space)")
    return value


def network(value: object, name: str) -> str:
    """--ip: an IPv4 ADDR/PREFIX with room for a second address (PREFIX 1 to 31), neither the subnet's own
    address nor its broadcast; kept as written by ipaddress (10.1.0.2/24)."""
    import ipaddress

    if not isinstance(value, str) or "/" not in value:
        raise ValueError(f"{name} {value!r}: give an IPv4 address and prefix length, ADDR/PREFIX (10.1.0.2/24)")
    try:
        address = ipaddress.IPv4Interface(value)
    except ValueError as exc:
        raise ValueError(f"{name} {value}: {exc}") from None
    if not 1 <= address.network.prefixlen <= 31:
        raise ValueError(f"{name} {value}: the prefix length must be 1 to 31 (the subnet holds the other end too)")
    _usable(address.ip, address.network, name, value)
    return str(address)


def host(value: object, name: str) -> str:
    """--host-ip, --gateway: one IPv4 address (its subnet is --ip's)."""
    import ipaddress

    if not isinstance(value, str):
        raise ValueError(f"{name} {value!r}: give an IPv4 address (10.1.0.1)")
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError as exc:
        raise ValueError(f"{name} {value}: {exc}") from None


def _usable(ip: object, net: object, name: str, value: str) -> None:
    import ipaddress

    assert isinstance(ip, ipaddress.IPv4Address) and isinstance(net, ipaddress.IPv4Network)
    # 0.0.0.0/8 is "this network": the kernel takes it on an interface but routes nothing from or to it.
    if (ip.is_loopback or ip.is_multicast or ip.is_reserved
            or ip in ipaddress.IPv4Network("0.0.0.0/8")):
        raise ValueError(f"{name} {value}: not an address an interface can have (loopback, multicast, 0.0.0.0/8 "
                         "or reserved)")
    if net.prefixlen <= 30 and ip in (net.network_address, net.broadcast_address):
        raise ValueError(f"{name} {value}: that is the subnet's {'own' if ip == net.network_address else 'broadcast'} "
                         f"address, not one for an interface")


def settle(checked: dict, spelled: object) -> None:
    """Check net, ip, host_ip and gateway together (ValueError); fill in host_ip for a --net veth with --ip.
    spelled(name) is the option as the caller writes it."""
    import ipaddress

    def flag(name: str) -> str:
        return spelled(name)  # type: ignore[operator, no-any-return]

    net, ip, host_ip, gateway = checked["net"], checked["ip"], checked["host_ip"], checked["gateway"]
    veth, bridge = net == "veth", net.startswith("bridge:")
    if ip is not None and not (veth or bridge):
        raise ValueError(f"{flag('ip')} needs {flag('net')} veth or {flag('net')} bridge:NAME")
    if host_ip is not None and not veth:
        raise ValueError(f"{flag('host_ip')} needs {flag('net')} veth (a bridge's port has no address: "
                         f"{flag('gateway')} names the router)")
    if gateway is not None and not bridge:
        raise ValueError(f"{flag('gateway')} needs {flag('net')} bridge:NAME (with veth the default route goes "
                         f"via the host end, {flag('host_ip')})")
    if bridge and ip is None:
        raise ValueError(f"{flag('net')} {net} needs {flag('ip')} ADDR/PREFIX: a bridge's addresses are yours "
                         "to give")
    if ip is None:
        if host_ip is not None:
            raise ValueError(f"{flag('host_ip')} needs {flag('ip')} (without both, they come from {RANGE})")
        return
    job = ipaddress.IPv4Interface(ip)
    if veth and job.network.overlaps(ipaddress.IPv4Network(RANGE)):
        raise ValueError(f"{flag('ip')} {ip}: overlaps {RANGE}, where {flag('net')} veth takes its own blocks; "
                         "choose another subnet, or leave --ip out")
    for name, other in (("host_ip", host_ip), ("gateway", gateway)):
        if other is None:
            continue
        address = ipaddress.IPv4Address(other)
        if address == job.ip:
            raise ValueError(f"{flag(name)} {other}: is the job's own address ({flag('ip')} {ip})")
        if address not in job.network:
            raise ValueError(f"{flag(name)} {other}: outside {flag('ip')}'s subnet {job.network}")
        _usable(address, job.network, flag(name), other)
    if veth and host_ip is None:
        first = next(a for a in (job.network if job.network.prefixlen == 31 else job.network.hosts()) if a != job.ip)
        checked["host_ip"] = str(first)

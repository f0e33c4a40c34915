"""--net veth and --net bridge:NAME, checked from outside: TCP both ways between the host and the job over the
pair, two sandboxes on a bridge, distinct addresses for simultaneous starts, nothing left on the host (links,
addresses, routes) however the sandbox ends, SIGKILL of everything of ours included, the errors without
CAP_NET_ADMIN and for bad values, and every entry point. Every test talks only to addresses it made here."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import signal
import socket
import subprocess
import uuid
from pathlib import Path

import pytest

import sandbox
from support import CLI, alive, all_ended, children, host_links, unique_name, wait_for

RANGE = ipaddress.IPv4Network("10.213.0.0/16")
NOBODY = 65534

# The job's half of a TCP exchange, in python3 (the host's, seen through the sandbox): serve one line to the
# host, or fetch one line from it at the address and port the test writes to a file.
SERVE = """
import socket, sys
server = socket.create_server(("", 0))
open(sys.argv[1] + ".tmp", "w").write(str(server.getsockname()[1]))
__import__("os").rename(sys.argv[1] + ".tmp", sys.argv[1])
server.settimeout(60)
conn, peer = server.accept()
conn.sendall(b"from the job to " + peer[0].encode() + b"\\n")
conn.close()
"""
FETCH = """
import os, socket, sys, time
while not os.path.exists(sys.argv[1]):
    time.sleep(0.02)
address, port = open(sys.argv[1]).read().split()
with socket.create_connection((address, int(port)), timeout=30) as conn:
    print(conn.recv(100).decode().strip())
"""
# A TCP connection inside the job's namespace, closed: its TIME_WAIT keeps the namespace's teardown (by a kernel
# worker) from being done when the last process is: the kernel's own deletion of the pair would come late.
TIME_WAIT = """
import socket
server = socket.create_server(("", 0))
client = socket.create_connection(("127.0.0.1", server.getsockname()[1]))
server.accept()[0].close()
client.close()
"""


def run_cli(*args: str, prefix: list[str] = (), **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, CLI, *args], capture_output=True, text=True, timeout=60, **kw)


def listed(name: str) -> dict | None:
    """The running sandbox name's confinement as --list (list_running) shows it; None while not listed."""
    for running in sandbox.list_running():
        if running.name == name:
            return running.confinement
    return None


def host_addresses() -> str:
    """The host's IPv4 addresses and routes in our range, as ip prints them."""
    shown = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True, check=True).stdout
    routes = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True,
                            check=True).stdout
    return "".join(line + "\n" for line in (shown + routes).splitlines() if "10.213." in line or " sr-" in line)


def read_when_there(path: Path, timeout: float = 30) -> str:
    assert wait_for(path.exists, timeout=timeout), f"{path} never came"
    return path.read_text()


def test_host_and_job_talk_tcp_both_ways_over_the_pair(tmp_path, no_leftovers):
    name = unique_name()
    port_file, go = tmp_path / "port", tmp_path / "go"
    script = f"python3 -c '{SERVE}' {port_file} && python3 -c '{FETCH}' {go}"
    before = host_links()
    launcher = subprocess.Popen([CLI, "--net", "veth", "--name", name, "sh", "-c", script], stdout=subprocess.PIPE,
                                text=True)
    try:
        port = int(read_when_there(port_file))
        ours = host_links() - before
        assert len(ours) == 1, ours
        shown = listed(name)
        assert shown is not None and shown["net"] == "veth", shown
        job = ipaddress.IPv4Interface(shown["ip"])
        host_ip = ipaddress.IPv4Address(shown["host_ip"])
        assert job.network.prefixlen == 30 and job.network.subnet_of(RANGE) and host_ip in job.network
        # host -> job: the job's listener, at the address --list gives
        with socket.create_connection((str(job.ip), port), timeout=30) as conn:
            assert conn.recv(100) == f"from the job to {host_ip}\n".encode()
        # job -> host: a listener of ours on the host end's address, nowhere else
        with socket.create_server((str(host_ip), 0)) as server:
            server.settimeout(30)
            (go.parent / "go.tmp").write_text(f"{host_ip} {server.getsockname()[1]}")
            os.rename(go.parent / "go.tmp", go)
            conn, peer = server.accept()
            with conn:
                assert peer[0] == str(job.ip)
                conn.sendall(b"from the host\n")
        out, _ = launcher.communicate(timeout=60)
    finally:
        launcher.kill()
        launcher.wait()
    assert launcher.returncode == 0 and out == "from the host\n"
    # At once: the reaper deletes the pair before it exits (the kernel's own deletion, with the namespace, comes
    # later, the more so after TCP connections).
    assert not host_links() & ours and host_addresses() == "", "the pair outlived the sandbox"


def test_given_addresses_are_the_jobs_and_the_host_ends(no_leftovers):
    result = run_cli("--net", "veth", "--ip", "10.214.7.2/24", "--host-ip", "10.214.7.9", "sh", "-c",
                     "ip -4 -o addr show eth0; ip route; ip -o link show lo")
    assert result.returncode == 0, result.stderr
    assert "inet 10.214.7.2/24" in result.stdout
    assert "default via 10.214.7.9 dev eth0" in result.stdout
    assert "<LOOPBACK,UP" in result.stdout
    assert "10.214.7." not in subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True).stdout


@pytest.fixture
def bridge():
    """A bridge of the test's own, up, with no address; deleted afterwards, whatever happened."""
    name = f"tbr{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "link", "set", name, "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "link", "del", name], check=False)


def test_two_sandboxes_on_a_bridge_talk_tcp(tmp_path, bridge, no_leftovers):
    port_file = tmp_path / "port"
    server = subprocess.Popen([CLI, "--net", f"bridge:{bridge}", "--ip", "10.214.9.2/24", "python3", "-c", SERVE,
                               str(port_file)])
    try:
        port = int(read_when_there(port_file))
        ports = os.listdir(f"/sys/class/net/{bridge}/brif")
        assert len(ports) == 1 and ports[0].startswith("sr-"), ports
        (tmp_path / "go").write_text(f"10.214.9.2 {port}")
        client = run_cli("--net", f"bridge:{bridge}", "--ip", "10.214.9.3/24", "--gateway", "10.214.9.1",
                         "sh", "-c", f"ip route; python3 -c '{FETCH}' {tmp_path / 'go'}")
        assert client.returncode == 0, client.stderr
        assert "default via 10.214.9.1 dev eth0" in client.stdout
        assert "from the job to 10.214.9.3" in client.stdout
        assert server.wait(timeout=60) == 0
    finally:
        server.kill()
        server.wait()
    assert os.listdir(f"/sys/class/net/{bridge}/brif") == []


def test_twenty_simultaneous_starts_get_distinct_addresses(tmp_path, no_leftovers):
    release = tmp_path / "release"
    launchers = [subprocess.Popen([CLI, "--net", "veth", "sh", "-c",
                                   f"ip -4 -o addr show eth0 > {tmp_path}/{n}.tmp && mv {tmp_path}/{n}.tmp "
                                   f"{tmp_path}/{n}.addr; while [ ! -e {release} ]; do sleep 0.05; done"])
                 for n in range(20)]
    try:
        assert wait_for(lambda: len(list(tmp_path.glob("*.addr"))) == 20, timeout=120)
        jobs = [ipaddress.IPv4Interface(path.read_text().split()[3]) for path in tmp_path.glob("*.addr")]
        assert len(set(jobs)) == 20 and all(job.network.subnet_of(RANGE) for job in jobs), jobs
        assert len({job.network for job in jobs}) == 20, "two sandboxes share a /30"
        assert len(host_links()) >= 20
        release.touch()
        assert all(launcher.wait(timeout=60) == 0 for launcher in launchers)
    finally:
        for launcher in launchers:
            launcher.kill()
            launcher.wait()
    assert host_addresses() == ""


# -- nothing left, however it ends ---------------------------------------------------------------------------

ENDINGS = ["exit", "timeout", "caller SIGKILL", "everything SIGKILL"]


@pytest.mark.kills_reapers
@pytest.mark.parametrize("ending", ENDINGS)
def test_nothing_is_left_on_the_host(tmp_path, ending, no_leftovers):
    flag = tmp_path / "up"
    before = host_links()
    argv = [CLI, "--net", "veth", "--grace", "1"]
    if ending == "timeout":
        argv += ["--timeout", "2"]
    end = tmp_path / "end"
    job = f"touch {flag} && " + (f"while [ ! -e {end} ]; do sleep 0.05; done; python3 -c '{TIME_WAIT}'"
                                 if ending == "exit" else f"python3 -c '{TIME_WAIT}' && sleep 60")
    launcher = subprocess.Popen([*argv, "sh", "-c", job], start_new_session=True)
    try:
        assert wait_for(flag.exists, timeout=30)
        ours = host_links() - before
        assert len(ours) == 1, ours
        if ending == "exit":
            end.touch()
        elif ending == "caller SIGKILL":
            launcher.kill()
        elif ending == "everything SIGKILL":
            reaper = children(launcher.pid)[0]
            inside = children(reaper)
            # Every process of ours at once: nothing of ours is left to delete the pair; the kernel must.
            os.kill(reaper, signal.SIGKILL)
            os.kill(launcher.pid, signal.SIGKILL)
            assert inside and wait_for(lambda: not any(alive(p) for p in inside))
        status = launcher.wait(timeout=60)
    finally:
        launcher.kill()
        launcher.wait()
    if ending in ("exit", "timeout"):
        # The reaper deletes the pair before it exits: gone as soon as the command returns, TIME_WAIT or not.
        assert status == (0 if ending == "exit" else 124)
        assert not (host_links() & ours) and host_addresses() == ""
    else:
        assert wait_for(lambda: all_ended(no_leftovers, {os.getpid()}))
        assert wait_for(lambda: not host_links() & ours, timeout=30), "the veth pair outlived the sandbox"
        assert wait_for(lambda: host_addresses() == "")


def test_a_job_that_deletes_its_end_cannot_make_its_reaper_delete_anothers_pair(tmp_path, no_leftovers):
    """Deleting the job's end deletes the host end too, and its block is free again: a second sandbox takes the
    same host link name. The first one's end must delete only the pair it made, not whatever bears the name."""
    deleted, end = tmp_path / "deleted", tmp_path / "end"
    first = subprocess.Popen([CLI, "--net", "veth", "sh", "-c",
                              f"ip link del eth0 && touch {deleted} && while [ ! -e {end} ]; do sleep 0.05; done"])
    second = None
    try:
        assert wait_for(deleted.exists, timeout=30)
        before = host_links()
        up = tmp_path / "up"
        second = subprocess.Popen([CLI, "--net", "veth", "sh", "-c",
                                   f"touch {up}; while [ ! -e {end}2 ]; do sleep 0.05; done; ip -o link show eth0"],
                                  stdout=subprocess.PIPE, text=True)
        assert wait_for(up.exists, timeout=30)
        theirs = host_links() - before
        assert len(theirs) == 1, theirs
        end.touch()
        assert first.wait(timeout=60) == 0
        assert host_links() >= theirs, "the first sandbox's end deleted the second one's pair"
        Path(f"{end}2").touch()
        out, _ = second.communicate(timeout=60)
        assert second.returncode == 0 and "eth0" in out
    finally:
        end.touch()
        Path(f"{end}2").touch()
        for launcher in (first, second):
            if launcher is not None:
                launcher.kill()
                launcher.wait()


# -- who may, and bad values ---------------------------------------------------------------------------------

def test_an_ordinary_user_is_told_it_needs_cap_net_admin(nobody_dir, no_leftovers):
    prefix = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    result = run_cli("--net", "veth", "true", prefix=prefix, cwd=nobody_dir)
    assert result.returncode == 125
    assert result.stderr.count("\n") == 1 and "CAP_NET_ADMIN in the host's network namespace" in result.stderr


def test_root_without_cap_net_admin_is_told_so(no_leftovers):
    before = host_links()
    result = run_cli("--net", "veth", "true", prefix=["setpriv", "--inh-caps=-net_admin",
                                                       "--bounding-set=-net_admin"])
    assert result.returncode == 125, result
    assert result.stderr.count("\n") == 1 and "needs CAP_NET_ADMIN" in result.stderr, result.stderr
    assert host_links() == before


BAD = [
    (["--ip", "10.214.0.2/24"], "--ip needs --net veth or --net bridge:NAME"),
    (["--net", "none", "--ip", "10.214.0.2/24"], "--ip needs --net veth"),
    (["--net", "veth", "--ip", "10.214.0.2"], "ADDR/PREFIX"),
    (["--net", "veth", "--ip", "10.214.0.300/24"], "--ip 10.214.0.300/24"),
    (["--net", "veth", "--ip", "10.214.0.2/33"], "--ip 10.214.0.2/33"),
    (["--net", "veth", "--ip", "10.214.0.2/32"], "prefix length must be 1 to 31"),
    (["--net", "veth", "--ip", "10.214.0.0/24"], "the subnet's own address"),
    (["--net", "veth", "--ip", "10.214.0.255/24"], "broadcast"),
    (["--net", "veth", "--ip", "127.0.0.2/8"], "loopback"),
    (["--net", "veth", "--ip", "0.0.0.1/24"], "0.0.0.0/8"),
    (["--net", "bridge:br0", "--ip", "10.214.0.2/24", "--gateway", "10.214.0.255"], "broadcast"),
    (["--net", "veth", "--ip", "10.213.5.2/24"], "overlaps 10.213.0.0/16"),
    (["--net", "veth", "--ip", "10.214.0.2/24", "--host-ip", "10.214.0.2"], "is the job's own address"),
    (["--net", "veth", "--ip", "10.214.0.2/24", "--host-ip", "10.215.0.1"], "outside --ip's subnet"),
    (["--net", "veth", "--ip", "10.214.0.2/24", "--host-ip", "nonsense"], "--host-ip nonsense"),
    (["--net", "veth", "--host-ip", "10.214.0.1"], "--host-ip needs --ip"),
    (["--net", "veth", "--gateway", "10.214.0.1"], "--gateway needs --net bridge:NAME"),
    (["--net", "bridge:br0"], "needs --ip ADDR/PREFIX"),
    (["--net", "bridge:br0", "--ip", "10.214.0.2/24", "--host-ip", "10.214.0.1"], "--host-ip needs --net veth"),
    (["--net", "bridge:br0", "--ip", "10.214.0.2/24", "--gateway", "10.99.0.1"], "outside --ip's subnet"),
    (["--net", "bridge:br0", "--ip", "10.214.0.2/24", "--gateway", "10.214.0.2"], "is the job's own address"),
    (["--net", "bridge:abcdefghijklmnop", "--ip", "10.214.0.2/24"], "is not an interface name"),
    (["--net", "bridge:a/b", "--ip", "10.214.0.2/24"], "is not an interface name"),
    (["--net", "bridge:", "--ip", "10.214.0.2/24"], "is not an interface name"),
    (["--net", "vethx"], "unknown net mode"),
]


@pytest.mark.parametrize(("args", "message"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_values_are_usage_errors(args, message, no_leftovers):
    result = run_cli(*args, "true")
    assert result.returncode == 2, result
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_a_missing_bridge_or_one_that_is_not_a_bridge_fails_before_anything_starts(no_leftovers):
    missing = run_cli("--net", f"bridge:tbr{uuid.uuid4().hex[:8]}", "--ip", "10.214.0.2/24", "true")
    assert missing.returncode == 125 and missing.stderr.count("\n") == 1 and "ip link add" in missing.stderr
    not_one = run_cli("--net", "bridge:lo", "--ip", "10.214.0.2/24", "true")
    assert not_one.returncode == 125 and not_one.stderr.strip().endswith("'lo' is not a bridge")


def test_the_api_says_which_keyword_is_wrong(no_leftovers):
    with pytest.raises(ValueError, match="^ip needs net veth or net bridge:NAME"):
        sandbox.run(["true"], ip="10.214.0.2/24")
    with pytest.raises(ValueError, match="^host_ip 10.215.0.1: outside ip's subnet"):
        sandbox.run(["true"], net="veth", ip="10.214.0.2/24", host_ip="10.215.0.1")


# -- every entry point ---------------------------------------------------------------------------------------

ENTRY_POINTS = ["cli", "run", "Popen", "Job", "run_async", "create_process", "AsyncJob"]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_every_entry_point_gives_the_job_an_address_and_a_route_out(tmp_path, entry, no_leftovers):
    out = tmp_path / "out"
    job = ["sh", "-c", f"ip -4 -o addr show eth0 > {out}; ip route >> {out}; ip -o link show lo >> {out}"]
    before = host_links()
    if entry == "cli":
        assert subprocess.run([CLI, "--net", "veth", *job], timeout=60).returncode == 0
    elif entry == "run":
        assert sandbox.run(job, net="veth").returncode == 0
    elif entry == "Popen":
        with sandbox.Popen(job, net="veth") as process:
            assert process.wait() == 0
    elif entry == "Job":
        with sandbox.Job(net="veth") as session:
            assert session.run(job).returncode == 0
    elif entry == "run_async":
        assert asyncio.run(sandbox.run_async(job, net="veth")).returncode == 0
    elif entry == "create_process":
        async def main() -> int:
            process = await sandbox.create_process(job, net="veth")
            return await process.wait()
        assert asyncio.run(main()) == 0
    else:
        async def main() -> int:
            async with sandbox.AsyncJob(net="veth") as session:
                return (await session.run(job)).returncode
        assert asyncio.run(main()) == 0
    shown = out.read_text()
    address = ipaddress.IPv4Interface(shown.split()[3])
    assert address.network.subnet_of(RANGE) and address.network.prefixlen == 30
    assert f"default via {address.network.network_address + 1} dev eth0" in shown
    assert "<LOOPBACK,UP" in shown
    # A session's pair goes when the session does; a run's when the run does.
    assert wait_for(lambda: host_links() == before, timeout=15)

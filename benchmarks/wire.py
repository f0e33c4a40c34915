#!/usr/bin/env python3
"""The cost of one message on the wire: encode and decode of a typical Spawn (holding a Job) and About.

    benchmarks/wire.py [--rounds N]

Prints, for each message, the microseconds of wire.encode() plus the decoding recv() does (the claims
check, marshal.loads, the records' converters), against marshal.dumps plus marshal.loads alone (the
floor: no check of any field), and the ratio. Run it with the Python that has the project installed;
to compare with another checkout, run that checkout's copy with its own PYTHONPATH.
"""

from __future__ import annotations

import argparse
import marshal
import os
import time

from sandboxed_run_helpers.shared import wire
from sandboxed_run_helpers.shared.command import Command
from sandboxed_run_helpers.shared.options import CLI, SandboxSpec


def messages() -> dict[str, object]:
    """A Spawn of a Job as the API sends one (this process's environment), and an About as a reaper answers."""
    spec = SandboxSpec.build({"tmpfs": ["/tmp:size=64M"], "bind": ["/etc:/mnt/etc"], "rlimit": ["NOFILE=1024"],
                              "name": "nightly", "grace": "5s"}, CLI)
    command = Command([b"/bin/sh", b"-c", b"make -j4 test"], dict(os.environb), b"/work", 0o22)
    job = getattr(wire, "Order", None) or wire.Job  # an older checkout calls it Job
    order = job(command, spec, None, "socket", (True, True, True), "/run/sandboxed-run", None, None)
    with open("/proc/self/mountinfo", "rb") as f:
        mountinfo = f.read()
    namespaces = {kind: os.stat(f"/proc/self/ns/{kind}").st_ino for kind in ("mnt", "pid", "net", "uts", "ipc")}
    about = wire.About("nightly", time.time(), [b"sleep", b"1000"], b"/work", "running", None, spec, namespaces,
                       mountinfo)
    return {"Spawn(Job)": wire.Spawn(order, ("echo done",), 0), "About": about}


def decode(data: bytes) -> object:
    loads = getattr(wire, "loads", marshal.loads)  # an older checkout has no claims check
    return wire.decode(loads(data))


def timed(function, rounds: int) -> float:
    """Microseconds of one call: the best of rounds batches of 200 (other work on the machine only adds)."""
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(200):
            function()
        samples.append((time.perf_counter() - start) / 200 * 1e6)
    return min(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    rounds = parser.parse_args().rounds
    print(f"{'message':<12} {'bytes':>6} {'ours µs':>9} {'marshal µs':>11} {'ratio':>6}")
    for name, message in messages().items():
        data = wire.encode(message)
        assert decode(data) == message
        ours = timed(lambda message=message: decode(wire.encode(message)), rounds)
        plain = marshal.loads(data)
        floor = timed(lambda plain=plain: marshal.loads(marshal.dumps(plain)), rounds)
        print(f"{name:<12} {len(data):>6} {ours:>9.1f} {floor:>11.1f} {ours / floor:>6.1f}")


if __name__ == "__main__":
    main()

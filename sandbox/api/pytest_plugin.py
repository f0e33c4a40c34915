"""pytest plugin (entry point `pytest11`): a `sandbox_job` fixture, one sandbox.Job per test.

A test can mount, unmount and kill freely inside it while the host stays untouched. After the
test the job is stopped (stop signal, grace, SIGKILL); the test fails if anything of the job
outlives it: a process or descriptor that still holds its mount namespace. Options for the Job
come from a marker: `@pytest.mark.sandbox_job(tmpfs=["/mnt"], grace=2)`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from .job import Job


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sandbox_job(**options): options of the sandbox_job fixture's sandbox.Job")


def holders_of(namespace: str) -> list[str]:
    """Processes that are in, or hold a descriptor on, a namespace ('mnt:[4026532...]')."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/mnt") == namespace:
                found.append(f"pid {entry} runs in it")
                continue
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{entry}/fd/{fd}") == namespace:
                    found.append(f"pid {entry} holds it open (fd {fd})")
            except OSError:
                continue  # closed meanwhile (the listing's own descriptor, for one)
    return found


@pytest.fixture
def sandbox_job(request: pytest.FixtureRequest) -> Iterator[Job]:
    """A sandbox.Job (private mount and PID namespace) for this test, stopped and checked afterwards."""
    marker = request.node.get_closest_marker("sandbox_job")
    options = dict(marker.kwargs) if marker else {}
    job = Job(**options).start()
    namespace = os.readlink(job.namespace_path("mnt"))
    try:
        yield job
    finally:
        job.stop()
        left = holders_of(namespace)
        if left:
            pytest.fail(f"the test's sandbox outlived it: its mount namespace {namespace}: {'; '.join(left)}",
                        pytrace=False)

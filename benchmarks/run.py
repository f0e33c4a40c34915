#!/usr/bin/env python3
"""Benchmarks of sandboxed-run, each figure next to a baseline measured in the same run.

Run it with the Python that has the project installed (its virtualenv):

    benchmarks/run.py [--quick] [--json FILE] [--markdown]

benchmarks/README.md says what each figure measures and why. Every process this script starts
carries RUN_ID in its environment; whatever is still alive at the end is killed and reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, astuple, dataclass, field, replace
from functools import cache
from itertools import count
from math import log

try:
    import sandbox
    from sandbox.api import spawner
except ImportError as exc:
    sys.exit(f"run.py: cannot import the project ({exc}); run this script with the Python of the "
             "virtualenv where sandboxed-run is installed (pip install -e .)")

UNSHARE = ["unshare", "-m", "-p", "-f", "--kill-child"]
BWRAP = ["bwrap", "--dev-bind", "/", "/", "--unshare-pid", "--die-with-parent"]
DEVNULL = subprocess.DEVNULL

# Every process we start has RUN_ID in its environment (never in ours), so a final sweep of /proc
# finds anything that escaped, whichever figure started it.
RUN_ID = uuid.uuid4().hex
MARK_VAR = "SANDBOX_BENCH_MARK"
_mark_serial = count()

JOB_TIMEOUT = 300.0  # seconds; far above any healthy teardown job, only so a job that never ends cannot hang CI
READY_TIMEOUT = 120.0
GONE_TIMEOUT = 30.0
PROCESS_MARGIN = 200  # processes kept free beyond a teardown job's own, for the rest of the system

# Starts $1 sleepers, then waits until each has exec'd sleep: a half-started child would be cheaper
# to kill than the sleeping process the figure is about. Each sleeper's duration is unique to the
# job, so its /proc/PID/cmdline identifies it; the [.] keeps grep from counting its own command line.
SPAWN_SLEEPERS = r"""
n=$1
i=0
while [ "$i" -lt "$n" ]; do sleep "$BENCH_SLEEP" & i=$((i + 1)); done
while [ "$(grep -l "$BENCH_PATTERN" /proc/[0-9]*/cmdline 2>/dev/null | wc -l)" -lt "$n" ]; do
    sleep 0.01
done
"""
# Figure 3: the main process writes the time and exits, leaving the sleepers to the launcher.
TEARDOWN_JOB = SPAWN_SLEEPERS + 'date +%s.%N > "$2"\n'
# Figure 4: the main process says it is ready and stays, until its caller is SIGKILLed.
CALLER_KILL_JOB = SPAWN_SLEEPERS + "echo ready\nwait\n"

# Figure 4's caller: a separate Python process using the API, so that the benchmark can SIGKILL it.
# It moves the job's mark into place itself, so that only the job (not the caller, its spawn server
# or the reaper) matches the job's mark; they all still carry RUN_ID for the final sweep.
CALLER_SCRIPT = """
import os, sys
import sandbox
from sandbox.api import spawner
env = dict(os.environ, SANDBOX_BENCH_MARK=os.environ["BENCH_CALLER_OF"])
job = sandbox.Popen(["sh", "-c", sys.argv[1], "sh", sys.argv[2]], grace=0, env=env, stdin=sandbox.DEVNULL)
server = spawner.current().pid
print("pids", job.pid, job.reaper_pid, server, flush=True)
job.wait()
"""


# -- configuration and results ----------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    mode: str = "full"
    latency_warmup: int = 20
    latency_reps: int = 200
    cli_warmup: int = 5
    cli_reps: int = 40
    teardown_sizes: tuple[int, ...] = (100, 1000, 5000)
    teardown_warmup: int = 1  # per size; the first size always gets at least one
    teardown_reps: int = 5
    kill_sleepers: int = 100
    kill_warmup: int = 2
    kill_reps: int = 10
    throughput_jobs: int = 500
    throughput_threads: int = 8
    throughput_warmup: int = 1
    throughput_reps: int = 5
    memory_jobs: int = 50
    net_warmup: int = 3
    net_reps: int = 30
    capture_mib: int = 200
    capture_warmup: int = 1
    capture_reps: int = 7
    account_runs: int = 100  # per round, for each of ours and bwrap
    account_rounds: int = 3
    root_warmup: int = 3
    root_reps: int = 30


FULL = Config()
QUICK = replace(FULL, mode="quick", latency_warmup=5, latency_reps=50, cli_warmup=2, cli_reps=10,
                teardown_warmup=0, teardown_reps=2, kill_warmup=1, kill_reps=5, throughput_jobs=200,
                throughput_reps=2, net_reps=10, capture_reps=3, account_runs=50,
                account_rounds=2, root_reps=10)


@dataclass
class Result:
    """One line of the table. Values are in `unit`; ratio is ours / baseline."""

    name: str
    ours: float | bool | None
    baseline: float | None
    unit: str
    goal: str = ""  # what `met` checks; empty for figures shown for information
    met: bool | None = None  # None: informational, or not measured
    n: int = 0  # samples behind each median (for memory: the number of jobs)
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if isinstance(self.ours, bool) or self.ours is None or not self.baseline:
            return None
        return self.ours / self.baseline

    def ratio_goal(self, limit: float) -> Result:
        self.goal = f"ratio <= {limit:g}"
        self.met = self.ratio is not None and self.ratio <= limit
        return self

    def min_ratio_goal(self, limit: float) -> Result:
        self.goal = f"ratio >= {limit:g}"
        self.met = self.ratio is not None and self.ratio >= limit
        return self

    def extra_goal(self, limit: float) -> Result:
        """ours may exceed the baseline by at most limit (in unit)."""
        self.goal = f"+<= {limit:g} {self.unit}"
        self.met = isinstance(self.ours, float) and isinstance(self.baseline, float) \
            and self.ours - self.baseline <= limit
        return self

    def limit_goal(self, limit: float) -> Result:
        self.goal = f"<= {limit:g} {self.unit}"
        self.met = isinstance(self.ours, float) and self.ours <= limit
        return self


def progress(message: str) -> None:
    # stderr, so that stdout holds only the table (ready to paste with --markdown).
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# -- measuring --------------------------------------------------------------------------------------


def timed(action: Callable[[], object]) -> Callable[[], float]:
    """A sampler returning the wall time of one call of action, in seconds."""

    def sample() -> float:
        start = time.perf_counter()
        action()
        return time.perf_counter() - start

    return sample


def interleaved(samplers: dict[str, Callable[[], float]], warmup: int, reps: int) -> dict[str, list[float]]:
    """Call each sampler warmup + reps times and keep the last reps values of each.

    The samplers take turns in a rotating order, so that drift (CPU frequency, caches, a busy
    neighbour) hits ours and the baseline alike instead of whichever ran second.
    """
    names = list(samplers)
    kept: dict[str, list[float]] = {name: [] for name in names}
    for i in range(warmup + reps):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            value = samplers[name]()
            if i >= warmup:
                kept[name].append(value)
    return kept


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000.0


def run_checked(argv: list[str], **kwargs) -> None:
    # Never with a timeout: Python 3.11's wait(timeout) polls with sleeps that double up to 50 ms,
    # which would round a baseline's wall time up to the next step (a 36 ms process reads 64 ms).
    subprocess.run(argv, check=True, **kwargs)


@cache
def bwrap_problem() -> str | None:
    """Why the bwrap baseline cannot run here, or None when it can."""
    if shutil.which("bwrap") is None:
        return "bwrap not installed (benchmarks/setup.sh installs it)"
    done = subprocess.run([*BWRAP, "true"], stdin=DEVNULL, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        return f"bwrap failed here: {done.stderr.strip() or done.returncode}"
    return None


# -- processes: marks, /proc, cleanup ---------------------------------------------------------------


@dataclass(frozen=True)
class Mark:
    """Tags every process of one job: an environment variable to find them from outside, and a
    sleep duration unique to the job so that the job can count its own sleepers."""

    value: str
    digits: str

    @classmethod
    def new(cls, tag: str) -> Mark:
        serial = next(_mark_serial)
        return cls(f"{RUN_ID}-{tag}-{serial}", f"{serial:05d}{uuid.uuid4().int % 10**7:07d}")

    @property
    def sleep_arg(self) -> str:
        return f"1000.{self.digits}"

    def env(self, var: str = MARK_VAR) -> dict[str, str]:
        return dict(os.environ, **{var: self.value, "BENCH_SLEEP": self.sleep_arg,
                                   "BENCH_PATTERN": f"1000[.]{self.digits}"})

    @property
    def needle(self) -> bytes:
        return f"{MARK_VAR}={self.value}\0".encode()


def _environ_has(pid: int, needle: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return needle in f.read()
    except OSError:  # gone meanwhile, or a zombie
        return False


def pids_with(needle: bytes) -> list[int]:
    """PIDs of the processes whose environment contains needle (never our own)."""
    me = os.getpid()
    return [int(name) for name in os.listdir("/proc")
            if name.isdigit() and int(name) != me and _environ_has(int(name), needle)]


def kill_marked(needle: bytes) -> int:
    """SIGKILL every process whose environment contains needle; return how many there were."""
    killed = 0
    for pid in pids_with(needle):
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            continue
        try:
            # Checked again through the pidfd we hold, so a recycled PID is never hit.
            if _environ_has(pid, needle):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                killed += 1
        except ProcessLookupError:
            pass
        finally:
            os.close(pidfd)
    return killed


@contextmanager
def leaves_nothing(mark: Mark, who: str) -> Iterator[None]:
    """Fail if a process carrying mark outlives the block; kill any such process either way.

    On an error (Ctrl+C included) the leftovers are only killed: they are expected then, and the
    original exception must get through instead of a complaint about them.
    """
    try:
        yield
    except BaseException:
        kill_marked(mark.value.encode())
        raise
    left = kill_marked(mark.value.encode())
    if left:
        raise RuntimeError(f"{left} processes outlived {who} (killed now)")


def children(pid: int) -> set[int]:
    out: set[int] = set()
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.update(int(p) for p in f.read().split())
    except FileNotFoundError:
        pass  # gone, or a kernel without CONFIG_PROC_CHILDREN: callers add the PIDs they know
    return out


def wait_all_exited(pidfds: list[int], timeout: float) -> None:
    """Block until every pidfd is readable, i.e. every one of those processes has exited."""
    poller = select.poll()
    for fd in pidfds:
        poller.register(fd, select.POLLIN)
    pending = set(pidfds)
    deadline = time.monotonic() + timeout
    while pending:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"{len(pending)} processes still alive after {timeout:g} s")
        for fd, _ in poller.poll(remaining * 1000):
            pending.discard(fd)
            poller.unregister(fd)


def read_lines_until(fd: int, done: Callable[[list[str]], bool], timeout: float) -> list[str]:
    """Read lines from fd until done(lines) holds; fail on EOF or after timeout seconds."""
    lines: list[str] = []
    pending = b""
    deadline = time.monotonic() + timeout
    while not done(lines):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise TimeoutError(f"not ready after {timeout:g} s; got {lines!r}")
        chunk = os.read(fd, 4096)
        if not chunk:
            raise RuntimeError(f"exited before it was ready; got {lines!r}")
        *complete, pending = (pending + chunk).split(b"\n")
        lines += [line.decode(errors="replace") for line in complete]
    return lines


def process_headroom() -> tuple[int, str]:
    """How many more processes this system lets us start, and the limit that says so."""
    with open("/proc/loadavg") as f:
        tasks = int(f.read().split()[3].split("/")[1])  # every thread holds a PID too
    limits = []
    for path in ("/proc/sys/kernel/pid_max", "/proc/sys/kernel/threads-max"):
        with open(path) as f:
            limit = int(f.read())
        limits.append((limit - tasks, f"{path.rsplit('/', 1)[1]}={limit}"))
    soft, _ = resource.getrlimit(resource.RLIMIT_NPROC)
    if soft != resource.RLIM_INFINITY and os.geteuid() != 0:  # root is exempt from RLIMIT_NPROC
        limits.append((soft - tasks, f"ulimit -u={soft}"))
    limits += _cgroup_pid_limits()
    return min(limits)


def _cgroup_pid_limits() -> list[tuple[int, str]]:
    """(headroom, description) for each pids.max above us, cgroup v1 or v2."""
    out = []
    with open("/proc/self/cgroup") as f:
        for line in f:
            hierarchy, controllers, path = line.rstrip("\n").split(":", 2)
            if "pids" in controllers.split(","):
                root = "/sys/fs/cgroup/pids"
            elif hierarchy == "0":
                root = "/sys/fs/cgroup"
            else:
                continue
            parts = [p for p in path.split("/") if p]
            for depth in range(len(parts), -1, -1):
                directory = os.path.join(root, *parts[:depth])
                try:
                    with open(os.path.join(directory, "pids.max")) as m, \
                            open(os.path.join(directory, "pids.current")) as c:
                        limit, current = m.read().strip(), int(c.read())
                except (OSError, ValueError):
                    continue
                if limit != "max":
                    out.append((int(limit) - current, f"{directory}/pids.max={limit}"))
    return out


# -- figure 1: API latency --------------------------------------------------------------------------


def fig_api_latency(cfg: Config) -> list[Result]:
    samplers = {
        "ours": timed(lambda: sandbox.run(["true"], check=True)),
        "unshare": timed(lambda: run_checked([*UNSHARE, "true"])),
        "subprocess": timed(lambda: run_checked(["true"])),
    }
    if bwrap_problem() is None:
        samplers["bwrap"] = timed(lambda: run_checked([*BWRAP, "true"]))
    samples = interleaved(samplers, cfg.latency_warmup, cfg.latency_reps)
    ours, n = median_ms(samples["ours"]), cfg.latency_reps
    title = "1. API sandbox.run(true), warm"
    if "bwrap" in samples:
        results = [Result(f"{title} vs bwrap", ours, median_ms(samples["bwrap"]), "ms", n=n).ratio_goal(1.0)]
    else:
        results = [Result(f"{title} vs bwrap", ours, None, "ms", goal="ratio <= 1", met=False, n=n,
                          note=f"not measured: {bwrap_problem()}")]
    return results + [
        Result(f"{title} vs unshare", ours, median_ms(samples["unshare"]), "ms", n=n),
        Result(f"{title} vs subprocess.run(true)", ours, median_ms(samples["subprocess"]), "ms", n=n),
    ]


# -- figure 2: CLI start-up -------------------------------------------------------------------------


def cli_path() -> str:
    # The sandboxed-run installed next to the interpreter running us, not whatever PATH finds first.
    beside = os.path.join(os.path.dirname(sys.executable), "sandboxed-run")
    found = beside if os.access(beside, os.X_OK) else shutil.which("sandboxed-run")
    if found is None:
        raise RuntimeError("sandboxed-run not found next to sys.executable nor on PATH")
    return found


def fig_cli(cfg: Config) -> list[Result]:
    cli = cli_path()
    samples = interleaved({
        "ours": timed(lambda: run_checked([cli, "--", "true"])),
        # The floor: the interpreter plus the two libraries the CLI cannot do without.
        "floor": timed(lambda: run_checked([sys.executable, "-c", "import click, prctl"])),
    }, cfg.cli_warmup, cfg.cli_reps)
    latency = Result("2. CLI sandboxed-run -- true vs python -c 'import click, prctl'",
                     median_ms(samples["ours"]), median_ms(samples["floor"]), "ms", n=cfg.cli_reps).ratio_goal(1.0)
    # pyroute2 is a heavy import the CLI path must not pay for.
    probe = subprocess.run([sys.executable, "-c", "import sandbox.cli, sys; print('pyroute2' in sys.modules)"],
                           stdin=DEVNULL, capture_output=True, text=True, check=True, timeout=60)
    imported = probe.stdout.strip() == "True"
    imports = Result("2. import sandbox.cli loads pyroute2", imported, None, "", goal="not loaded",
                     met=not imported, n=1)
    return [latency, imports]


# -- figure 3: teardown of leftover processes -------------------------------------------------------


def teardown_once(n: int, launcher: str, tmp: str) -> float:
    """Seconds from the job's main process exiting (leaving n sleepers) until the launcher returned."""
    mark = Mark.new(f"teardown{n}")
    stamp = os.path.join(tmp, f"main-exit-{mark.digits}")
    argv = ["sh", "-c", TEARDOWN_JOB, "sh", str(n), stamp]
    options = {"env": mark.env(), "stdin": DEVNULL, "stdout": DEVNULL, "check": True}
    # A watchdog instead of timeout=: subprocess's timed wait polls (see run_checked). If the job
    # hangs, killing its processes makes the launcher return, and the missing stamp fails the figure.
    watchdog = threading.Timer(JOB_TIMEOUT, kill_marked, (mark.needle,))
    watchdog.start()
    with leaves_nothing(mark, launcher):
        try:
            if launcher == "ours":
                sandbox.run(argv, grace=0, **options)
            else:
                subprocess.run([*UNSHARE, *argv], **options)
            returned = time.time()  # wall clock: compared with the job's `date +%s.%N`
        finally:
            watchdog.cancel()
    with open(stamp) as f:
        main_exited = float(f.read())
    os.unlink(stamp)
    return returned - main_exited


def growth_exponent(times: dict[int, float]) -> float:
    """The worst k between consecutive sizes, with time ~ N**k: 1 is linear, above 1 worse."""
    sizes = sorted(times)
    return max(log(times[b] / times[a]) / log(b / a) for a, b in zip(sizes, sizes[1:], strict=False))


def fig_teardown(cfg: Config) -> list[Result]:
    results: list[Result] = []
    medians: dict[str, dict[int, float]] = {"ours": {}, "unshare": {}}
    with tempfile.TemporaryDirectory(prefix="sandbox-bench-") as tmp:
        for index, n in enumerate(cfg.teardown_sizes):
            headroom, limit = process_headroom()
            title = f"3. teardown of {n} sleepers, grace=0, vs unshare"
            if headroom < n + PROCESS_MARGIN:
                results.append(Result(title, None, None, "ms", note=f"skipped: room for only {headroom} "
                                      f"more processes ({limit})"))
                continue
            warmup = max(cfg.teardown_warmup, 1 if index == 0 else 0)
            progress(f"  {n} sleepers: {warmup} warm-up + {cfg.teardown_reps} runs each")
            samples = interleaved({
                "ours": lambda n=n: teardown_once(n, "ours", tmp),
                "unshare": lambda n=n: teardown_once(n, "unshare", tmp),
            }, warmup, cfg.teardown_reps)
            for who in medians:
                medians[who][n] = median_ms(samples[who])
            result = Result(title, medians["ours"][n], medians["unshare"][n], "ms", n=cfg.teardown_reps,
                            note="unshare's PID 1 is the job's shell itself: informational")
            results.append(result.limit_goal(1000.0) if n >= 5000 else result)
    if len(medians["ours"]) >= 2:
        sizes = ", ".join(str(n) for n in sorted(medians["ours"]))
        results.append(Result(f"3. teardown growth exponent k (t ~ N^k) over N = {sizes}",
                              growth_exponent(medians["ours"]), growth_exponent(medians["unshare"]), "",
                              goal="k <= 1.1 (linear, 10% noise slack)", n=cfg.teardown_reps,
                              met=growth_exponent(medians["ours"]) <= 1.1,
                              note="worst step between consecutive sizes; the baseline's k is the "
                                   "kernel's own growth"))
    return results


# -- figure 4: the caller is SIGKILLed --------------------------------------------------------------


def caller_kill_once(n: int, launcher: str) -> tuple[float, float | None]:
    """SIGKILL a caller whose job keeps n sleepers; seconds until every process of the job has exited.

    Also returns, for our API, the seconds until its spawn server has exited as well.
    """
    mark = Mark.new(f"caller-kill-{launcher}")
    if launcher == "ours":
        argv = [sys.executable, "-c", CALLER_SCRIPT, CALLER_KILL_JOB, str(n)]
        env = mark.env("BENCH_CALLER_OF")
    else:
        argv = [*UNSHARE, "sh", "-c", CALLER_KILL_JOB, "sh", str(n)]
        env = mark.env()
    with leaves_nothing(mark, f"the SIGKILLed caller ({launcher})"):
        caller = subprocess.Popen(argv, env=env, stdin=DEVNULL, stdout=subprocess.PIPE, bufsize=0)
        try:
            lines = read_lines_until(caller.stdout.fileno(), lambda got: "ready" in got and (
                launcher != "ours" or any(line.startswith("pids ") for line in got)), READY_TIMEOUT)
            # Our caller prints: pids JOB REAPER SERVER (its sandbox's PID 1 and its spawn server).
            reaper, server = next(([int(p) for p in line.split()[2:4]] for line in lines
                                   if line.startswith("pids ")), [0, 0])
            job = [pid for pid in pids_with(mark.needle) if pid != caller.pid]
            if len(job) < n + 1:
                raise RuntimeError(f"expected {n + 1} job processes, found {len(job)}")
            return kill_and_time(caller, job + ([reaper] if reaper else []), server)
        finally:
            caller.kill()
            caller.wait()
            caller.stdout.close()


def kill_and_time(caller: subprocess.Popen, watched: list[int], server: int) -> tuple[float, float | None]:
    """SIGKILL caller; seconds until every watched process has exited, and until server has (if not 0)."""
    # pidfds taken before the kill: exits are seen at once, and a recycled PID cannot fool us.
    pidfds = [os.pidfd_open(pid) for pid in watched]
    server_fds = [os.pidfd_open(server)] if server else []
    try:
        start = time.perf_counter()
        caller.kill()
        wait_all_exited(pidfds, GONE_TIMEOUT)
        job_gone = time.perf_counter() - start
        if not server_fds:
            return job_gone, None
        wait_all_exited(server_fds, GONE_TIMEOUT)
        return job_gone, time.perf_counter() - start
    finally:
        for fd in pidfds + server_fds:
            os.close(fd)


def fig_caller_killed(cfg: Config) -> list[Result]:
    n = cfg.kill_sleepers
    server_times: list[float] = []

    def ours() -> float:
        job_gone, server_gone = caller_kill_once(n, "ours")
        if server_gone is not None:
            server_times.append(server_gone)
        return job_gone

    samples = interleaved({"ours": ours, "unshare": lambda: caller_kill_once(n, "unshare")[0]},
                          cfg.kill_warmup, cfg.kill_reps)
    note = "baseline: SIGKILL unshare --kill-child"
    if server_times:
        note += f"; our spawn server had exited after {median_ms(server_times[cfg.kill_warmup:]):.1f} ms"
    return [Result(f"4. caller SIGKILLed, grace=0: {n} sleepers + main gone, vs unshare",
                   median_ms(samples["ours"]), median_ms(samples["unshare"]), "ms", n=cfg.kill_reps,
                   note=note).limit_goal(100.0)]


# -- figure 5: throughput ---------------------------------------------------------------------------


def threaded_batch(run_one: Callable[[], object], jobs: int, threads: int) -> Callable[[], float]:
    """A sampler: seconds to run `jobs` calls of run_one from a pool of `threads` threads."""

    def sample() -> float:
        with ThreadPoolExecutor(threads) as pool:
            start = time.perf_counter()
            for future in [pool.submit(run_one) for _ in range(jobs)]:
                future.result()
            return time.perf_counter() - start

    return sample


def asyncio_batch(make_job: Callable[[], object], jobs: int, concurrency: int) -> Callable[[], float]:
    """A sampler: seconds to await `jobs` coroutines from make_job, at most `concurrency` at once."""

    async def batch() -> float:
        gate = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with gate:
                await make_job()

        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(jobs)))
        return time.perf_counter() - start

    return lambda: asyncio.run(batch())


async def unshare_true_async() -> None:
    process = await asyncio.create_subprocess_exec(*UNSHARE, "true", stdin=DEVNULL)
    if await process.wait() != 0:
        raise RuntimeError("unshare true failed")


async def bwrap_true_async() -> None:
    process = await asyncio.create_subprocess_exec(*BWRAP, "true", stdin=DEVNULL)
    if await process.wait() != 0:
        raise RuntimeError("bwrap true failed")


def throughput_rows(title: str, jobs: int, reps: int, samples: dict[str, list[float]]) -> list[Result]:
    """Jobs per second against bwrap (the goal) and unshare (for information)."""
    ours = jobs / statistics.median(samples["ours"])
    if "bwrap" in samples:
        rows = [Result(f"{title}, vs bwrap", ours, jobs / statistics.median(samples["bwrap"]), "jobs/s", n=reps,
                       note="higher is better").min_ratio_goal(1.0)]
    else:
        rows = [Result(f"{title}, vs bwrap", ours, None, "jobs/s", goal="ratio >= 1", met=False, n=reps,
                       note=f"not measured: {bwrap_problem()}")]
    return rows + [Result(f"{title}, vs unshare", ours, jobs / statistics.median(samples["unshare"]), "jobs/s",
                          n=reps, note="higher is better")]


def fig_throughput(cfg: Config) -> list[Result]:
    jobs, threads = cfg.throughput_jobs, cfg.throughput_threads
    samplers = {
        "ours": threaded_batch(lambda: sandbox.run(["true"], check=True), jobs, threads),
        "unshare": threaded_batch(lambda: run_checked([*UNSHARE, "true"]), jobs, threads),
    }
    if bwrap_problem() is None:
        samplers["bwrap"] = threaded_batch(lambda: run_checked([*BWRAP, "true"]), jobs, threads)
    samples = interleaved(samplers, cfg.throughput_warmup, cfg.throughput_reps)
    results = throughput_rows(f"5. throughput, {jobs} x true from {threads} threads", jobs, cfg.throughput_reps,
                              samples)
    title = f"5. throughput, {jobs} x true from asyncio (semaphore {threads})"
    run_async = getattr(sandbox, "run_async", None)
    if run_async is None:
        results.append(Result(title, None, None, "jobs/s", note="not available: sandbox has no run_async"))
        return results
    samplers = {
        "ours": asyncio_batch(lambda: run_async(["true"], check=True), jobs, threads),
        "unshare": asyncio_batch(unshare_true_async, jobs, threads),
    }
    if bwrap_problem() is None:
        samplers["bwrap"] = asyncio_batch(bwrap_true_async, jobs, threads)
    samples = interleaved(samplers, cfg.throughput_warmup, cfg.throughput_reps)
    return results + throughput_rows(title, jobs, cfg.throughput_reps, samples)


# -- figure 6: memory -------------------------------------------------------------------------------


def private_kib(pid: int) -> int:
    """Memory only this process holds (pages shared with its forker or siblings not counted)."""
    total = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    return total


def helpers_private(jobs: list[sandbox.Popen]) -> tuple[float, int]:
    """Private MiB of the spawn server plus every reaper, and how many processes that is.

    Every child of the server counts, not only the jobs' reapers: one it keeps ready for the next
    request costs memory too.
    """
    server = spawner.current().pid if spawner.current() is not None else None
    if not server:
        raise RuntimeError("cannot find the spawn server's PID (sandbox.api.spawner.current())")
    pids = {server} | children(server) | {job.reaper_pid for job in jobs}
    return sum(private_kib(pid) for pid in pids) / 1024.0, len(pids)


def unshare_private_mib() -> float:
    """Private MiB of one `unshare ... sleep` process while its job runs."""
    mark = Mark.new("memory-unshare")
    with leaves_nothing(mark, "unshare"):
        process = subprocess.Popen([*UNSHARE, "sleep", mark.sleep_arg], env=mark.env(), stdin=DEVNULL)
        child_fds: list[int] = []
        try:
            deadline = time.monotonic() + READY_TIMEOUT
            while not children(process.pid):
                if time.monotonic() > deadline:
                    raise TimeoutError("unshare started no child")
                time.sleep(0.01)
            child_fds = [os.pidfd_open(pid) for pid in children(process.pid)]
            time.sleep(0.05)  # let the forked child exec sleep, so no copy-on-write is still pending
            return private_kib(process.pid) / 1024.0
        finally:
            process.kill()
            process.wait()
            # --kill-child's SIGKILL reaches the child after unshare is gone: wait for it to land.
            wait_all_exited(child_fds, GONE_TIMEOUT)
            for fd in child_fds:
                os.close(fd)


def helpers_per_job(counts: tuple[int, ...]) -> dict[int, tuple[float, int]]:
    """For each count of running sleep jobs: our helpers' private MiB per job, and how many helpers."""
    mark = Mark.new("memory")
    jobs: list[sandbox.Popen] = []
    measured: dict[int, tuple[float, int]] = {}
    with leaves_nothing(mark, "Popen.stop(grace=0)"):
        try:
            for target in counts:
                while len(jobs) < target:
                    jobs.append(sandbox.Popen(["sleep", mark.sleep_arg], env=mark.env(), stdin=DEVNULL))
                mib, helpers = helpers_private(jobs)
                measured[target] = (mib / target, helpers)
        finally:
            for job in jobs:
                job.stop(grace=0)
    return measured


def fig_memory(cfg: Config) -> list[Result]:
    many = cfg.memory_jobs
    measured = helpers_per_job((1, many))
    baseline = unshare_private_mib()
    title = "6. private memory of server + reapers per job"
    helpers = "helper processes (server, reapers, any kept ready)"
    return [
        Result(f"{title}, 1 job, vs one unshare", measured[1][0], baseline, "MiB", n=1,
               note=f"{measured[1][1]} {helpers}; the spawn server's fixed cost dominates"),
        Result(f"{title}, {many} jobs, vs one unshare", measured[many][0], baseline, "MiB", n=many,
               note=f"{measured[many][1]} {helpers}").limit_goal(1.0),
    ]


# -- figure 7: the price of --net none --------------------------------------------------------------


def fig_net_none(cfg: Config) -> list[Result]:
    """--net none, and as root --net veth (a veth pair made and deleted per run), each against the same run
    without a --net option."""
    cli = cli_path()
    runs = {
        "cli": timed(lambda: run_checked([cli, "--", "true"])),
        "cli net": timed(lambda: run_checked([cli, "--net", "none", "--", "true"])),
        "api": timed(lambda: sandbox.run(["true"], check=True)),
        "api net": timed(lambda: sandbox.run(["true"], net="none", check=True)),
    }
    veth = os.geteuid() == 0  # a veth pair needs CAP_NET_ADMIN in the host's network namespace
    if veth:
        runs["cli veth"] = timed(lambda: run_checked([cli, "--net", "veth", "--", "true"]))
        runs["api veth"] = timed(lambda: sandbox.run(["true"], net="veth", check=True))
    samples = interleaved(runs, cfg.net_warmup, cfg.net_reps)
    return [
        Result(f"7. --net {mode}, {which}, vs the same run without it", median_ms(samples[f"{key} {tag}"]),
               median_ms(samples[key]), "ms", n=cfg.net_reps).extra_goal(goal)
        for mode, tag, goal in (("none", "net", 20.0), *((("veth", "veth", 60.0),) if veth else ()))
        for which, key in (("command", "cli"), ("API, warm", "api"))
    ]


# -- figure 8: capturing a job's output -------------------------------------------------------------


def fig_capture(cfg: Config) -> list[Result]:
    size = cfg.capture_mib << 20
    argv = ["head", "-c", str(size), "/dev/zero"]

    def capture(run: Callable[..., subprocess.CompletedProcess]) -> Callable[[], float]:
        def sample() -> float:
            start = time.perf_counter()
            result = run(argv, capture_output=True, check=True)
            elapsed = time.perf_counter() - start
            if len(result.stdout) != size:
                raise RuntimeError(f"captured {len(result.stdout)} bytes of {size}")
            return elapsed
        return sample

    samples = interleaved({"ours": capture(sandbox.run), "subprocess": capture(subprocess.run)},
                          cfg.capture_warmup, cfg.capture_reps)
    return [Result(f"8. capture_output of {cfg.capture_mib} MiB vs subprocess.run", median_ms(samples["ours"]),
                   median_ms(samples["subprocess"]), "ms", n=cfg.capture_reps).ratio_goal(1.1)]


# -- figure 9: where a job's CPU goes ----------------------------------------------------------------


def stat_fields(pid: int | str) -> list[str]:
    """/proc/PID/stat's fields after the command name (index 0 is the state)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def kernel_threads_ticks() -> int:
    """CPU ticks every kernel thread has used (machine-wide: namespace teardown, RCU, workqueues; other
    processes' work shows here too)."""
    total = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                fields = stat_fields(name)
            except (OSError, IndexError):
                continue
            if int(fields[6]) & PF_KTHREAD:
                total += int(fields[11]) + int(fields[12])
    return total


@dataclass
class CpuUse:
    """CPU seconds and minor page faults, by owner."""

    caller: float = 0.0  # this process (the caller of the API, or of subprocess.run)
    caller_faults: int = 0
    server: float = 0.0  # the spawn server itself
    server_faults: int = 0
    reaped: float = 0.0  # what the spawn server (ours) or this process (a baseline) reaped: reapers and jobs
    reaped_faults: int = 0
    kernel: float = 0.0  # kernel threads, machine-wide
    wall: float = 0.0
    # The server's children alive when measured, by (pid, start time): (CPU seconds, minor faults), their own
    # and their reaped children's. After a subtraction: empty, their share added to reaped.
    alive: dict = field(default_factory=dict)

    def __sub__(self, other: CpuUse) -> CpuUse:
        out = CpuUse(*(a - b for a, b in zip(astuple(self)[:-1], astuple(other)[:-1], strict=True)))
        for key, (cpu, faults) in self.alive.items():  # alive at the end: what they used since the start
            then = other.alive.get(key, (0.0, 0))
            out.reaped += cpu - then[0]
            out.reaped_faults += faults - then[1]
        for key, (cpu, faults) in other.alive.items():  # gone by the end: reaped, counted whole in reaped
            if key not in self.alive:
                out.reaped -= cpu
                out.reaped_faults -= faults
        return out

    def __add__(self, other: CpuUse) -> CpuUse:
        return CpuUse(*(a + b for a, b in zip(astuple(self)[:-1], astuple(other)[:-1], strict=True)))


def usage_now(server: int | None, kernel: bool = True, ending: bool = False) -> CpuUse:
    """What has been used so far. server: our spawn server's PID (its children are reapers, which reaped their
    jobs); None for a baseline, whose processes this process reaps itself. Our own time and the clock are read
    nearest the work measured (last when it begins, first when it ends): reading /proc is not the work."""
    out = CpuUse()

    def own() -> None:
        used = resource.getrusage(resource.RUSAGE_SELF)
        out.caller, out.caller_faults = used.ru_utime + used.ru_stime, used.ru_minflt

    if ending:
        out.wall = time.perf_counter()
        own()
    if server is not None:
        fields = stat_fields(server)
        out.server = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        out.server_faults = int(fields[7])
        out.reaped = (int(fields[13]) + int(fields[14])) / CLOCK_TICKS
        out.reaped_faults = int(fields[8])
        out.alive = {}
        for pid in children(server):  # reapers alive now (they may live on for the next job): theirs so far
            try:
                fields = stat_fields(pid)
            except OSError:
                continue
            out.alive[(pid, fields[19])] = (sum(int(x) for x in fields[11:15]) / CLOCK_TICKS,
                                            int(fields[7]) + int(fields[8]))
    else:
        waited = resource.getrusage(resource.RUSAGE_CHILDREN)
        out.reaped, out.reaped_faults = waited.ru_utime + waited.ru_stime, waited.ru_minflt
    if kernel:
        out.kernel = kernel_threads_ticks() / CLOCK_TICKS
    if not ending:
        own()
        out.wall = time.perf_counter()
    return out


def measured(batch: Callable[[], object], server: int | None, kernel: bool = True) -> tuple[CpuUse, object]:
    """CPU used by one call of batch, by owner (and what it returned)."""
    before = usage_now(server, kernel)
    result = batch()
    return usage_now(server, kernel, ending=True) - before, result


def spawn_true() -> None:
    """`true` started as the reaper starts a job (posix_spawn), and waited for."""
    pid = os.posix_spawnp("true", ["true"], os.environ)
    os.waitpid(pid, 0)


def warm_server(cfg: Config) -> int:
    """Warm this process's spawn server up with a few runs; its PID."""
    for _ in range(cfg.latency_warmup):
        sandbox.run(["true"], check=True)
    current = spawner.current()
    if current is None:
        raise RuntimeError("cannot find the spawn server's PID (sandbox.api.spawner.current())")
    return current.pid


def fig_account(cfg: Config) -> list[Result]:
    n, rounds = cfg.account_runs, cfg.account_rounds
    server = warm_server(cfg)
    bwrap = bwrap_problem() is None
    ours = theirs = alone = CpuUse()
    job_cpu = 0.0

    def our_batch() -> float:
        used = 0.0
        for _ in range(n):
            done = sandbox.run(["true"], check=True)
            used += done.usage.user + done.usage.system if done.usage is not None else float("nan")
        settled(server)
        return used

    for _ in range(rounds):  # interleaved, so that a busy neighbour weighs on both alike
        used, job = measured(our_batch, server)
        ours, job_cpu = ours + used, job_cpu + job
        if bwrap:
            theirs += measured(lambda: [run_checked([*BWRAP, "true"]) for _ in range(n)], None)[0]
        alone += measured(lambda: [spawn_true() for _ in range(n)], None, kernel=False)[0]
    runs = n * rounds

    def per_job(seconds: float) -> float:
        return seconds * 1000.0 / runs

    def faults(count: float) -> str:
        return f"{count / runs:.0f} minor faults/job"

    true_cpu, true_faults = per_job(alone.reaped), alone.reaped_faults
    reaper_cpu = per_job(ours.reaped - job_cpu)
    title = "9. CPU per job of sandbox.run(true)"
    base = theirs if bwrap else None

    def baseline(value: float) -> float | None:
        return value if base is not None else None

    total = per_job(ours.caller + ours.server + ours.reaped + ours.kernel)
    bwrap_total = per_job(theirs.caller + theirs.reaped + theirs.kernel)
    vs = " vs subprocess.run(bwrap ... true)" if bwrap else ""
    return [
        Result(f"{title}: the caller{vs}", per_job(ours.caller), baseline(per_job(theirs.caller)), "ms", n=runs,
               note=f"{faults(ours.caller_faults)}" + (f" (baseline {faults(theirs.caller_faults)})" if bwrap else "")),
        Result(f"{title}: the spawn server", per_job(ours.server), None, "ms", n=runs,
               note=f"{faults(ours.server_faults)}; forking the next ready reaper is its share"),
        Result(f"{title}: the reaper (PID 1){' vs bwrap' if bwrap else ''}", reaper_cpu,
               baseline(per_job(theirs.reaped) - true_cpu), "ms", n=runs,
               note=f"about {faults(ours.reaped_faults - true_faults)}: what the spawn server reaped, less its "
                    f"jobs' own CPU (their usage) and faults (those of `true` alone); the baseline is every bwrap "
                    f"process, less `true` alone" + (f", about {faults(theirs.reaped_faults - true_faults)}"
                                                      if bwrap else "")),
        Result(f"{title}: the job (true) vs true alone", per_job(job_cpu), true_cpu, "ms", n=runs,
               note=f"the reaper's getrusage(RUSAGE_CHILDREN) as sandbox.run's usage says it; alone: posix_spawn "
                    f"from this process, {faults(true_faults)}"),
        Result(f"{title}: kernel threads, machine-wide", per_job(ours.kernel), baseline(per_job(theirs.kernel)),
               "ms", n=runs, note="namespace teardown, RCU, workqueues: other processes' share included"),
        Result(f"{title}: total{vs}", total, baseline(bwrap_total), "ms", n=runs,
               note=f"wall {per_job(ours.wall):.2f} ms/job" + (f" (bwrap {per_job(theirs.wall):.2f})" if bwrap else "")
                    + "; CPU from getrusage and /proc/PID/stat (ticks of 1/"
                    f"{CLOCK_TICKS} s, over {runs} jobs)"),
    ]


# -- figure 10: an option unused costs nothing ------------------------------------------------------


def settled(server: int) -> None:
    """Wait (briefly) until the spawn server has reaped every reaper that exited: one that ends with its run is
    reaped a moment after the run returns, and its CPU counts then."""
    deadline = time.monotonic() + 1.0
    time.sleep(0.005)
    while time.monotonic() < deadline:
        states = []
        for pid in children(server):
            try:
                states.append(stat_fields(pid)[0])
            except OSError:
                continue
        if "Z" not in states:
            return
        time.sleep(0.001)


def fig_unused_options(cfg: Config) -> list[Result]:
    """sandbox.run(true) against the same run with the caller's option machinery taken out: Popen is handed
    the options it would choose, checked and built once (keywords.choose: every option's check, the spec,
    the host check, the caveats, the registry). The spec still travels and the reaper still looks at each
    of its fields: benchmarks/wire.py measures the message apart."""
    from sandbox.api import popen

    server = warm_server(cfg)
    chosen = popen.choose({})
    real_choose = popen.choose
    n, rounds = cfg.account_runs, cfg.account_rounds * 4
    walls: dict[str, list[float]] = {"plain": [], "bare": []}
    cpus: dict[str, list[float]] = {"plain": [], "bare": []}

    def batch(which: str) -> Callable[[], float]:
        def runs() -> float:
            if which == "bare":
                popen.choose = lambda options: chosen
            try:
                start = time.perf_counter()
                for _ in range(n):
                    sandbox.run(["true"], check=True)
                elapsed = time.perf_counter() - start
            finally:
                popen.choose = real_choose
            settled(server)
            return elapsed

        return runs

    for index in range(rounds):  # batches in turn, so that a busy neighbour weighs on both alike
        for which in ("plain", "bare") if index % 2 == 0 else ("bare", "plain"):
            spent, elapsed = measured(batch(which), server, kernel=False)
            walls[which].append(elapsed * 1000.0 / n)  # the runs alone, not the wait for the server to reap
            cpus[which].append((spent.caller + spent.server + spent.reaped) * 1000.0 / n)

    title = "10. options all unused: sandbox.run(true) vs the same without the option machinery"
    note = f"median over {rounds} batches of {n} runs each, interleaved"
    return [
        Result(f"{title}, wall", statistics.median(walls["plain"]), statistics.median(walls["bare"]), "ms",
               n=rounds * n, note=note).extra_goal(0.05),
        Result(f"{title}, CPU", statistics.median(cpus["plain"]), statistics.median(cpus["bare"]), "ms",
               n=rounds * n, note=f"caller + spawn server + reaper + job, per job; {note}").extra_goal(0.05),
    ]


# -- figure 11: the price of --root ------------------------------------------------------------------


def busybox_root(directory: str) -> str:
    """A root file system of busybox in directory: /bin/busybox with /bin/true, empty /proc and /dev."""
    busybox = shutil.which("busybox")
    if busybox is None:
        raise RuntimeError("no busybox on this machine (apt-get install busybox-static)")
    os.makedirs(os.path.join(directory, "bin"))
    shutil.copy(busybox, os.path.join(directory, "bin", "busybox"))
    os.symlink("busybox", os.path.join(directory, "bin", "true"))
    for name in ("proc", "dev"):
        os.mkdir(os.path.join(directory, name))
    return directory


def fig_root(cfg: Config) -> list[Result]:
    cli = cli_path()
    with tempfile.TemporaryDirectory(prefix="bench-root-") as tmp:
        root = busybox_root(os.path.join(tmp, "root"))
        samples = interleaved({
            "cli": timed(lambda: run_checked([cli, "--", "true"])),
            "cli root": timed(lambda: run_checked([cli, "--root", root, "--", "true"])),
            "api": timed(lambda: sandbox.run(["true"], check=True)),
            "api root": timed(lambda: sandbox.run(["true"], root=root, check=True)),
        }, cfg.root_warmup, cfg.root_reps)
    return [
        Result(f"11. --root (busybox), {which}, vs the same run without it", median_ms(samples[f"{key} root"]),
               median_ms(samples[key]), "ms", n=cfg.root_reps).extra_goal(10.0)
        for which, key in (("command", "cli"), ("API, warm", "api"))
    ]


# -- output -----------------------------------------------------------------------------------------


def machine() -> dict[str, object]:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version()}


# Other work on the machine skews every figure, so the machine line says how much of the CPUs other
# processes took, just before the run and during it. Counted per process, from /proc/PID/stat: the
# system-wide busy time would also count kernel threads tearing down our namespaces as "others".
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PF_KTHREAD = 0x00200000


def total_cpu_ticks() -> int:
    """CPU ticks since boot, busy or idle, summed over all cores."""
    with open("/proc/stat") as f:
        return sum(int(x) for x in f.readline().split()[1:])


def others_cpu_ticks() -> dict[tuple[int, int], int]:
    """(pid, start time) -> CPU ticks used, for every user-space process that is not ours.

    A process's ticks include those of the children it has reaped. Ours are this process, its
    descendants, and anything carrying RUN_ID (orphans of figure 4's callers). Zombies are skipped:
    their environment can no longer be read, and their time goes to whoever reaps them. Our
    ancestors count only their own time: orphans of ours are reaped by PID 1 or a subreaper above us.
    """
    stats: dict[int, list[str]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    stats[int(name)] = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
    ours = {os.getpid()}
    for pid in sorted(stats, key=lambda p: int(stats[p][19])):  # by start time: parents first
        if int(stats[pid][1]) in ours:
            ours.add(pid)
    ancestors = set()
    pid = os.getppid()
    while pid in stats and pid not in ancestors:
        ancestors.add(pid)
        pid = int(stats[pid][1])
    out = {}
    for pid, fields in stats.items():
        if pid in ours or fields[0] == "Z" or int(fields[6]) & PF_KTHREAD or _environ_has(pid, RUN_ID.encode()):
            continue
        times = [int(x) for x in fields[11:15]]  # utime, stime, cutime, cstime
        out[(pid, int(fields[19]))] = sum(times[:2]) if pid in ancestors else sum(times)
    return out


class OthersCpu:
    """From its creation on: the percent of all CPU time that processes other than ours used."""

    def __init__(self) -> None:
        self.total = total_cpu_ticks()
        self.ticks = others_cpu_ticks()

    def percent(self) -> float:
        total, ticks = total_cpu_ticks(), others_cpu_ticks()
        # A process that started meanwhile counts whole; one that ended meanwhile is lost, unless
        # a parent that was there both times reaped it, which then gains its whole life's time:
        # an indication, not an exact share, hence the clamp.
        used = sum(value - self.ticks.get(key, 0) for key, value in ticks.items())
        return round(min(100.0, max(0.0, 100.0 * used / max(1, total - self.total))), 1)


def machine_line(info: dict[str, object], cfg: Config) -> str:
    line = (f"Machine: {info['cpu']}, {info['cores']} cores, Linux {info['kernel']}, Python {info['python']}; "
            f"{cfg.mode} run; other processes' share of the CPUs: {info['others_cpu_before']:.0f}% before")
    if "others_cpu_during" in info:
        line += f", {info['others_cpu_during']:.0f}% during"
    return line


def fmt(value: float | bool | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    digits = 0 if unit in ("jobs/s", "processes") else 2 if abs(value) < 100 else 1
    return f"{value:.{digits}f} {unit}".rstrip()


def row(result: Result) -> list[str]:
    ratio = result.ratio
    met = "-" if result.met is None else "yes" if result.met else "NO"
    return [result.name, fmt(result.ours, result.unit), fmt(result.baseline, result.unit),
            "-" if ratio is None else f"{ratio:.2f}x", result.goal or "-", met, str(result.n or "-")]


HEADER = ["Figure", "Ours", "Baseline", "Ratio", "Goal", "Met", "n"]


def plain_table(results: list[Result]) -> str:
    rows = [HEADER] + [row(r) for r in results]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]

    def line(cells: list[str]) -> str:
        # The figure's name left-aligned, the numbers right-aligned.
        padded = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(padded)

    lines = [line(r) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    notes = [f"  {r.name}: {r.note}" for r in results if r.note]
    return "\n".join(lines + (["", "Notes:"] + notes if notes else []))


def markdown_table(results: list[Result]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join(["---"] + ["---:"] * (len(HEADER) - 1)) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row(r)) + " |" for r in results]
    notes = [f"- {r.name}: {r.note}" for r in results if r.note]
    return "\n".join(lines + ([""] + notes if notes else []))


def write_json(path: str, results: list[Result], info: dict[str, object], cfg: Config, seconds: float) -> None:
    document = {"machine": info, "config": asdict(cfg), "seconds": round(seconds, 1),
                "results": [{**asdict(r), "ratio": r.ratio} for r in results]}
    with open(path, "w") as f:
        json.dump(document, f, indent=2)
        f.write("\n")


# -- main -------------------------------------------------------------------------------------------

FIGURES: list[tuple[str, Callable[[Config], list[Result]]]] = [
    ("1. API latency", fig_api_latency),
    ("2. CLI start-up", fig_cli),
    ("3. teardown", fig_teardown),
    ("4. caller SIGKILLed", fig_caller_killed),
    ("5. throughput", fig_throughput),
    ("6. memory", fig_memory),
    ("7. --net none", fig_net_none),
    ("8. capture_output", fig_capture),
    ("9. CPU account", fig_account),
    ("10. unused options", fig_unused_options),
    ("11. --root", fig_root),
]


def run_figures(cfg: Config, only: list[str] | None = None) -> tuple[list[Result], int]:
    """Every figure (only: those numbered so), each failure recorded as a row instead of ending the run;
    returns (results, failures)."""
    results: list[Result] = []
    failures = 0
    for title, figure in FIGURES:
        if only is not None and title.split(".")[0] not in only:
            continue
        progress(f"{title} ...")
        start = time.perf_counter()
        try:
            results += figure(cfg)
        except Exception as exc:  # noqa: BLE001 - reported in the table, the other figures still run
            failures += 1
            results.append(Result(title, None, None, "", goal="runs", met=False, note=f"failed: {exc!r}"))
        progress(f"{title} done in {time.perf_counter() - start:.1f} s")
    return results, failures


def compile_project() -> None:
    """Byte-compile our modules, as a regular pip install does: an editable install leaves them to be
    compiled on every start when PYTHONDONTWRITEBYTECODE is set, which is not what users run."""
    import sandbox
    import sandboxed_run_helpers

    for package in (sandbox, sandboxed_run_helpers):
        subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.dirname(package.__file__)], check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (CI smoke test, about a minute)")
    parser.add_argument("--json", metavar="FILE", help="also write the results to FILE as JSON")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table for the README")
    parser.add_argument("--only", metavar="N[,N...]", help="only these figures, by number (e.g. 1,9)")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    compile_project()
    info = machine()
    before = OthersCpu()
    time.sleep(0.5)
    info["others_cpu_before"] = before.percent()
    start, during = time.perf_counter(), OthersCpu()
    try:
        results, failures = run_figures(cfg, args.only.split(",") if args.only else None)
        info["others_cpu_during"] = during.percent()
    except KeyboardInterrupt:
        progress("interrupted")
        return 130
    finally:
        strays = kill_marked(RUN_ID.encode())  # even after Ctrl+C or a crash inside a figure
        if strays:
            progress(f"killed {strays} stray processes")
    if strays:
        failures += 1
        results.append(Result("stray processes at the end", float(strays), None, "processes", goal="none", met=False))
    seconds = time.perf_counter() - start
    if args.markdown:
        print(markdown_table(results))
        print()
        print(machine_line(info, cfg))
    else:
        print(machine_line(info, cfg))
        print()
        print(plain_table(results))
    judged = [r for r in results if r.met is not None]
    summary = f"Goals met: {sum(bool(r.met) for r in judged)}/{len(judged)}; took {seconds:.0f} s."
    # With --markdown, stdout stays exactly what to paste.
    print(summary if args.markdown else f"\n{summary}", file=sys.stderr if args.markdown else sys.stdout)
    if args.json:
        write_json(args.json, results, info, cfg, seconds)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

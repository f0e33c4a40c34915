"""What the tests share: finding our processes from outside, a pseudo-terminal, small job programs."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sandboxed_run_helpers.shared.options import BY_NAME

MARK = "SANDBOXED_RUN_TEST"
PYTHON = sys.executable
CLI = str(Path(sys.executable).with_name("sandboxed-run"))


def wait_for(condition: Callable[[], object], timeout: float = 15.0, interval: float = 0.02) -> bool:
    """Poll until condition() is true; generous deadlines, since timing is the benchmarks' business."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())


def stays(condition: Callable[[], object], seconds: float, interval: float = 0.02) -> bool:
    """The one negative wait: whether condition() held at every look for `seconds` ("nothing arrives within 1 s":
    stays(lambda: not arrived(), 1.0); "it is still running after 0.5 s": stays(lambda: p.poll() is None, 0.5)).
    False at the first look where it does not hold, so a failure shows at once.

    A negative wait proves only that nothing happened so far, and a loaded machine may be slow to do what must not
    happen: give it the time the thing would take if it were to happen (a signal's delivery, a relay's
    relay.SETTLE, a process's exit: tenths of a second), never less, and never rely on it for a positive result
    (that is wait_for's, with its generous deadline)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not condition():
            return False
        time.sleep(min(interval, max(0.0, end - time.monotonic())))
    return bool(condition())


def marked_processes(token: str, exclude: set[int] = frozenset()) -> list[int]:
    """PIDs (as the host sees them) of live processes whose environment carries the test's mark."""
    needle = f"{MARK}={token}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in exclude:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read().split(b"\0")
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in environ and state != b"Z":
            found.append(int(entry))
    return found


# A task's flags in /proc/PID/stat: set from the start of its exit, and for kernel threads.
PF_EXITING = 0x4
PF_KTHREAD = 0x200000


def exiting_processes() -> list[int]:
    """PIDs of processes in the middle of their exit: their memory (and with it the environment that carries
    the mark) is gone before their descriptors are closed, so a listening socket or a loop device they held
    may still be open. Whose they are cannot be told any more; any is waited for, and they last moments."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        state, flags = fields[0], int(fields[6])
        if flags & PF_EXITING and not flags & PF_KTHREAD and state not in (b"Z", b"X"):
            found.append(int(entry))
    return found


def all_ended(token: str, exclude: set[int] = frozenset()) -> bool:
    """Whether every process with the test's mark has ended, descriptors closed (not merely lost its mark)."""
    return not marked_processes(token, exclude) and not exiting_processes()


def fill(fd: int, piece: bytes = b"x" * 4096) -> int:
    """Write to fd until it has no room left (a reader who stopped reading); fd stays blocking, as a
    caller's descriptor would be. Returns fd."""
    os.set_blocking(fd, False)
    try:
        while True:
            os.write(fd, piece)
    except BlockingIOError:
        pass
    os.set_blocking(fd, True)
    return fd


def full_pipe() -> tuple[int, int]:
    """A pipe with no room left, whose reader reads nothing until the test says so: (read end, write end)."""
    r, w = os.pipe()
    return r, fill(w)


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def this_process() -> set[int]:
    """This test process, its spawn server and the server's idle reaper (for an ordinary user, under the parent
    that made its user namespace): marked, but expected to live on."""
    from sandbox.api import spawner

    pids = {os.getpid()}
    server = spawner.current().pid if spawner.current() is not None else None
    if server:
        pids.add(server)
        for pid in children(server):
            below = children(pid)
            if not below:
                pids.add(pid)
            elif cmdline(pid) == "sandbox-userns" and len(below) == 1 and not children(below[0]):
                pids.update((pid, below[0]))
    return pids


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def trap_script_running(token: str, directory: Path) -> bool:
    """The seed script is in its steady state: files made, tail running (a Ctrl+C between touch and
    tail would reach neither, and bash would then wait for tail forever, with or without us)."""
    return all((directory / name).exists() for name in "abc") and any(
        cmdline(pid) == "tail -q -f a b c" for pid in marked_processes(token))


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def signal_of(status: int) -> int | None:
    return os.WTERMSIG(status) if os.WIFSIGNALED(status) else None


def host_mounts() -> set[str]:
    with open("/proc/self/mountinfo") as f:
        return {line.split()[4] for line in f}


def host_links(prefix: str = "sr-") -> set[tuple[str, int]]:
    """The host's network links whose name starts with prefix (--net veth's host ends), with their index (a
    name comes back for a new link)."""
    found = set()
    for name in os.listdir("/sys/class/net"):
        if name.startswith(prefix):
            try:
                found.add((name, int(Path(f"/sys/class/net/{name}/ifindex").read_text())))
            except (OSError, ValueError):
                pass  # gone meanwhile
    return found


def loop_devices() -> dict[str, str]:
    """Attached loop devices: backing file -> /dev/loopN."""
    found = {}
    for dev in Path("/sys/block").glob("loop*"):
        try:
            found[(dev / "loop" / "backing_file").read_text().strip()] = f"/dev/{dev.name}"
        except OSError:
            continue
    return found


class Terminal:
    """A program run as the session leader and foreground job of a fresh pseudo-terminal."""

    def __init__(self, argv: list[str], cwd: str | Path, env: dict[str, str] | None = None) -> None:
        pid, fd = pty.fork()
        if pid == 0:
            try:
                os.chdir(cwd)
                for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP, signal.SIGPIPE, signal.SIGHUP,
                            signal.SIGTERM):
                    signal.signal(sig, signal.SIG_DFL)
                os.execvpe(argv[0], argv, env if env is not None else os.environ)
            finally:
                os._exit(127)
        self.pid = pid
        self.fd = fd
        self.output = bytearray()
        self.status: int | None = None

    def type(self, data: bytes) -> None:
        os.write(self.fd, data)

    def ctrl_c(self) -> None:
        self.type(b"\x03")

    def _drain(self, timeout: float) -> bool:
        """Read what the terminal shows; False once nothing more can come (end of file or EIO)."""
        if select.select([self.fd], [], [], timeout)[0]:
            try:
                data = os.read(self.fd, 65536)
            except OSError:
                return False
            self.output += data
            return bool(data)
        return True

    def expect(self, text: bytes, timeout: float = 15.0) -> bool:
        end = time.monotonic() + timeout
        while text not in self.output and time.monotonic() < end:
            self._drain(0.02)
            if self.poll() is not None:
                self._drain(0.05)
                break
        return text in self.output

    def poll(self) -> int | None:
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = status
        return self.status

    def wait(self, timeout: float = 30.0) -> int | None:
        end = time.monotonic() + timeout
        while self.poll() is None and time.monotonic() < end:
            self._drain(0.02)
        # What it wrote just before exiting may still sit in the terminal.
        while self.status is not None and self._drain(0.05) and select.select([self.fd], [], [], 0)[0]:
            pass
        return self.status

    def close(self) -> None:
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            self.status = -1
        try:
            os.killpg(self.pid, signal.SIGKILL)  # what the session leader ran in its own group
        except ProcessLookupError:
            pass
        os.close(self.fd)


# A job that notes every signal it gets, then cleans up for a while (like a trap) and dies of it.
SIGNAL_JOB = r"""
import os, signal, sys, time
log, cleanup, mode = sys.argv[1], float(sys.argv[2]), sys.argv[3]
def note(text):
    with open(log, "a") as f:
        f.write(text + "\n")
def handler(sig, frame):
    note(signal.Signals(sig).name)
    if mode == "ignore":
        return
    time.sleep(cleanup)
    note("cleaned")
    if mode == "exit0":
        os._exit(0)
    signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)
for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2"):
    signal.signal(getattr(signal, name), handler)
note("ready %d" % os.getpid())
while True:
    time.sleep(1)
"""


def signal_job(tmp_path: Path, cleanup: float = 0.0, mode: str = "die") -> tuple[list[str], Path]:
    """argv of a SIGNAL_JOB and its log file."""
    script = tmp_path / "signal_job.py"
    script.write_text(SIGNAL_JOB)
    log = tmp_path / "signals.log"
    return [PYTHON, str(script), str(log), str(cleanup), mode], log


def kill_and_expect_a_graceful_stop(caller, log: Path, token: str) -> None:
    """SIGKILL a launcher or API caller whose SIGNAL_JOB is ready: the job must get SIGTERM, finish its
    cleanup within the grace period, and then nothing of the test may remain."""
    caller.kill()
    caller.wait()
    assert wait_for(lambda: "cleaned" in log_lines(log))
    assert log_lines(log)[1:] == ["SIGTERM", "cleaned"]
    assert wait_for(lambda: all_ended(token, {os.getpid()}))


def ctrl_c_on_a_signal_job(argv: list[str], directory: Path, log: Path) -> tuple[int | None, list[str], bytes]:
    """Run argv (which runs a SIGNAL_JOB) in a terminal, press Ctrl+C once it is ready; return the exit
    status, the job's log as it was when argv exited, and what the terminal showed."""
    term = Terminal(argv, directory)
    try:
        assert wait_for(lambda: log_lines(log)), term.output
        term.ctrl_c()
        status = term.wait()
        lines_at_exit = log_lines(log)
    finally:
        term.close()
    return status, lines_at_exit, bytes(term.output)


def log_lines(log: Path) -> list[str]:
    try:
        return log.read_text().splitlines()
    except FileNotFoundError:
        return []


# The seed's script: sets up three files and removes them, slowly, in an EXIT trap.
TRAP_SCRIPT = """#!/usr/bin/env bash
set -eu
trap 'rm -f a && sleep 0.2 && rm -f b && sleep 0.2 && rm -f c' EXIT
touch a b c
tail -q -f a b c
"""


def ctrl_c_on_the_seed(argv: list[str], directory: Path, token: str) -> tuple[int | None, bytes, list[str]]:
    """Run argv (which runs the seed script) in a terminal, press Ctrl+C once the script is in its steady
    state; return the exit status, what the terminal showed, and the seed's files left when it exited."""
    trap_script(directory)
    term = Terminal(argv, directory)
    try:
        assert wait_for(lambda: trap_script_running(token, directory)), term.output
        term.ctrl_c()
        status = term.wait()
        left_at_exit = [name for name in "abc" if (directory / name).exists()]
    finally:
        term.close()
    return status, bytes(term.output), left_at_exit


def trap_script(directory: Path) -> Path:
    path = directory / "trap_script"
    path.write_text(TRAP_SCRIPT)
    path.chmod(0o755)
    return path


# -- block devices, hooks and status --------------------------------------------------------------------

BIN = Path(sys.executable).parent
MOUNT_IMAGE = str(BIN / "sandbox-mount-image")
OPEN_LUKS = str(BIN / "sandbox-open-luks")

# Mounts an image with the helper on a private tmpfs, says so in a flag file, then exits or waits.
IMAGE_JOB = """
set -e
mkdir -p /mnt/target
"$HELPER" "$1" /mnt/target
echo mounted > "$2"
if [ "$3" = exit ]; then exit 0; fi
sleep 1000
"""


def make_image(directory: Path, size: str = "8M") -> Path:
    import subprocess

    image = directory / "image.ext4"
    subprocess.run(["truncate", "-s", size, str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", str(image)], check=True)
    return image


def image_job(image: Path, flag: Path, then: str = "wait") -> list[str]:
    """argv (for after sandboxed-run's options) of a job that mounts image with sandbox-mount-image."""
    return ["--tmpfs", "/mnt", "--setenv", f"HELPER={MOUNT_IMAGE}", "--",
            "bash", "-c", IMAGE_JOB, "job", str(image), str(flag), then]


def read_status(path: Path) -> list[dict]:
    """The events of a status file (--json-status, or an API program's on_event written as JSON lines), each
    checked against docs/status.schema.json; [] while there is no file."""
    try:
        return status_events(path.read_text(), str(path))
    except FileNotFoundError:
        return []


def status_events(text: str | bytes, where: str = "status stream") -> list[dict]:
    """The events of a status stream's lines (lines that are not JSON objects, a hook's own output on the same
    descriptor, say, are left out), each checked against docs/status.schema.json."""
    import json

    if isinstance(text, bytes):
        text = text.decode()
    events = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    for event in events:
        check_event(event, where)
    return events


def names(events: list[dict]) -> list[str]:
    return [e["event"] for e in events]


def hook_command(image: Path, log: Path) -> str:
    """An --on-exit hook that notes how many loop devices still back image, and what it was told."""
    return (f"n=$(grep -lx '{image}' /sys/block/loop*/loop/backing_file 2>/dev/null | wc -l); "
            f"echo \"loops=$n code=$SANDBOXED_RUN_EXIT_CODE signal=$SANDBOXED_RUN_SIGNAL "
            f"status=$SANDBOXED_RUN_STATUS reason=$SANDBOXED_RUN_STOP_REASON\" >> '{log}'")


API_IMAGE_CALLER = """
import sys, sandbox
image, flag, hook = sys.argv[1:4]
sandbox.run(["bash", "-c", sys.argv[4], "job", image, flag, "wait"], tmpfs=["/mnt"], grace=5,
            env={"HELPER": sys.argv[5], "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, on_exit=[hook])
"""


class Ending:
    """One image job run to one kind of end; what the host saw afterwards."""

    def __init__(self, tmp_path: Path, how: str) -> None:
        import subprocess

        self.image = make_image(tmp_path)
        self.flag = tmp_path / "mounted"
        self.status_file = tmp_path / "status.jsonl"
        self.hook_log = tmp_path / "hook.log"
        self.status: int | None = None
        self.mounted_seen = False
        hook = hook_command(self.image, self.hook_log)
        options = ["--grace", "5", "--json-status", str(self.status_file), "--on-exit", hook]
        if how == "exit":
            result = subprocess.run([CLI, *options, *image_job(self.image, self.flag, "exit")], cwd=tmp_path)
            self.status = result.returncode
        elif how == "timeout":
            result = subprocess.run([CLI, "--timeout", "1", *options, *image_job(self.image, self.flag)], cwd=tmp_path)
            self.status = result.returncode
        elif how == "ctrl-c":
            term = Terminal([CLI, *options, *image_job(self.image, self.flag)], tmp_path)
            try:
                self.mounted_seen = wait_for(self.flag.exists) and str(self.image) in loop_devices()
                term.ctrl_c()
                self.status = term.wait()
            finally:
                term.close()
        elif how in ("launcher-sigkill", "all-sigkill"):
            launcher = subprocess.Popen([CLI, *options, *image_job(self.image, self.flag)], cwd=tmp_path,
                                        start_new_session=True)
            try:
                self.mounted_seen = wait_for(self.flag.exists) and str(self.image) in loop_devices()
                if how == "all-sigkill":
                    os.kill(children(launcher.pid)[0], signal.SIGKILL)
            finally:
                launcher.kill()
                self.status = launcher.wait()
        elif how == "api-caller-sigkill":
            caller = subprocess.Popen([PYTHON, "-c", API_IMAGE_CALLER, str(self.image), str(self.flag), hook,
                                       IMAGE_JOB, MOUNT_IMAGE], cwd=tmp_path, start_new_session=True)
            try:
                self.mounted_seen = wait_for(self.flag.exists) and str(self.image) in loop_devices()
            finally:
                caller.kill()
                self.status = caller.wait()
        else:
            raise ValueError(how)

    def loop_gone(self) -> bool:
        return wait_for(lambda: str(self.image) not in loop_devices())

    def hook_lines(self, timeout: float = 15.0) -> list[str]:
        wait_for(lambda: log_lines(self.hook_log), timeout=timeout)
        return log_lines(self.hook_log)

    def events(self) -> list[dict]:
        return read_status(self.status_file)


# This test session's mark in the names its sandboxes take: several sessions (checkouts, the VM's guest over the
# host's /tmp) share a registry, and each session's leftover check removes only its own dead entries.
SESSION = uuid.uuid4().hex[:4]


def unique_name() -> str:
    """A registry name no other test or session uses: t-, this session's mark, then six hex digits."""
    return f"t-{SESSION}{uuid.uuid4().hex[:6]}"


@contextmanager
def launched(argv: list[str], **kwargs) -> Iterator[subprocess.Popen]:
    """A process of the test's (a launcher, an API caller): SIGKILLed and reaped if the test leaves it running."""
    process = subprocess.Popen(argv, **kwargs)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def cli_words(options: dict) -> list[str]:
    """The command line's spelling of API options (a list repeats the flag; a tuple is joined with ':'; an
    int umask is written in octal, as the command reads it)."""
    words = []
    for name, value in options.items():
        flag = BY_NAME[name].flag if name in BY_NAME else "--" + name.replace("_", "-")
        if value is True:
            words.append(flag)
        elif value is False:
            words.append("--no-" + flag[2:])
        elif isinstance(value, list) and name == "extra_groups":
            words += [flag, ",".join(map(str, value))]
        elif isinstance(value, list):
            for item in value:
                words += [flag, ":".join(item) if isinstance(item, tuple) else item]
        elif name == "umask" and isinstance(value, int):
            words += [flag, oct(value)[2:].zfill(3)]
        else:
            words += [flag, str(value)]
    return words


def suspend_and_resume(term: Terminal, counter: Path) -> None:
    """Ctrl+Z at term stops the counting job in its foreground (its counter stands still) and fg resumes it
    to its end ("finished")."""
    assert wait_for(counter.exists)
    term.type(b"\x1a")  # Ctrl+Z
    assert term.expect(b"Stopped"), term.output
    frozen = counter.read_text()
    assert stays(lambda: counter.read_text() == frozen, 1.0), "it kept running while stopped"
    term.type(b"fg\n")
    assert term.expect(b"finished", timeout=30), term.output



# -- the status events' schema -------------------------------------------------------------------------------
# Every event the suite sees is checked against docs/status.schema.json: the API's where the caller records them
# (conftest wraps ReaperClient.emit and the hook runner's emit), the command's where a test reads a status
# stream (read_status, status_events). A violation fails the test that produced it (conftest).

SCHEMA = Path(__file__).resolve().parent.parent / "docs" / "status.schema.json"
schema_violations: list[str] = []  # what the running test produced that the schema refuses
events_checked = 0  # how many events were checked so far in this session: more than none, or nothing is checked


def check_event(event: dict, where: str) -> None:
    """Check one event as the stream writes it ({"event": NAME, "time": ..., fields}; the API's on_event(name,
    fields) is {"event": name, **fields}); note a violation for the test that produced it."""
    global events_checked
    from jsonschema.exceptions import best_match

    events_checked += 1
    error = best_match(_validator().iter_errors(event))
    if error is not None:
        path = "/".join(str(p) for p in error.absolute_path) or "(the event)"
        schema_violations.append(f"{where}: {event!r}: {path}: {error.message}")


def take_schema_violations() -> list[str]:
    """The violations noted since the last call, each once, in order; the list is emptied."""
    taken = list(dict.fromkeys(schema_violations))
    schema_violations.clear()
    return taken


_VALIDATOR = []


def _validator():
    if not _VALIDATOR:
        import json

        from jsonschema import Draft202012Validator

        schema = json.loads(SCHEMA.read_text())
        Draft202012Validator.check_schema(schema)
        _VALIDATOR.append(Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER))
    return _VALIDATOR[0]


class FakeClock:
    """A clock for the unit layer's Relays(clock=) and Stopping(clock=): time passes only when the test says."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


# -- one shell script through any entry point ------------------------------------------------------------

def through(entry: str, argv: list[str], options: dict) -> tuple[int, str, str]:
    """Run argv with these sandbox options through one entry point: (returncode, stdout, stderr), the output
    captured as text. The API's exceptions go on to the caller."""
    import asyncio

    import sandbox

    if entry == "cli":
        result = subprocess.run([CLI, *cli_words(options), "--", *argv], capture_output=True, text=True, timeout=120)
        return result.returncode, result.stdout, result.stderr
    if entry == "run":
        result = sandbox.run(argv, capture_output=True, text=True, **options)
        return result.returncode, result.stdout, result.stderr
    if entry == "Popen":
        with sandbox.Popen(argv, stdout=sandbox.PIPE, stderr=sandbox.PIPE, text=True, **options) as process:
            out, err = process.communicate()
        return process.returncode, out, err
    if entry == "Job":
        with sandbox.Job(**options) as job:
            result = job.run(argv, capture_output=True, text=True)
        return result.returncode, result.stdout, result.stderr

    async def main() -> tuple[int, str, str]:
        if entry == "run_async":
            done = await sandbox.run_async(argv, capture_output=True, **options)
            return done.returncode, done.stdout.decode(), done.stderr.decode()
        if entry == "create_process":
            process = await sandbox.create_process(argv, stdout=sandbox.PIPE, stderr=sandbox.PIPE, **options)
            out, err = await process.communicate()
            return process.returncode, out.decode(), err.decode()
        if entry == "AsyncJob":
            async with sandbox.AsyncJob(**options) as async_job:
                done = await async_job.run(argv, capture_output=True)
            return done.returncode, done.stdout.decode(), done.stderr.decode()
        raise ValueError(entry)
    return asyncio.run(main())


def timed_out_through(entry: str, argv: list[str], grace: float, **kwargs: object) -> subprocess.TimeoutExpired:
    """The TimeoutExpired that run() (or a Job's, run_async, an AsyncJob's) raises for argv with these keywords
    (a timeout among them), the sandbox's grace period being grace."""
    import asyncio

    import pytest

    import sandbox

    with pytest.raises(subprocess.TimeoutExpired) as expired:
        if entry == "run":
            sandbox.run(argv, grace=grace, **kwargs)
        elif entry == "Job":
            with sandbox.Job(grace=grace) as job:
                job.run(argv, **kwargs)
        elif entry == "run_async":
            asyncio.run(sandbox.run_async(argv, grace=grace, **kwargs))
        else:
            async def main() -> None:
                async with sandbox.AsyncJob(grace=grace) as async_job:
                    await async_job.run(argv, **kwargs)
            asyncio.run(main())
    return expired.value


def run_in(entry: str, options: dict, script: str) -> tuple[int, str, str]:
    """Run `sh -c script` through entry with these sandbox options; (status, stdout, stderr). A refusal before
    the start is status 125 with its message, as the command gives it."""
    import sandbox

    try:
        return through(entry, ["sh", "-c", script], options)
    except sandbox.SandboxError as exc:
        return 125, "", f"{exc}\n"
    except ValueError as exc:
        return 2, "", f"{exc}\n"  # a bad value: the command's usage status


def one_line(stderr: str) -> str:
    assert stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
    return stderr

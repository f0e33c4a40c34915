"""Limits and privileges on any machine: nice, ionice, rlimit, umask, no_new_privs and cap_drop,
read back from /proc inside the job through every entry point; the reaper keeps its own; a value the kernel
refuses, a bad value, a cgroup limit where the machine has no cgroup v2; and the usage every run reports.
The cgroup limits themselves are tested in the VM (tests/vm/test_cgroup_limits.py)."""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from test_isolation_options import AS_NOBODY
from test_named_users import free_uids

import sandbox
from sandboxed_run_helpers.shared import cgroups, limits, registry
from support import (
    CLI,
    MOUNT_IMAGE,
    PYTHON,
    children,
    cli_words,
    launched,
    make_image,
    read_status,
    timed_out_through,
    wait_for,
)

ENTRY_POINTS = ["cli", "run", "Popen", "Job", "run_async", "create_process", "AsyncJob"]

# What a process says of itself: its umask, capabilities, no_new_privs, niceness, I/O class and limits.
PROBE = r"""
grep -E '^(Umask|Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|SigIgn|SigBlk):' /proc/self/status
read -r stat < /proc/self/stat; set -- ${stat##*) }; shift 16; echo "Nice: $1"
echo "IO: $(ionice -p $$)"
grep -E '^Max (open files|core file size)' /proc/self/limits | tr -s ' '
"""

ATTRIBUTES = {"nice": 5, "ionice": "idle", "rlimit": ["NOFILE=100:200", "CORE=0"], "umask": 0o027,
              "no_new_privs": True, "cap_drop": ["CAP_SYS_ADMIN", "net_raw"]}
SYS_ADMIN, NET_RAW, CHOWN = 21, 13, 0


def through(entry: str, argv: list[str], options: dict, tmp_path: Path) -> tuple[int, str, sandbox.Usage | None,
                                                                                     list[tuple[str, dict]]]:
    """Run argv with options through one entry point: (returncode, stdout, usage, events). For a Job the
    usage is the job's, which is checked against its command's too."""
    events: list = []
    kw = {"capture_output": True, "text": True}
    if entry == "cli":
        status = tmp_path / "status.jsonl"
        result = subprocess.run([CLI, "--json-status", str(status), *cli_words(options), "--", *argv], timeout=120,
                                capture_output=True, text=True)
        events = [(e.pop("event"), e) for e in read_status(status)]
        usage = events[-1][1]["usage"]
        return result.returncode, result.stdout, sandbox.Usage(**usage) if usage else None, events
    options = {**options, "on_event": lambda name, fields: events.append((name, fields))}
    if entry == "run":
        result = sandbox.run(argv, **options, **kw)
        return result.returncode, result.stdout, result.usage, events
    if entry == "Popen":
        with sandbox.Popen(argv, stdout=subprocess.PIPE, text=True, **options) as process:
            out, _ = process.communicate()
        return process.returncode, out, process.usage, events
    if entry == "Job":
        with sandbox.Job(**options) as job:
            result = job.run(argv, **kw)
        assert result.usage.user <= job.usage.user + 1e-6
        return result.returncode, result.stdout, job.usage, events
    if entry == "run_async":
        result = asyncio.run(sandbox.run_async(argv, stdout=subprocess.PIPE, **options))
        return result.returncode, result.stdout.decode(), result.usage, events
    if entry == "create_process":
        async def main() -> tuple:
            process = await sandbox.create_process(argv, stdout=subprocess.PIPE, **options)
            out, _ = await process.communicate()
            return process.returncode, out.decode(), process.usage
        return (*asyncio.run(main()), events)
    if entry == "AsyncJob":
        async def main() -> tuple:
            async with sandbox.AsyncJob(**options) as job:
                result = await job.run(argv, stdout=subprocess.PIPE)
            assert result.usage.user <= job.usage.user + 1e-6
            return result.returncode, result.stdout.decode(), job.usage
        return (*asyncio.run(main()), events)
    raise ValueError(entry)


def fields(text: str) -> dict[str, str]:
    return {key: value.strip() for key, _, value in (line.partition(":") for line in text.splitlines()) if value}


def caps(value: str) -> int:
    return int(value, 16)


# -- the job's process attributes ------------------------------------------------------------------------


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_the_job_gets_its_attributes(entry, tmp_path, no_leftovers):
    code, out, _, _ = through(entry, ["sh", "-c", PROBE], ATTRIBUTES, tmp_path)
    assert code == 0, out
    seen = fields(out)
    assert seen["Umask"] == "0027"
    assert seen["NoNewPrivs"] == "1"
    assert seen["Nice"] == "5"
    assert seen["IO"] == "idle"
    assert "Max open files 100 200 files" in out
    assert "Max core file size 0 0 bytes" in out
    for name in ("CapBnd", "CapPrm", "CapEff", "CapInh", "CapAmb"):
        assert not caps(seen[name]) & (1 << SYS_ADMIN | 1 << NET_RAW), (name, seen[name])
    assert caps(seen["CapBnd"]) & 1 << CHOWN and caps(seen["CapEff"]) & 1 << CHOWN, "only the named ones go"


@pytest.mark.root("a lower niceness")
def test_cap_drop_all_empties_every_set_and_levels_and_classes(tmp_path, no_leftovers):
    options = {"cap_drop": ["ALL"], "ionice": "best-effort:7", "nice": -3, "rlimit": ["NOFILE=50:"]}
    code, out, _, _ = through("cli", ["sh", "-c", PROBE], options, tmp_path)
    assert code == 0, out
    seen = fields(out)
    assert [seen[n] for n in ("CapBnd", "CapPrm", "CapEff", "CapInh", "CapAmb")] == ["0000000000000000"] * 5
    assert (seen["IO"], seen["Nice"]) == ("best-effort: prio 7", "-3")
    hard = Path("/proc/self/limits").read_text().split("Max open files")[1].split()[1]
    assert f"Max open files 50 {hard} files" in out, "SOFT: keeps the hard limit"


@pytest.mark.root("a loop device")
@pytest.mark.parametrize("entry", ["cli", "run"])
def test_cap_keep_keeps_only_the_named_ones_and_our_helpers_still_work(entry, tmp_path, no_leftovers):
    """--cap-keep CAP_SYS_ADMIN: every set holds that one alone, and sandbox-mount-image (which checks that
    PID 1 is our reaper, whose namespace a job without CAP_SYS_PTRACE may not inspect) still mounts."""
    image = make_image(tmp_path)
    job = f"{PROBE}\nmkdir /mnt/t && {MOUNT_IMAGE} {image} /mnt/t && grep -c ' /mnt/t ' /proc/self/mountinfo"
    code, out, _, _ = through(entry, ["sh", "-c", job], {"cap_keep": ["sys_admin"], "tmpfs": ["/mnt"]}, tmp_path)
    assert code == 0, out
    seen = fields(out)
    assert [caps(seen[n]) for n in ("CapBnd", "CapPrm", "CapEff")] == [1 << SYS_ADMIN] * 3
    assert [caps(seen[n]) for n in ("CapInh", "CapAmb")] == [0, 0]
    assert out.splitlines()[-1] == "1", out


def test_cap_drop_and_cap_keep_exclude_each_other(no_leftovers):
    result = subprocess.run([CLI, "--cap-drop", "CAP_CHOWN", "--cap-keep", "CAP_SYS_ADMIN", "--", "true"],
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr) == (2, "sandboxed-run: --cap-drop and --cap-keep exclude each other: "
                                                     "name what to drop, or what to keep (see --help)\n")
    with pytest.raises(ValueError, match="^cap_drop and cap_keep exclude each other"):
        sandbox.run(["true"], cap_drop=["CAP_CHOWN"], cap_keep=["CAP_SYS_ADMIN"])


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("hiding", [{"rlimit": ["NOFILE=4"]}, {"tmpfs": ["/proc/sys"]}],
                         ids=["NOFILE=4", "no /proc/sys"])
def test_capabilities_drop_where_the_job_has_no_descriptor_or_proc_sys_left(entry, hiding, tmp_path, no_leftovers):
    """What the job's set-up reads (the number of capabilities) it reads before its limits and without /proc:
    a job with NOFILE=4, or with /proc/sys hidden, still starts with every capability dropped."""
    code, out, _, _ = through(entry, ["grep", "^Cap", "/proc/self/status"], {**hiding, "cap_drop": ["ALL"]}, tmp_path)
    assert code == 0, out
    seen = fields(out)
    assert [seen[n] for n in ("CapBnd", "CapPrm", "CapEff", "CapInh", "CapAmb")] == ["0000000000000000"] * 5


@pytest.mark.root("the reaper is the launcher's child only without a user namespace")
def test_the_reaper_keeps_its_own(tmp_path, no_leftovers):
    """Priority, limits and capabilities are the job's: the reaper (PID 1 inside) keeps what it needs to stop it."""
    with launched([CLI, *cli_words(ATTRIBUTES), "--", "sleep", "60"]) as launcher:
        assert wait_for(lambda: children(launcher.pid) and children(children(launcher.pid)[0]))
        reaper = children(launcher.pid)[0]
        job = children(reaper)[0]
        assert wait_for(lambda: Path(f"/proc/{job}/cmdline").read_bytes().startswith(b"sleep"))
        reaper_status, job_status = (fields(Path(f"/proc/{pid}/status").read_text()) for pid in (reaper, job))
        assert reaper_status["NoNewPrivs"] == "0" and job_status["NoNewPrivs"] == "1"
        assert caps(reaper_status["CapBnd"]) & 1 << SYS_ADMIN and not caps(job_status["CapBnd"]) & 1 << SYS_ADMIN
        assert caps(reaper_status["CapEff"]) & 1 << SYS_ADMIN
        nice = [int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16]) for pid in (reaper, job)]
        assert nice == [os.getpriority(os.PRIO_PROCESS, 0), 5]
        open_files = [Path(f"/proc/{pid}/limits").read_text().split("Max open files")[1].split()[:2]
                      for pid in (reaper, job)]
        assert open_files[0] == Path("/proc/self/limits").read_text().split("Max open files")[1].split()[:2]
        assert open_files[1] == ["100", "200"]
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=60) == -signal.SIGTERM


def test_the_forked_start_leaves_the_job_what_posix_spawn_does(tmp_path, no_leftovers):
    """With an attribute the job is forked and set up by hand: its signal dispositions, mask and descriptors
    are the same as without (the caller's ignored SIGHUP kept, nothing else ignored or blocked)."""
    probe = "grep -E '^Sig(Ign|Blk)' /proc/self/status; ls /proc/self/fd | sort -n | tr '\\n' ' '"
    ignore_hup = {"preexec_fn": lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN)}
    plain = subprocess.run([CLI, "sh", "-c", probe], capture_output=True, text=True, **ignore_hup)
    forked = subprocess.run([CLI, "--umask", "022", "--nice", "0", "sh", "-c", probe], capture_output=True,
                            text=True, **ignore_hup)
    assert plain.returncode == forked.returncode == 0, plain.stderr + forked.stderr
    # glibc's posix_spawn leaves its two internal signals (32 and 33, which no program may use) ignored.
    glibc_internal = ~(1 << 31 | 1 << 32)
    seen = [fields(result.stdout) for result in (plain, forked)]
    assert [int(s["SigIgn"], 16) & glibc_internal for s in seen] == [1 << (signal.SIGHUP - 1)] * 2
    assert [s["SigBlk"] for s in seen] == ["0000000000000000"] * 2
    assert forked.stdout.splitlines()[-1] == plain.stdout.splitlines()[-1] == "0 1 2 3 ", "the same descriptors"


@pytest.mark.root("the reaper is the launcher's child only without a user namespace")
def test_signals_reach_a_forked_job(tmp_path, no_leftovers):
    """The forked start path resets the reaper's signal state: the job dies of the SIGTERM its launcher passes on."""
    with launched([CLI, "--nice", "1", "--", "sleep", "60"]) as launcher:
        assert wait_for(lambda: children(launcher.pid) and children(children(launcher.pid)[0]))
        job = children(children(launcher.pid)[0])[0]
        assert wait_for(lambda: Path(f"/proc/{job}/cmdline").read_bytes().startswith(b"sleep"))
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=60) == -signal.SIGTERM


# -- every resource the kernel has, by its number; NPROC, which root's processes escape ------------------

# /proc/PID/limits names the kernel's resources in the order of their numbers (<asm-generic/resource.h>).
LIMIT_LINES = ("Max cpu time", "Max file size", "Max data size", "Max stack size", "Max core file size",
               "Max resident set", "Max processes", "Max open files", "Max locked memory", "Max address space",
               "Max file locks", "Max pending signals", "Max msgqueue size", "Max nice priority",
               "Max realtime priority", "Max realtime timeout")
# A value of its own for each, which leaves `cat` room to run.
EVERY_LIMIT = {"CPU": 1000, "FSIZE": 1 << 30, "DATA": 4 << 30, "STACK": 16 << 20, "CORE": 1 << 20, "RSS": 2 << 30,
               "NPROC": 5000, "NOFILE": 1000, "MEMLOCK": 4 << 20, "AS": 8 << 30, "LOCKS": 1010, "SIGPENDING": 1011,
               "MSGQUEUE": 1 << 19, "NICE": 13, "RTPRIO": 14, "RTTIME": 1015000}


def test_every_resource_the_kernel_has_is_set_by_its_number(tmp_path, no_leftovers):
    """All sixteen, LOCKS (which Python's resource module has no name for) among them: each NAME=VALUE lands on
    the kernel's resource of that name. Values stay within this host's hard limits (root may lack
    CAP_SYS_RESOURCE to raise them)."""
    wanted = {}
    for name, value in EVERY_LIMIT.items():
        hard = resource.getrlimit(limits.RLIMIT_NUMBERS[name])[1]
        wanted[name] = value if hard == resource.RLIM_INFINITY else min(value, hard)
    words = [word for name, value in wanted.items() for word in ("--rlimit", f"{name}={value}")]
    result = subprocess.run([CLI, *words, "--", "cat", "/proc/self/limits"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    rows = result.stdout.splitlines()[1:]
    assert [row[:len(label)] for row, label in zip(rows, LIMIT_LINES, strict=True)] == list(LIMIT_LINES)
    by_number = sorted(wanted, key=limits.RLIMIT_NUMBERS.get)
    seen = {name: row[len(label):].split()[:2] for name, row, label in zip(by_number, rows, LIMIT_LINES, strict=True)}
    assert seen == {name: [str(value)] * 2 for name, value in wanted.items()}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_locks_and_limits_as_pairs_through_every_entry_point(entry, tmp_path, no_leftovers):
    """RLIMIT_LOCKS through every entry point (it was a raw AttributeError from the job's set-up); the API takes
    (NAME, limit) pairs too, as it takes tmpfs and bind values, beside NAME=SOFT[:HARD]."""
    options = {"rlimit": ["LOCKS=10:20", "NOFILE=100", "CORE=0:"]} if entry == "cli" else \
        {"rlimit": [("LOCKS", (10, 20)), ("NOFILE", 100), "CORE=0:"]}
    code, out, _, _ = through(entry, ["cat", "/proc/self/limits"], options, tmp_path)
    assert code == 0, out
    assert "Max file locks 10 20 locks" in " ".join(out.split())
    assert "Max open files 100 100 files" in " ".join(out.split())
    assert "Max core file size 0 " in " ".join(out.split())


PROBE_FORK = "import os\ntry:\n    pid = os.fork()\nexcept OSError:\n    print('refused')\nelse:\n" \
             "    if pid == 0:\n        os._exit(0)\n    os.waitpid(pid, 0)\n    print('forked')\n"


@pytest.mark.root("a job of root")
@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("ids", [{"userns": True}, {"userns_uid": 5}])
def test_nproc_for_a_root_job_in_a_user_namespace_is_refused(entry, ids, tmp_path, no_leftovers):
    """Root's user namespace maps the job to the host's root, whose processes the kernel never counts against
    RLIMIT_NPROC (not even without capabilities): the limit could never work there, so it is a usage error."""
    flag = tmp_path / "ran"
    options = {**ids, "rlimit": ["NPROC=1"]}
    said = "rlimit NPROC cannot limit this job: its processes are the host's root"
    if entry == "cli":
        result = subprocess.run([CLI, *cli_words(options), "--", "touch", str(flag)], capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith(f"sandboxed-run: --{said}"), result.stderr
    else:
        with pytest.raises(ValueError, match=f"^{said}"):
            through(entry, ["touch", str(flag)], options, tmp_path)
    assert not flag.exists()


@pytest.mark.root("a job of root")
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_nproc_for_a_root_job_is_said_to_spare_root(entry, tmp_path, no_leftovers):
    """Without a user namespace a root job may still switch user, and then the limit counts: one warning line
    (a RuntimeWarning in the API), and the job runs. What it says is what the kernel does: the job, root, forks
    past NPROC=1 (without the two capabilities the kernel also exempts, CAP_SYS_RESOURCE and CAP_SYS_ADMIN), and
    a process of it that switched to a user of no other process cannot."""
    (uid,) = free_uids(1)
    job = [PYTHON, "-c", f"{PROBE_FORK}\nos.execvp('setpriv', ['setpriv', '--reuid={uid}', '--regid={uid}', "
                         f"'--clear-groups', {PYTHON!r}, '-c', {PROBE_FORK!r}])"]
    options = {"rlimit": ["NPROC=1"], "cap_drop": ["SYS_RESOURCE", "SYS_ADMIN"]}
    said = "rlimit NPROC does not limit the job's processes that run as root"
    if entry == "cli":
        result = subprocess.run([CLI, *cli_words(options), "--", *job], capture_output=True, text=True, timeout=60)
        code, out = result.returncode, result.stdout
        assert result.stderr.startswith(f"sandboxed-run: warning: --{said}"), result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
    else:
        with pytest.warns(RuntimeWarning, match=f"^{said}"):
            code, out, _, _ = through(entry, job, options, tmp_path)
    assert (code, out.split()) == (0, ["forked", "refused"])


def test_nproc_limits_an_ordinary_users_job(nobody_dir, no_leftovers):
    """As docs/confinement.md says: for an ordinary user (whose sandbox counts the caller's uid), NPROC=1 leaves the job
    unable to fork; no warning."""
    (uid,) = free_uids(1)
    try:
        result = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", CLI, "--rlimit",
                                 "NPROC=1", "--", PYTHON, "-c", PROBE_FORK], capture_output=True, text=True,
                                timeout=60, cwd=nobody_dir)
        assert (result.returncode, result.stdout, result.stderr) == (0, "refused\n", "")
    finally:
        shutil.rmtree(f"{registry.TMP_PREFIX}{uid}", ignore_errors=True)


# Runs each API entry point with cap_keep (and what else argv[1] adds) under a bounding set without NET_RAW,
# and prints the warnings each gave.
KEEP_IN_EVERY_API = """
import asyncio, json, sys, warnings, sandbox
options = {"cap_keep": ["NET_RAW", "CHOWN"], **json.loads(sys.argv[1])}
async def create_process():
    return await (await sandbox.create_process(["true"], **options)).wait()
async def async_job():
    async with sandbox.AsyncJob(**options) as job:
        return (await job.run(["true"])).returncode
def job():
    with sandbox.Job(**options) as j:
        return j.run(["true"]).returncode
starts = {"run": lambda: sandbox.run(["true"], **options).returncode,
          "Popen": lambda: sandbox.Popen(["true"], **options).wait(), "Job": job,
          "run_async": lambda: asyncio.run(sandbox.run_async(["true"], **options)).returncode,
          "create_process": lambda: asyncio.run(create_process()), "AsyncJob": lambda: asyncio.run(async_job())}
for entry, start in starts.items():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = start()
    print(entry, code, [str(w.message) for w in caught if w.category is RuntimeWarning])
"""
WITHOUT_NET_RAW = ["setpriv", "--bounding-set", "-net_raw"]


@pytest.mark.root("root's capabilities")
def test_a_capability_to_keep_that_the_caller_lacks_is_said(tmp_path, no_leftovers):
    """--cap-keep of a capability not in the caller's bounding set (a container's, systemd's, setpriv's doing):
    the job cannot have it, and one warning line says so (RuntimeWarning in the API); the job runs with the
    rest. In a user namespace the job starts with every capability, so nothing is said and it has it; as a
    uid other than 0 in there, an exec leaves it none, which is said."""
    result = subprocess.run([*WITHOUT_NET_RAW, CLI, "--cap-keep", "NET_RAW", "--cap-keep", "CHOWN", "--", "grep",
                             "^CapEff", "/proc/self/status"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ("sandboxed-run: warning: --cap-keep CAP_NET_RAW: the caller's bounding set lacks it (a "
                             "container, systemd's CapabilityBoundingSet= or setpriv dropped it), so the job cannot "
                             "have it\n")
    assert caps(fields(result.stdout)["CapEff"]) == 1 << CHOWN
    result = subprocess.run([*WITHOUT_NET_RAW, CLI, "--userns", "--cap-keep", "NET_RAW", "--", "grep", "^CapEff",
                             "/proc/self/status"], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr) == (0, "")
    assert caps(fields(result.stdout)["CapEff"]) == 1 << NET_RAW
    result = subprocess.run([CLI, "--userns-uid", "5", "--cap-keep", "CHOWN", "--", "grep", "^CapEff",
                             "/proc/self/status"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and caps(fields(result.stdout)["CapEff"]) == 0
    assert result.stderr == ("sandboxed-run: warning: --cap-keep: the job runs as uid 5 in its user namespace, where "
                             "an exec leaves no capability (only uid 0 there keeps them): it has none of them\n")
    api = subprocess.run([*WITHOUT_NET_RAW, PYTHON, "-c", KEEP_IN_EVERY_API, "{}"], capture_output=True, text=True,
                         timeout=120)
    said = ["cap_keep CAP_NET_RAW: the caller's bounding set lacks it (a container, systemd's "
            "CapabilityBoundingSet= or setpriv dropped it), so the job cannot have it"]
    assert api.stdout.splitlines() == [f"{entry} 0 {said}" for entry in ENTRY_POINTS[1:]], api.stderr
    api = subprocess.run([*WITHOUT_NET_RAW, PYTHON, "-c", KEEP_IN_EVERY_API, '{"userns": true}'], capture_output=True,
                         text=True, timeout=120)
    assert api.stdout.splitlines() == [f"{entry} 0 []" for entry in ENTRY_POINTS[1:]], api.stderr


# -- what the kernel refuses, and bad values -----------------------------------------------------------


@pytest.mark.parametrize(("options", "message"), [
    (["--nice", "-5"], "cannot set the niceness -5: permission denied (a lower niceness needs root: CAP_SYS_NICE)"),
    (["--rlimit", "NOFILE={above}"], "cannot set the resource limit NOFILE to {above}:{above}: permission "
                                     "denied (raising a hard limit needs root: CAP_SYS_RESOURCE)"),
])
def test_what_the_kernel_refuses_an_ordinary_user_fails_before_the_job(nobody_dir, options, message,
                                                                        no_leftovers):
    above = str(resource.getrlimit(resource.RLIMIT_NOFILE)[1] + 1)  # one more open file than the hard limit
    options, message = [word.format(above=above) for word in options], message.format(above=above)
    flag = nobody_dir / "ran"
    result = subprocess.run([*AS_NOBODY, CLI, *options, "--", "touch", str(flag)], capture_output=True, text=True,
                            cwd=nobody_dir, timeout=60)
    assert (result.returncode, result.stderr) == (125, f"sandboxed-run: {message}\n")
    assert not flag.exists()


@pytest.mark.parametrize("entry", ["cli", "run", "Job", "create_process"])
@pytest.mark.parametrize("value", ["unlimited", ":unlimited", "{most_plus_one}"])
def test_nofile_above_nr_open_is_refused_as_such(entry, value, tmp_path, no_leftovers):
    """The kernel refuses NOFILE above fs.nr_open even to root: one line saying so, 125, nothing started."""
    most = int(Path("/proc/sys/fs/nr_open").read_text())
    value = value.format(most_plus_one=most + 1)
    shown = "unlimited" if "unlimited" in value else value
    flag = tmp_path / "ran"
    if entry == "cli":
        result = subprocess.run([CLI, "--rlimit", f"NOFILE={value}", "--", "touch", str(flag)], capture_output=True,
                                text=True, timeout=60)
        assert (result.returncode, result.stderr) == (125, f"sandboxed-run: --rlimit NOFILE={shown}: the most this "
                                                           f"machine allows is {most} open files (fs.nr_open)\n")
    else:
        with pytest.raises(sandbox.SandboxError) as raised:
            through(entry, ["touch", str(flag)], {"rlimit": [f"NOFILE={value}"]}, tmp_path)
        assert str(raised.value) == f"rlimit NOFILE={shown}: the most this machine allows is {most} open files " \
                                    "(fs.nr_open)"
        assert raised.value.exit_code == 125
    assert not flag.exists()


BAD = [
    ("nice", 20, "nice 20: a niceness is from -20 to 19"),
    ("nice", "x", None),
    ("ionice", "idle:2", "ionice 'idle:2': the idle class has no level"),
    ("ionice", "best-effort:8", "ionice 'best-effort:8': the level is 0 (highest) to 7 (lowest)"),
    ("ionice", "fast", "ionice 'fast': the class is idle, best-effort or realtime"),
    ("rlimit", ["NOFILES=5"], "rlimit: unknown resource 'NOFILES'"),
    ("rlimit", ["NOFILE=10:5"], "rlimit NOFILE: the soft limit is above the hard limit"),
    ("rlimit", ["NOFILE"], "rlimit: 'NOFILE' is not NAME=SOFT[:HARD]"),
    ("rlimit", ["AS=lots"], "rlimit AS 'lots': a size is a number of bytes with an optional K, M, G or T"),
    ("umask", "0999", "umask '0999': a umask is an octal number such as 077"),
    ("cap_drop", ["CAP_FLY"], "cap_drop: unknown capability 'CAP_FLY' (see capabilities(7); or ALL)"),
    ("cap_keep", ["ALL"], "cap_keep ALL keeps every capability: leave the option out"),
    ("memory_max", "12Q", "memory_max '12Q': a size is a number of bytes with an optional K, M, G or T"),
    ("memory_high", "0", "memory_high 0: a size must be more than 0"),
    ("cpu_max", "0.5%", "cpu_max 0.5%: the least is 1% of one CPU"),
    ("cpu_weight", 0, "cpu_weight 0: a weight is from 1 to 10000 (the default is 100)"),
    ("io_weight", 10001, "io_weight 10001: a weight is from 1 to 10000 (the default is 100)"),
    ("pids_max", 0, "pids_max 0: must be at least 1"),
    # Past what the kernel or systemd's 64-bit properties take: refused here, not overflowed on the way.
    ("rlimit", ["NOFILE=99999999999999999999"], "rlimit NOFILE=99999999999999999999: too large (the most is "
                                                "9223372036854775807, or unlimited)"),
    ("rlimit", ["AS=8192P"], "rlimit AS 9223372036854775808: too large"),
    ("memory_max", "99999999P", "memory_max 112589989558362493157376: too large"),
    ("pids_max", 2**64, "pids_max 18446744073709551616: the most is 4194304"),
    ("cpu_max", "1e300%", "cpu_max 1e+300%: the most is 819200% (8192 CPUs)"),
    # Digits that str.isdigit() knows and int() does not: one line naming the option all the same.
    ("ionice", "be:\u00b2", "ionice 'be:\u00b2': the level is 0 (highest) to 7 (lowest)"),
    ("rlimit", ["CPU=\u00b2"], "rlimit CPU=\u00b2: a limit is a whole number or unlimited"),
    ("cap_drop", ["ALL", "CAP_FLY"], "cap_drop: unknown capability 'CAP_FLY'"),
]


@pytest.mark.parametrize(("name", "value", "message"), BAD)
def test_a_bad_value_is_one_line_naming_the_option(name, value, message, no_leftovers):
    words = cli_words({name: value})
    result = subprocess.run([CLI, *words, "--", "true"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
    flag = "--" + name.replace("_", "-")
    expected = message.replace(name, flag, 1) if message else f"{flag}: {value!r} is not a number"
    assert result.stderr.startswith(f"sandboxed-run: {expected}"), result.stderr
    if name == "nice" and value == "x":
        return  # a command-line word only
    with pytest.raises((ValueError, TypeError)) as raised:
        sandbox.run(["true"], **{name: value})
    assert str(raised.value).startswith(message), raised.value


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_cgroup_limit_without_cgroup_v2_fails_before_anything_starts(entry, tmp_path, no_leftovers):
    reason = cgroups.unavailable({"memory_max": 1 << 26})
    if reason is None:
        pytest.skip("this machine can give a sandbox a cgroup (the VM suite tests the limits)")
    flag = tmp_path / "ran"
    if entry == "cli":
        result = subprocess.run([CLI, "--memory-max", "64M", "--nice", "3", "--", "touch", str(flag)],
                                capture_output=True, text=True, timeout=60)
        assert (result.returncode, result.stderr) == (125, f"sandboxed-run: --memory-max: {reason}\n")
    else:
        with pytest.raises(sandbox.SandboxError) as raised:
            through(entry, ["touch", str(flag)], {"memory_max": "64M", "nice": 3}, tmp_path)
        assert str(raised.value) == f"memory_max: {reason}"
        assert raised.value.exit_code == 125
    assert not flag.exists()
    # The other options still work on their own.
    assert through(entry, ["touch", str(flag)], {"nice": 3}, tmp_path)[0] == 0 and flag.exists()


# -- usage -------------------------------------------------------------------------------------------------

# Burns CPU in user mode for about 0.5 s and touches 80 MiB.
BURN = "import os\nx = bytearray(80 << 20)\nwhile os.times().user < 0.5:\n    sum(range(10000))\n"


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_every_run_reports_what_it_used(entry, tmp_path, no_leftovers):
    code, _, usage, events = through(entry, [PYTHON, "-c", BURN], {}, tmp_path)
    assert code == 0
    assert usage is not None
    assert 0.5 <= usage.user < 30 and usage.system >= 0
    assert usage.wall >= usage.user * 0.9, "one thread cannot use more CPU than time passed"
    assert usage.max_rss >= 80 << 20
    name, finished = events[-1]
    assert name == "finished"
    assert finished["usage"] == usage.as_dict()
    if cgroups.unavailable({"memory_max": 1}) is not None:
        assert (usage.memory_peak, usage.io_read, usage.pids_peak, usage.oom_kills) == (None,) * 4


@pytest.mark.parametrize("entry", ["run", "Job", "run_async", "AsyncJob"])
def test_a_run_that_times_out_still_says_what_it_used(entry, no_leftovers):
    """run()'s TimeoutExpired carries the usage of the job it stopped, as its CalledProcessError does."""
    argv, options = ["sh", "-c", "trap '' TERM; while :; do :; done"], {"timeout": 0.5}
    usage = timed_out_through(entry, argv, 0.5, **options).usage
    # The timeout counts from the call (as subprocess's does), the start included; the job ignores the stop
    # signal, so it lived through the grace period at least.
    assert isinstance(usage, sandbox.Usage) and usage.wall >= 0.5 and usage.user >= 0.3, usage


def test_verbose_says_what_it_used_in_one_line(tmp_path, no_leftovers):
    status = tmp_path / "status.jsonl"
    result = subprocess.run([CLI, "-v", "--json-status", str(status), "--", PYTHON, "-c", BURN], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith("sandboxed-run: finished status=0; used ") and " s wall, " in last, last
    assert " s user + " in last and "largest process " in last
    finished = read_status(status)[-1]
    assert finished["event"] == "finished" and finished["usage"]["user"] >= 0.5


def test_a_job_that_could_not_start_reports_no_usage(tmp_path, no_leftovers):
    assert sandbox.run(["sh", "-c", "exit 7"]).usage is not None
    seen: list = []
    with pytest.raises(sandbox.CommandNotFound):
        sandbox.run(["/nonexistent/command"], on_event=lambda name, fields: seen.append((name, fields)))
    assert seen[-1][0] == "finished" and seen[-1][1]["usage"] is None


def test_a_session_command_reports_its_own_usage(no_leftovers):
    with sandbox.Job() as job:
        idle = job.run(["true"])
        busy = job.run([PYTHON, "-c", BURN])
    assert idle.usage.user < 0.5 <= busy.usage.user
    assert job.usage.user >= idle.usage.user + busy.usage.user - 1e-6
    assert job.usage.wall >= busy.usage.wall

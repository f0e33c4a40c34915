"""The API lends nothing: a job runs with its caller's credentials and attributes as they are now, as subprocess
gives them, whatever the spawn server (started earlier, with what the caller had then) holds.

Every caller here is a child Python run as root that changes its own credentials or attributes after a first
call (so its spawn server already runs) and reports what its next job saw; pytest itself stays root.
"""

from __future__ import annotations

import json
import select
import signal
import subprocess
import textwrap
from pathlib import Path

import pytest

from support import PYTHON, log_lines, wait_for

ENTRY_POINTS = ["run", "Popen", "Job", "run_async", "create_process", "AsyncJob"]
NOBODY = 65534

# What every caller script starts with: through() runs a command through one entry point of the API and
# returns what it did; report() prints one JSON line for the test.
PREAMBLE = '''
import asyncio, concurrent.futures, json, os, sys
import sandbox

def through(entry, argv, **options):
    """(returncode, stdout, stderr) of argv run through one entry point; (None, None, message) if it failed."""
    try:
        if entry == "run":
            r = sandbox.run(argv, capture_output=True, **options)
            return r.returncode, r.stdout.decode(), r.stderr.decode()
        if entry == "Popen":
            with sandbox.Popen(argv, stdout=sandbox.PIPE, stderr=sandbox.PIPE, **options) as p:
                out, err = p.communicate()
            return p.returncode, out.decode(), err.decode()
        if entry == "Job":
            with sandbox.Job(**options) as job:
                r = job.run(argv, capture_output=True)
            return r.returncode, r.stdout.decode(), r.stderr.decode()
        if entry == "run_async":
            r = asyncio.run(sandbox.run_async(argv, capture_output=True, **options))
            return r.returncode, r.stdout.decode(), r.stderr.decode()
        if entry == "create_process":
            async def main():
                p = await sandbox.create_process(argv, stdout=sandbox.PIPE, stderr=sandbox.PIPE, **options)
                out, err = await p.communicate()
                return p.returncode, out.decode(), err.decode()
            return asyncio.run(main())
        if entry == "AsyncJob":
            async def main():
                async with sandbox.AsyncJob(**options) as job:
                    r = await job.run(argv, capture_output=True)
                return r.returncode, r.stdout.decode(), r.stderr.decode()
            return asyncio.run(main())
    except sandbox.SandboxError as exc:
        return None, None, str(exc)
    raise ValueError(entry)

def report(**fields):
    print(json.dumps(fields), flush=True)

def drop_to_nobody():
    os.setgroups([]); os.setgid(65534); os.setuid(65534)
'''

# What a job says of itself: the lines a test compares with what subprocess gives.
SELF_REPORT = ("echo uid=$(id -u); echo gid=$(id -g); echo groups=$(id -G | tr ' ' ,); echo nice=$(nice); "
               "echo nofile=$(ulimit -n):$(ulimit -Hn); echo oom=$(cat /proc/self/oom_score_adj); echo umask=$(umask); "
               "grep -E '^(CapEff|CapBnd|NoNewPrivs):' /proc/self/status | tr -d '\\t' | sed 's/:/=/'; "
               "echo net=$(readlink /proc/self/ns/net)")


def caller(directory: Path, body: str, *args: str, timeout: float = 120) -> list[dict]:
    """Run PREAMBLE + body as a root Python caller in directory (one uid 65534 may use); its report() lines."""
    script = directory / "caller.py"
    script.write_text(PREAMBLE + textwrap.dedent(body))
    result = subprocess.run([PYTHON, str(script), *args], cwd=directory, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def said(text: str) -> dict[str, str]:
    """A SELF_REPORT's lines as a dict."""
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


# -- a drop to nobody ----------------------------------------------------------------------------------

@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_job_after_a_drop_to_nobody_runs_as_nobody(entry, nobody_dir, no_leftovers):
    """The headline escalation: root calls the API, drops to nobody, and its next job (without a user namespace)
    ran as host root and read /etc/shadow. Now it runs as nobody, or cannot start, in one line."""
    [after] = caller(nobody_dir, """
        entry = sys.argv[1]
        through(entry, ["true"], userns=False)
        drop_to_nobody()
        code, out, err = through(entry, ["sh", "-c", "id -u; id -g; id -G; head -c4 /etc/shadow"], userns=False)
        report(code=code, out=out, err=err)
    """, entry)
    # Without a user namespace an unprivileged caller cannot make the sandbox's PID namespace at all.
    assert after == {"code": None, "out": None,
                     "err": "cannot create a PID namespace: operation not permitted (run as root, or with "
                            "CAP_SYS_ADMIN)"}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_job_after_a_drop_to_nobody_in_the_default_user_namespace(entry, nobody_dir, no_leftovers):
    """The default (a user namespace for an unprivileged caller) runs the job as nobody mapped to root inside: it
    cannot read /etc/shadow. It failed with 'cannot register the sandbox', the root server's reaper using the
    registry of nobody."""
    [after] = caller(nobody_dir, """
        entry = sys.argv[1]
        through(entry, ["true"])
        drop_to_nobody()
        code, out, err = through(entry, ["sh", "-c", "id -u; cat /proc/self/uid_map; head -c4 /etc/shadow"])
        report(code=code, out=out, err=err)
    """, entry)
    assert after["code"] == 1, after
    uid, uid_map = after["out"].splitlines()
    assert (uid, uid_map.split()) == ("0", ["0", str(NOBODY), "1"])
    assert "/etc/shadow" in after["err"] and "Permission denied" in after["err"]


# -- attributes and credentials changed without leaving root ---------------------------------------------

CHANGE_ATTRIBUTES = """
    import resource
    os.setpriority(os.PRIO_PROCESS, 0, 5)
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, 4096))
    os.setgroups([0, 4])
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write("123")
    os.umask(0o027)
"""


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_attributes_changed_after_the_first_call_reach_the_job(entry, nobody_dir, no_leftovers):
    """nice, the open files limit, supplementary groups, oom_score_adj and the umask that the caller set after its
    spawn server started: the job gets them as subprocess gives them (it got the server's)."""
    [after, expected] = caller(nobody_dir, """
        import subprocess
        entry, change, report_self = sys.argv[1:4]
        through(entry, ["true"])
        exec(change)
        code, out, err = through(entry, ["sh", "-c", report_self])
        report(code=code, out=out, err=err)
        report(out=subprocess.run(["sh", "-c", report_self], capture_output=True, text=True).stdout)
    """, entry, textwrap.dedent(CHANGE_ATTRIBUTES), SELF_REPORT)
    assert after["code"] == 0, after
    job, theirs = said(after["out"]), said(expected["out"])
    assert {key: theirs[key] for key in ("groups", "nice", "nofile", "oom", "umask")} == \
        {"groups": "0,4", "nice": "5", "nofile": "512:4096", "oom": "123", "umask": "0027"}
    assert job == theirs


def test_the_sandboxs_own_options_override_the_callers_attributes(nobody_dir, no_leftovers):
    """nice= and rlimit= set the job's own values over the caller's; what they leave alone is still the caller's."""
    [after] = caller(nobody_dir, """
        change, report_self = sys.argv[1:3]
        through("run", ["true"])
        exec(change)
        code, out, err = through("run", ["sh", "-c", report_self], nice=3, rlimit=["NOFILE=100:200"])
        report(code=code, out=out, err=err)
    """, textwrap.dedent(CHANGE_ATTRIBUTES), SELF_REPORT)
    job = said(after["out"])
    assert (job["nice"], job["nofile"], job["oom"], job["groups"]) == ("3", "100:200", "123", "0,4")


@pytest.mark.parametrize("dumpable", [True, False])
def test_a_caller_that_turns_dumpable_or_not_is_still_served(dumpable, nobody_dir, no_leftovers):
    """The kernel hides a non-dumpable caller's namespaces from an unprivileged server (its id maps stand in): a
    caller that turns non-dumpable, or dumpable again, after its first call changed no credentials, and its next
    job runs, with the nice it has now."""
    [after] = caller(nobody_dir, """
        import prctl
        dumpable = sys.argv[1] == "True"
        drop_to_nobody()
        prctl.set_dumpable(not dumpable)
        through("run", ["true"])
        prctl.set_dumpable(dumpable)
        os.setpriority(os.PRIO_PROCESS, 0, 7)
        code, out, err = through("run", ["sh", "-c", "id -u; nice"])
        report(code=code, out=out, err=err)
    """, str(dumpable))
    assert after == {"code": 0, "out": "0\n7\n", "err": ""}


# Changes of credentials that leave the uid alone: our client does not see them before it asks (they are not
# what a drop to another user changes), so the spawn server refuses, and the client asks a new server.
CREDENTIAL_CHANGES = {
    "capabilities": """
        import prctl
        for cap in ("dac_override", "dac_read_search", "net_raw"):
            prctl.capbset.drop(getattr(prctl, "CAP_" + cap.upper()))
            setattr(prctl.cap_effective, cap, False)
            setattr(prctl.cap_permitted, cap, False)
            setattr(prctl.cap_inheritable, cap, False)
    """,
    "no_new_privs": """
        import prctl
        prctl.set_no_new_privs(1)
    """,
    "network namespace": """
        from sandboxed_run_helpers.shared import linux
        linux.unshare(linux.CLONE_NEWNET)
    """,
}


@pytest.mark.parametrize("change", list(CREDENTIAL_CHANGES))
def test_other_credentials_changed_after_the_first_call_reach_the_job(change, nobody_dir, no_leftovers):
    """Capabilities given up, no_new_privs, a namespace of its own: the job has them as subprocess's would (it had
    the server's: every capability, no no_new_privs, the host's network)."""
    [before, after, expected] = caller(nobody_dir, """
        import subprocess
        change, report_self = sys.argv[1:3]
        through("run", ["true"], userns=False)
        report(out=subprocess.run(["sh", "-c", report_self], capture_output=True, text=True).stdout)
        exec(change)
        code, out, err = through("run", ["sh", "-c", report_self], userns=False)
        report(code=code, out=out, err=err)
        report(out=subprocess.run(["sh", "-c", report_self], capture_output=True, text=True).stdout)
    """, textwrap.dedent(CREDENTIAL_CHANGES[change]), SELF_REPORT)
    assert after["code"] == 0, after
    job, theirs = said(after["out"]), said(expected["out"])
    shown = ("CapEff", "CapBnd", "NoNewPrivs", "net")
    assert [job[key] for key in shown] == [theirs[key] for key in shown]
    assert [theirs[key] for key in shown] != [said(before["out"])[key] for key in shown]


# -- the server's own check, whoever asks ---------------------------------------------------------------

RAW_SPAWN = """
    from sandbox.api import spawner
    from sandboxed_run_helpers.shared import command, wire
    from sandboxed_run_helpers.shared.options import SandboxSpec
    change, flag = sys.argv[1:3]
    through("run", ["true"], userns=False)
    server = spawner.current()
    exec(change)
    # Not through our client: a Spawn written on the server's channel as any code in the program could.
    order = wire.Order(command.command([b"sh", b"-c", b"id -u > " + flag.encode()], dict(os.environb), os.getcwdb()),
                     SandboxSpec.build({"userns": False}), os.getpgrp(), "socket", (False, False, False), None)
    wire.send(server.channel, wire.Spawn(order, ()))
    reply, fds, _ = wire.recv(server.channel)
    report(reply=type(reply).__name__, message=getattr(reply, "message", None))
    if fds:
        sock = __import__("socket").socket(fileno=fds[0])
        sock.recv(1 << 16)
        while sock.recv(1 << 16):
            pass
"""


@pytest.mark.parametrize("change", ["uid", "groups", "capabilities"])
def test_the_server_refuses_a_raw_spawn_from_a_caller_whose_credentials_changed(change, nobody_dir, no_leftovers):
    """The check is the server's, on every request, from what the kernel says: a Spawn written directly on the
    channel after a change of credentials is refused in one line, and nothing runs."""
    code = {"uid": "drop_to_nobody()", "groups": "os.setgroups([4])",
            "capabilities": CREDENTIAL_CHANGES["capabilities"]}[change]
    flag = nobody_dir / "ran"
    [reply] = caller(nobody_dir, RAW_SPAWN, textwrap.dedent(code), str(flag))
    what = {"uid": "uid (was 0, now 65534)", "groups": "supplementary groups", "capabilities": "capabilities"}[change]
    assert reply == {"reply": "Failed", "message": f"refused: the calling program's {what} changed since its sandbox "
                     "spawn server started, and the server lends none of its own; ask through the sandbox API, which "
                     "starts a server for the credentials the program has now"}
    assert not flag.exists()


# A process the program handed its channel to: it runs as nobody and asks for a sandbox without a user namespace.
INTRUDER = """
import json, os, socket, sys
from sandboxed_run_helpers.shared import command, wire
from sandboxed_run_helpers.shared.options import SandboxSpec
channel, flag = int(sys.argv[1]), sys.argv[2]
os.setgroups([]); os.setgid(65534); os.setuid(65534)
sock = socket.socket(fileno=channel)
cmd = command.command([b"sh", b"-c", b"id -u > " + flag.encode()], dict(os.environb), b"/")
wire.send(sock, wire.Spawn(wire.Order(cmd, SandboxSpec.build({"userns": False}), None, "socket", (False,) * 3), ()))
reply = wire.recv(sock)[0]
print(json.dumps({"reply": type(reply).__name__, "message": getattr(reply, "message", None)}))
"""


def test_the_server_refuses_a_spawn_from_another_process_that_holds_its_channel(nobody_dir, no_leftovers):
    """The kernel names the sender of each request: a process the program handed the channel to gets a refusal,
    never a sandbox with the program's credentials."""
    flag = nobody_dir / "ran"
    [reply] = caller(nobody_dir, """
        import subprocess
        from sandbox.api import spawner
        through("run", ["true"], userns=False)
        channel = spawner.current().channel.fileno()
        out = subprocess.run([sys.executable, "-c", sys.argv[1], str(channel), sys.argv[2]], pass_fds=(channel,),
                             capture_output=True, text=True)
        print(out.stdout, end="", flush=True)
        print(out.stderr, end="", file=sys.stderr)
    """, INTRUDER, str(flag))
    assert reply == {"reply": "Failed", "message": "refused: the sandbox spawn server takes requests only from the "
                     "program that started it; ask through the sandbox API in your own program"}
    assert not flag.exists()


def test_a_drop_between_our_check_and_the_request_is_refused_and_retried_on_a_new_server(nobody_dir,
                                                                                         no_leftovers):
    """Another thread drops privileges (here: supplementary groups) after the client compared its credentials and
    before the server read them: the server refuses, and the client asks once more, of a server started for the
    new credentials. The job has the groups its caller has now."""
    [after] = caller(nobody_dir, """
        from sandbox.api import spawner
        from sandboxed_run_helpers.shared import wire
        os.setgroups([0, 6])
        through("run", ["true"], userns=False)
        first = spawner.current().pid
        send = wire.send

        def drop_then_send(sock, message, *args, **kwargs):
            if isinstance(message, wire.Spawn) and os.getgroups() != [4]:
                os.setgroups([4])  # as another thread could, right after the client's check
            return send(sock, message, *args, **kwargs)

        wire.send = drop_then_send
        code, out, err = through("run", ["id", "-G"], userns=False)
        report(code=code, out=out, err=err, servers=[first, spawner.current().pid])
    """)
    first, second = after.pop("servers")
    assert after == {"code": 0, "out": "0 4\n", "err": ""}
    assert first != second


# -- what runs across the change -------------------------------------------------------------------------

def test_a_sandbox_started_before_a_drop_ends_normally_and_its_server_goes(nobody_dir, no_leftovers):
    """A sandbox of the old credentials runs on to its end, its hook once; the retired server that started it exits
    once it is over, while the program goes on with a server of its new credentials."""
    hook_log = nobody_dir / "hook.log"
    hook_log.touch()
    hook_log.chmod(0o666)
    [after] = caller(nobody_dir, """
        import time
        from sandbox.api import spawner
        hook_log = sys.argv[1]
        first = sandbox.Popen(["sh", "-c", "sleep 1; echo done"], stdout=sandbox.PIPE, userns=False,
                              on_exit=[f"echo hook >> {hook_log}"])
        old_server = spawner.current().pid
        drop_to_nobody()
        code, out, err = through("run", ["id", "-u"])
        old_alive_then = os.path.exists(f"/proc/{old_server}")
        output = first.stdout.read().decode()
        status = first.wait()
        deadline = time.monotonic() + 15
        while os.path.exists(f"/proc/{old_server}/stat") and time.monotonic() < deadline:
            time.sleep(0.02)
        report(code=code, out=out, first=[status, output], old_alive_then=old_alive_then,
               old_gone=not os.path.exists(f"/proc/{old_server}/stat"), new=spawner.current().pid != old_server)
    """, str(hook_log))
    assert after == {"code": 0, "out": "0\n", "first": [0, "done\n"], "old_alive_then": True, "old_gone": True,
                     "new": True}
    assert log_lines(hook_log) == ["hook"]


def test_a_retired_server_still_stops_its_sandboxes_when_the_caller_dies(nobody_dir, tmp_path, no_leftovers):
    """The caller dies (SIGKILL) after a drop: the sandbox it started before, under the retired server, gets its
    stop signal and grace, and its hook runs once (the retired server runs what nobody claimed)."""
    log, hook_log = nobody_dir / "signals.log", nobody_dir / "hook.log"
    hook_log.touch()
    hook_log.chmod(0o666)
    script = nobody_dir / "caller.py"
    script.write_text(PREAMBLE + textwrap.dedent("""
        log, hook_log = sys.argv[1:3]
        job = sandbox.Popen([sys.executable, "-c", sys.argv[3], log], userns=False, grace=10,
                            on_exit=[f"echo hook >> {hook_log}"])
        drop_to_nobody()
        code, out, err = through("run", ["id", "-u"])
        report(code=code, out=out, err=err)
        sys.stdin.read()
    """))
    job = ("import signal, sys, time\n"
           "def note(text):\n    open(sys.argv[1], 'a').write(text + '\\n')\n"
           "def stop(sig, frame):\n    note('SIGTERM'); time.sleep(0.3); note('cleaned'); sys.exit(0)\n"
           "signal.signal(signal.SIGTERM, stop)\nnote('ready')\n"
           "while True:\n    time.sleep(1)\n")
    process = subprocess.Popen([PYTHON, str(script), str(log), str(hook_log), job], cwd=nobody_dir,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert select.select([process.stdout], [], [], 60)[0], "the caller said nothing in 60 s"
        assert json.loads(process.stdout.readline()) == {"code": 0, "out": "0\n", "err": ""}
        assert wait_for(lambda: log_lines(log) == ["ready"])
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert wait_for(lambda: log_lines(hook_log) == ["hook"])
        assert log_lines(log) == ["ready", "SIGTERM", "cleaned"]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdin.close()
        process.stdout.close()


@pytest.mark.parametrize("entry", ["Job", "AsyncJob"])
def test_a_job_started_before_a_drop_refuses_commands_after_it(entry, nobody_dir, no_leftovers):
    """A sandbox.Job (a session) started as root takes its commands straight to its reaper: after the caller's drop
    the reaper refuses them in one line (they ran as root), and the Job still ends normally, its hook once."""
    hook_log = nobody_dir / "hook.log"
    hook_log.touch()
    hook_log.chmod(0o666)
    [before, after] = caller(nobody_dir, """
        entry, hook_log = sys.argv[1:3]
        argv = ["sh", "-c", "id -u; head -c4 /etc/shadow"]
        if entry == "Job":
            with sandbox.Job(userns=False, on_exit=[f"echo hook >> {hook_log}"]) as job:
                report(out=job.run(argv, capture_output=True).stdout.decode())
                drop_to_nobody()
                try:
                    job.run(argv, capture_output=True)
                    report(error=None)
                except sandbox.SandboxError as exc:
                    report(error=str(exc))
        else:
            async def main():
                async with sandbox.AsyncJob(userns=False, on_exit=[f"echo hook >> {hook_log}"]) as job:
                    report(out=(await job.run(argv, capture_output=True)).stdout.decode())
                    drop_to_nobody()
                    try:
                        await job.run(argv, capture_output=True)
                        report(error=None)
                    except sandbox.SandboxError as exc:
                        report(error=str(exc))
            asyncio.run(main())
    """, entry, str(hook_log))
    assert before == {"out": "0\nroot"}
    assert after == {"error": "refused: the caller's uid (was 0, now 65534) changed since this sandbox.Job started, "
                              "and it lends none of its own; start a new sandbox.Job for this command"}
    assert log_lines(hook_log) == ["hook"]


# -- securebits, which no /proc file shows -------------------------------------------------------------------

@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_securebits_set_after_the_first_call_reach_the_job(entry, nobody_dir, no_leftovers):
    """SECBIT_NOROOT: an exec of root gets no capabilities (subprocess's job has none). The job got every one of the
    server's; now it is started by a server that has the caller's securebits, and has none either: without a user
    namespace the sandbox cannot even be made, as for any caller without CAP_SYS_ADMIN."""
    [before, after] = caller(nobody_dir, """
        import prctl
        argv = ["sh", "-c", "grep CapEff /proc/self/status"]
        report(out=through(sys.argv[1], argv, userns=False)[1])
        prctl.securebits.noroot = True
        code, out, err = through(sys.argv[1], argv, userns=False)
        report(code=code, out=out, err=err)
    """, entry)
    assert before["out"] != "CapEff:\t0000000000000000\n", before
    assert after == {"code": None, "out": None,
                     "err": "cannot create a PID namespace: operation not permitted (run as root, or with "
                            "CAP_SYS_ADMIN)"}


@pytest.mark.parametrize("entry", ["Job", "AsyncJob"])
def test_a_job_started_before_securebits_changed_refuses_commands_after_it(entry, nobody_dir, no_leftovers):
    [after] = caller(nobody_dir, """
        import prctl
        argv = ["sh", "-c", "grep CapEff /proc/self/status"]
        if sys.argv[1] == "Job":
            with sandbox.Job(userns=False) as job:
                job.run(["true"])
                prctl.securebits.noroot = True
                try:
                    report(out=job.run(argv, capture_output=True).stdout.decode())
                except sandbox.SandboxError as exc:
                    report(error=str(exc))
        else:
            async def main():
                async with sandbox.AsyncJob(userns=False) as job:
                    await job.run(["true"])
                    prctl.securebits.noroot = True
                    try:
                        report(out=(await job.run(argv, capture_output=True)).stdout.decode())
                    except sandbox.SandboxError as exc:
                        report(error=str(exc))
            asyncio.run(main())
    """, entry)
    assert after == {"error": "refused: the caller's securebits changed since this sandbox.Job started, and it lends "
                              "none of its own; start a new sandbox.Job for this command"}


def test_a_loop_whose_thread_changed_securebits_after_its_workers_started_is_refused(nobody_dir, no_leftovers):
    """asyncio starts its sandboxes in worker threads, which keep the securebits they were made with (they are each
    thread's own), and the server they would start would have those: refused in one line, never the old ones."""
    [before, after] = caller(nobody_dir, """
        import prctl
        async def main():
            # One worker, made by the first call, before the change: a worker made after it would be a thread of
            # the changed one, and its server simply the caller's (then no refusal is due).
            asyncio.get_running_loop().set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=1))
            argv = ["sh", "-c", "grep CapEff /proc/self/status"]
            report(code=(await sandbox.run_async(argv, capture_output=True, userns=False)).returncode)
            prctl.securebits.noroot = True
            try:
                out = (await sandbox.run_async(argv, capture_output=True, userns=False)).stdout.decode()
                report(out=out)
            except sandbox.SandboxError as exc:
                report(error=str(exc))
        asyncio.run(main())
    """)
    assert before == {"code": 0}
    assert after == {"error": "refused: the event loop's thread has other securebits, or a confinement (Landlock, an "
                              "LSM's), than the worker thread that starts its sandbox, and no server can be started "
                              "with them; set them before the loop's executor starts its threads"}


def test_commands_a_job_refuses_leave_no_descriptor_in_its_reaper(nobody_dir, no_leftovers):
    """Each refused command's descriptors (the caller's pipes) stayed in the reaper, held open."""
    [counts] = caller(nobody_dir, """
        import prctl
        with sandbox.Job(userns=False) as job:
            job.run(["true"])
            before = len(os.listdir(f"/proc/{job.pid}/fd"))
            prctl.capbset.drop(prctl.CAP_NET_RAW)
            refused = 0
            for _ in range(5):
                try:
                    job.run(["true"], stdin=sandbox.PIPE, stdout=sandbox.PIPE, stderr=sandbox.PIPE)
                except sandbox.SandboxError:
                    refused += 1
            report(before=before, after=len(os.listdir(f"/proc/{job.pid}/fd")), refused=refused)
    """)
    assert counts["refused"] == 5 and counts["after"] == counts["before"], counts


# -- a Landlock domain, which no /proc file shows --------------------------------------------------------------

# Confine the calling thread with Landlock: it may read files anywhere but below /etc (subprocess's job then cannot
# read /etc/shadow). Root needs no no_new_privs for it (CAP_SYS_ADMIN stands in).
LANDLOCK = """
import ctypes, struct
def landlock_out_of_etc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    read_file = 1 << 2
    attr = ctypes.create_string_buffer(struct.pack("QQQ", read_file, 0, 0))
    ruleset = libc.syscall(444, attr, 24, 0)  # landlock_create_ruleset
    if ruleset < 0:
        report(skip="no Landlock: " + os.strerror(ctypes.get_errno()))
        sys.exit(0)
    for entry in os.listdir("/"):
        if entry != "etc" and os.path.isdir("/" + entry):
            fd = os.open("/" + entry, os.O_PATH | os.O_CLOEXEC)
            rule = ctypes.create_string_buffer(struct.pack("=Qi", read_file, fd))
            assert libc.syscall(445, ruleset, 1, rule, 0) == 0, entry  # landlock_add_rule
            os.close(fd)
    assert libc.syscall(446, ruleset, 0) == 0, os.strerror(ctypes.get_errno())  # landlock_restrict_self
"""


def landlocked(reports: list[dict]) -> list[dict]:
    if reports and "skip" in reports[0]:
        pytest.skip(reports[0]["skip"])
    return reports


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_landlock_domain_entered_after_the_first_call_reaches_the_job(entry, nobody_dir, no_leftovers):
    """A program that confines itself with Landlock after a first call got jobs outside its domain (the server's):
    /etc/shadow read while its own subprocess could not. Its server now is one it starts inside the domain, as its
    jobs are: Landlock lets no confined process mount, so no sandbox can be made at all."""
    [before, theirs, after] = landlocked(caller(nobody_dir, LANDLOCK + textwrap.dedent("""
        import subprocess
        argv = ["head", "-c4", "/etc/shadow"]
        report(out=through(sys.argv[1], argv, userns=False)[1])
        landlock_out_of_etc()
        report(code=subprocess.run(argv, capture_output=True).returncode)
        code, out, err = through(sys.argv[1], argv, userns=False)
        report(code=code, out=out, err=err)
    """), entry))
    assert (before, theirs) == ({"out": "root"}, {"code": 1})
    assert after == {"code": None, "out": None,
                     "err": "cannot make mounts slave under /: operation not permitted (run as root, or with "
                            "CAP_SYS_ADMIN)"}


@pytest.mark.parametrize("entry", ["Job", "AsyncJob"])
def test_a_job_started_before_a_landlock_domain_refuses_commands_after_it(entry, nobody_dir, no_leftovers):
    reports = landlocked(caller(nobody_dir, LANDLOCK + textwrap.dedent("""
        argv = ["head", "-c4", "/etc/shadow"]
        if sys.argv[1] == "Job":
            with sandbox.Job(userns=False) as job:
                job.run(["true"])
                landlock_out_of_etc()
                try:
                    report(out=job.run(argv, capture_output=True).stdout.decode())
                except sandbox.SandboxError as exc:
                    report(error=str(exc))
        else:
            async def main():
                # One worker, made before the domain: the new sandbox below is started from outside it.
                asyncio.get_running_loop().set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=1))
                async with sandbox.AsyncJob(userns=False) as job:
                    await job.run(["true"])
                    landlock_out_of_etc()
                    try:
                        report(out=(await job.run(argv, capture_output=True)).stdout.decode())
                    except sandbox.SandboxError as exc:
                        report(error=str(exc))
                    try:
                        report(out=(await sandbox.run_async(argv, capture_output=True, userns=False)).stdout.decode())
                    except sandbox.SandboxError as exc:
                        report(error=str(exc))
            asyncio.run(main())
    """), entry))
    assert reports[0] == {"error": "refused: the caller entered a confinement (Landlock, an LSM's) since this "
                                   "sandbox.Job started, and it lends none of its own; start a new sandbox.Job for "
                                   "this command"}
    if entry == "AsyncJob":  # and a new sandbox from the loop, whose worker thread is outside the domain
        assert reports[1] == {"error": "refused: the event loop's thread has other securebits, or a confinement "
                                       "(Landlock, an LSM's), than the worker thread that starts its sandbox, and no "
                                       "server can be started with them; set them before the loop's executor starts "
                                       "its threads"}

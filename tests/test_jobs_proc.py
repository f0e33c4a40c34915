"""A job that unmounts /proc (its own, and the host's below it), mounts a tmpfs over it or binds a fake file
over a mountinfo: the sandbox ends when the job ends (the reaper counts its processes in its own /proc, not
in the host's that shows then), --list shows the true mount table and directory, and a command --enter put
inside still gets the stop."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path

import pytest
from test_named import ENTRY_POINTS, PRELUDE, STARTS, cli, unique_name

from support import CLI, PYTHON, launched, log_lines, read_status, wait_for

FAKE = "1 0 0:1 / / rw - fake fake rw\n"  # a mount table with one mount, which no sandbox has

SABOTAGE = {
    "umount /proc": "umount /proc",
    "umount /proc twice": "umount /proc && umount /proc",  # the host's too: we never keep it busy
    "tmpfs over /proc": f"mount -t tmpfs none /proc && mkdir /proc/self /proc/1 && printf '{FAKE}' > /proc/1/mountinfo"
                        " && cp /proc/1/mountinfo /proc/self/mountinfo",
    "a fake mountinfo": "mount --bind {fake} /proc/self/mountinfo && mount --bind {fake} /proc/1/mountinfo",
}
JOB = "cd /mnt && {sabotage} && echo ready > {flag} && while [ ! -e {go} ]; do sleep 0.05; done"
# The sandbox's grace period; it must end well within it (a reaper that takes the host's processes for its
# own waits for all of it, and a session's end shows nothing else).
GRACE = 60
WITHIN = 30


class Saboteur:
    """A sandbox (--tmpfs /mnt) whose job does one of SABOTAGE, says so, and ends when told to."""

    def __init__(self, tmp_path: Path, entry: str, sabotage: str) -> None:
        self.name = unique_name()
        self.entry = entry
        self.flag, self.go, self.events = tmp_path / "flag", tmp_path / "go", tmp_path / "events.jsonl"
        fake = tmp_path / "mountinfo"
        fake.write_text(FAKE)
        argv = ["sh", "-c", JOB.format(sabotage=SABOTAGE[sabotage].format(fake=fake), flag=self.flag, go=self.go)]
        if entry == "cli":
            self.argv = [CLI, "--name", self.name, "--tmpfs", "/mnt", "--grace", str(GRACE), "--json-status",
                         str(self.events), "--", *argv]
        else:
            start = STARTS[entry].replace("name=NAME,", f"name=NAME, tmpfs=['/mnt'], grace={GRACE},")
            self.argv = [PYTHON, "-c", PRELUDE.format(name=self.name, argv=argv, events=str(self.events)) + start]

    @property
    def session(self) -> bool:
        return self.entry in ("Job", "AsyncJob")

    def ended_by_itself(self, launcher: subprocess.Popen) -> list[dict]:
        """Tell the job to end; the sandbox ends with it, well within its grace period, and nothing is killed.
        Its events."""
        self.go.touch()
        assert launcher.wait(timeout=WITHIN) == 0
        events = read_status(self.events)
        assert "killed" not in [e["event"] for e in events], events
        return events


def mount_table(pid: int) -> list[tuple[str, str]]:
    """(target, type) of each mount in pid's mount table, as the host's /proc says."""
    found = []
    with open(f"/proc/{pid}/mountinfo") as f:
        for line in f:
            fields = line.split()
            target = re.sub(r"\\([0-7]{3})", lambda octal: chr(int(octal.group(1), 8)), fields[4])
            found.append((target, fields[fields.index("-", 6) + 1]))
    return found


def listed(name: str) -> dict:
    return {s["name"]: s for s in json.loads(cli("--list", "--json").stdout)}[name]


def shows_the_truth(name: str) -> bool:
    """--list shows the sandbox's mount table as its reaper has it (the host's mounts come and go meanwhile:
    other programs, propagated into the sandbox; asked again until both agree)."""
    shown = listed(name)
    return [(m["target"], m["fstype"]) for m in shown["mounts"]] == mount_table(shown["reaper_pid"])


@pytest.mark.parametrize(("entry", "sabotage"), [*((entry, "umount /proc") for entry in ENTRY_POINTS),
                                                 *(("cli", way) for way in SABOTAGE if way != "umount /proc")])
def test_the_sandbox_ends_with_its_job_and_list_shows_the_truth(tmp_path, entry, sabotage, no_leftovers):
    saboteur = Saboteur(tmp_path, entry, sabotage)
    with launched(saboteur.argv, cwd=tmp_path, stdout=subprocess.DEVNULL) as launcher:
        assert wait_for(lambda: log_lines(saboteur.flag) == ["ready"], timeout=60)
        shown = listed(saboteur.name)
        assert shown["state"] == "running"
        assert ("/mnt", "tmpfs") in [(m["target"], m["fstype"]) for m in shown["mounts"]]
        assert wait_for(lambda: shows_the_truth(saboteur.name), timeout=30, interval=0.2)
        if not saboteur.session:
            assert shown["cwd"] == "/mnt"
        events = saboteur.ended_by_itself(launcher)
    stops = [e["reason"] for e in events if e["event"] == "stopping"]
    assert stops == (["context exited"] if saboteur.session else []), events


@pytest.mark.parametrize("sabotage", ["umount /proc", "umount /proc twice", "tmpfs over /proc"])
def test_a_command_entered_after_the_sabotage_gets_the_stop_at_the_end(tmp_path, sabotage, no_leftovers):
    """The main process ends while an entered command runs: the reaper finds it in its own /proc and stops it
    as it stops any process of the sandbox (the stop signal, within the grace period)."""
    saboteur = Saboteur(tmp_path, "cli", sabotage)
    entered = tmp_path / "entered"
    with launched(saboteur.argv, cwd=tmp_path) as launcher:
        assert wait_for(lambda: log_lines(saboteur.flag) == ["ready"], timeout=60)
        with launched([CLI, "--enter", saboteur.name, "--", "sh", "-c", f"echo in > {entered}; exec sleep 1000"],
                      cwd=tmp_path) as command:
            assert wait_for(lambda: log_lines(entered) == ["in"], timeout=60)
            events = saboteur.ended_by_itself(launcher)
            assert command.wait(timeout=60) == -signal.SIGTERM
    stops = [(e["reason"], e["signal"]) for e in events if e["event"] == "stopping"]
    assert stops == [("main process exited", "SIGTERM")], events

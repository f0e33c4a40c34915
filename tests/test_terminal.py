"""Behaviour 9: the job keeps the controlling terminal: it reads from stdin and /dev/tty, and
Ctrl+Z suspends the whole job while fg resumes it, as with a job run by bash."""

from __future__ import annotations

import os

from support import CLI, Terminal, suspend_and_resume

READER = """
read -r -p "passphrase: " first
read -r -p "again: " second < /dev/tty
echo "got $first and $second"
"""


def test_the_job_reads_a_typed_passphrase_from_stdin_and_dev_tty(tmp_path):
    term = Terminal([CLI, "bash", "-c", READER], tmp_path)
    try:
        assert term.expect(b"passphrase: ")
        term.type(b"secret1\n")
        assert term.expect(b"again: ")
        term.type(b"secret2\n")
        status = term.wait()
    finally:
        term.close()
    assert b"got secret1 and secret2" in term.output
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_ctrl_z_suspends_the_job_and_fg_resumes_it(tmp_path):
    counter = tmp_path / "count"
    job = f"i=0; while [ $i -lt 300 ]; do i=$((i+1)); echo $i > {counter}; sleep 0.02; done; echo finished"
    env = dict(os.environ, PS1="$ ", TERM="dumb")
    term = Terminal(["bash", "--norc", "--noprofile", "-i"], tmp_path, env)
    try:
        assert term.expect(b"$ ")
        term.type(f"{CLI} bash -c '{job}' & echo launcher=$!; fg\n".encode())
        suspend_and_resume(term, counter)
        term.type(b"exit\n")
        term.wait()
    finally:
        term.close()

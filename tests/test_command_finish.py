"""A command that feels finished: --version and sandbox.__version__ from the package's metadata, a man page
written from the click command (current, well-formed, installed by a wheel where man finds it), shell
completion, and --help grouped by topic from the option table."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest

import sandbox
from sandbox.cli import TOPICS
from sandbox.cli.manpage import EVENTS, render
from sandboxed_run_helpers.shared.options import OPTIONS
from support import CLI

ROOT = Path(__file__).resolve().parent.parent
MAN_PAGE = ROOT / "man" / "sandboxed-run.1"


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=60, env=env)


# -- version ------------------------------------------------------------------------------------------

def test_one_version_everywhere():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert version("sandboxed-run") == declared == sandbox.__version__
    result = run_cli("--version")
    assert (result.returncode, result.stdout, result.stderr) == (0, f"sandboxed-run {declared}\n", "")


def test_version_wins_over_a_command():
    result = run_cli("--version", "--", "false")
    assert (result.returncode, result.stdout) == (0, f"sandboxed-run {sandbox.__version__}\n")


# -- --help ---------------------------------------------------------------------------------------------

def sections(text: str) -> dict[str, list[str]]:
    """The --help sections (a line "Title:" at the left margin) and the options listed in each."""
    found: dict[str, list[str]] = {}
    title = None
    for line in text.splitlines():
        if re.fullmatch(r"\S.*:", line):
            title = line[:-1]
            found[title] = []
        elif title and re.match(r"  (-\w, )?--", line):
            found[title].append(next(word for word in line.split() if word.startswith("--")).rstrip(","))
    return found


def test_help_groups_every_option_by_its_topic_in_order():
    result = run_cli("--help")
    assert result.returncode == 0
    found = sections(result.stdout)
    expected: dict[str, list[str]] = {}
    for option in OPTIONS:
        if option.in_cli:
            expected.setdefault(TOPICS[option.topic], []).append(option.flag)
    expected["Other"] = ["--version", "--help"]
    assert list(found) == [title for title in (*TOPICS.values(), "Other") if title in expected]
    for title, flags in expected.items():
        assert [f.split("/")[0] for f in found[title]] == flags, title
    assert "COMMAND..." not in result.stdout.split("Other:")[1]  # the argument is in the usage line only
    assert max(len(line) for line in result.stdout.splitlines()) <= 100


# -- man page -------------------------------------------------------------------------------------------

def test_the_man_page_is_written_from_the_command_and_current():
    assert MAN_PAGE.read_text() == render(), \
        "man/sandboxed-run.1 is stale: .venv/bin/python -m sandbox.cli.manpage > man/sandboxed-run.1"


def test_the_man_page_lists_every_option_and_the_exit_codes():
    page = MAN_PAGE.read_text()
    for option in OPTIONS:
        if option.in_cli:
            assert f"\\fB{option.flag.replace('-', chr(92) + '-')}" in page, option.flag
    for words in ("\\-\\-version", ".SH EXIT STATUS", "125", "_SANDBOXED_RUN_COMPLETE=bash_source",
                  f'"sandboxed-run {sandbox.__version__}"'):
        assert words in page


def test_the_man_page_names_every_event_of_the_command_with_the_schemas_fields():
    whole = json.loads((ROOT / "docs" / "status.schema.json").read_text())
    schema = whole["$defs"]
    names = whole["properties"]["event"]["enum"]
    assert [event for event, _ in EVENTS] == [e for e in names if e != "ready"]  # ready: a sandbox.Job's
    for event, text in EVENTS:
        fields = text.split(":", 1)[0].split(", ")
        assert fields == [f for f in schema[event]["properties"] if f not in ("event", "time")], event


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
def test_the_man_page_is_well_formed():
    result = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(MAN_PAGE)], capture_output=True, text=True)
    assert (result.returncode, result.stderr) == (0, "")
    shown = subprocess.run(["groff", "-man", "-Tascii", "-P-cbou", str(MAN_PAGE)], capture_output=True,
                           text=True).stdout
    assert "--tmpfs DIR[:OPTS]" in shown and re.search(r"sandboxed-run +- +run COMMAND", shown)
    # Each form of the command on a line of its own, as the synopsis shows it.
    synopsis = shown.split("SYNOPSIS", 1)[1].split("DESCRIPTION", 1)[0]
    assert [line.strip() for line in synopsis.strip().splitlines()] == [
        "sandboxed-run [OPTIONS] [--] COMMAND [ARG]...", "sandboxed-run --list [--json]",
        "sandboxed-run --enter NAME [-- COMMAND [ARG]...]", "sandboxed-run --stop NAME [--grace DURATION]"]
    for section in ("EXIT STATUS", "STATUS EVENTS", "FILES", "ENVIRONMENT", "EXAMPLES", "SEE ALSO"):
        assert re.search(rf"^{section}$", shown, re.M), section


def test_the_man_page_holds_no_control_bytes_and_points_at_man_pages():
    """roff shows a control byte as it is (click's \\b block marks once leaked in as a raw backspace), and an
    installed page cannot point at a README that installed copies do not have."""
    page = MAN_PAGE.read_text()
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", page)
    see_also = page.split(".SH SEE ALSO", 1)[1]
    assert "README" not in page and re.search(r"\\fBbwrap\\fR\(1\)", see_also)


def test_the_package_installs_the_man_page_where_man_finds_it(tmp_path):
    """A wheel of the project carries it as data for share/man/man1, and the licence; installed in a fresh
    environment, man finds it through that environment's bin directory on PATH. (Editable installs get no data
    files from setuptools: there man/sandboxed-run.1 is read with man -l.)"""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    assert declared == {"share/man/man1": ["man/sandboxed-run.1"]}
    wheels, source = tmp_path / "wheels", tmp_path / "source"
    # Built from a copy: an in-tree build leaves build/ behind, whose stale files later wheels would take.
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", "build", "*.egg-info", "__pycache__", "vm"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(source)],
                           capture_output=True, text=True, timeout=600)
    if build.returncode != 0 and "Could not find a version" in build.stderr:
        pytest.skip("no package index to build the wheel with (setuptools)")
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("sandboxed_run-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    # The licence travels with the package, named by its SPDX expression.
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names
    assert "License-Expression: MIT" in metadata.splitlines()
    target = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(target)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(target / "bin" / "python"), "install", "-q",
                    "--no-deps", "--no-index", str(wheel)], check=True, timeout=300)
    installed = target / "share" / "man" / "man1" / "sandboxed-run.1"
    assert installed.read_text() == MAN_PAGE.read_text()
    if shutil.which("man"):
        env = {k: v for k, v in os.environ.items() if k != "MANPATH"}
        env["PATH"] = f"{target / 'bin'}:/usr/bin:/bin"
        found = subprocess.run(["man", "-w", "sandboxed-run"], capture_output=True, text=True, env=env)
        assert found.stdout.strip() == str(installed), found.stderr


# -- shell completion -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("shell", "words"), [("bash", "complete -o nosort -F _sandboxed_run_completion"),
                                              ("zsh", "#compdef sandboxed-run"), ("fish", "complete --no-files")])
def test_completion_scripts(shell, words):
    result = run_cli(env={**os.environ, "_SANDBOXED_RUN_COMPLETE": f"{shell}_source"})
    assert result.returncode == 0 and words in result.stdout, result.stderr


@pytest.mark.parametrize(("line", "expected"), [
    ("sandboxed-run --tm", "plain,--tmpfs"), ("sandboxed-run --tmpfs ", "dir,"), ("sandboxed-run --bind ", "file,"),
    ("sandboxed-run --net ", ""),
])
def test_completion_completes_flags_and_paths(line, expected):
    env = {**os.environ, "_SANDBOXED_RUN_COMPLETE": "bash_complete", "COMP_WORDS": line,
           "COMP_CWORD": str(len(line.split()) - (0 if line.endswith(" ") else 1))}
    result = run_cli(env=env)
    assert (result.returncode, result.stdout.strip()) == (0, expected), result.stderr

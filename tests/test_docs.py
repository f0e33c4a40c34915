"""The manual as a reader meets it: README.md is a short front door that starts with the two set-up commands
and links every page of docs/; every link between the pages resolves; and every table or list the code
holds (the options, the status events, the stop reasons, the exit statuses, the hook variables, the usage
fields) is written from the code (docs/tables.py) or checked against it here."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from sandbox.cli import TOPICS
from sandboxed_run_helpers.shared import errors, hooks, wire
from sandboxed_run_helpers.shared.options import OPTIONS, RENAMED
from sandboxed_run_helpers.shared.usage import Usage

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
LINKED = [*PAGES, ROOT / "ARCHITECTURE.md", ROOT / "benchmarks" / "README.md"]

# The two set-up commands are a contract: the first installs everything and runs the demo backup, the
# second runs the tests, and CI runs that same command. They stay first, word for word.
INSTALL = ("apt-get update && apt-get install -y libcap-dev libseccomp2 e2fsprogs rsync cryptsetup iproute2 "
           "busybox-static && "
           "python3 -m venv .venv && .venv/bin/pip install -e '.[dev]' && "
           ".venv/bin/sandboxed-run --tmpfs /mnt -- examples/backup.sh sandbox")
TEST = ".venv/bin/python -m pytest"
MOST_LINES = 250

# Linked before it exists: the JSON Schema of the status events comes with its own change. Once it is in
# the repository its link is checked like any other.
ARRIVING = {DOCS / "status.schema.json"}

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """The page without its fenced code blocks."""
    return FENCE.sub("", text)


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in prose(page.read_text()).splitlines():
        heading = re.match(r"#{1,6} (.+)", line)
        if heading:
            base = slug(heading[1])
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def table(page: Path, header: str) -> list[list[str]]:
    """The rows (cells stripped) of the table on page whose header row starts with header."""
    lines = page.read_text().splitlines()
    for index, line in enumerate(lines):
        if line.startswith("| " + header + " |"):
            rows = []
            for row in lines[index + 2:]:
                if not row.startswith("|"):
                    break
                rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", row)[1:-1]])
            return rows
    raise AssertionError(f"{page.name} has no table headed {header!r}")


def spans(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def known_flags() -> set[str]:
    flags = {"--version", "--help", "-h"} | {"--" + old for old in RENAMED}
    for option in OPTIONS:
        if option.in_cli:
            flags |= {option.flag, *option.aliases, *([option.short] if option.short else [])}
            if option.switch and option.default is True:
                flags.add(f"--no-{option.flag[2:]}")
    return flags


def tables_module():
    spec = importlib.util.spec_from_file_location("docs_tables", DOCS / "tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- the front door --------------------------------------------------------------------------------------

def test_the_readme_is_short_and_starts_with_the_two_set_up_commands():
    text = README.read_text()
    assert len(text.splitlines()) <= MOST_LINES, f"README.md has {len(text.splitlines())} lines; the most is 250"
    blocks = FENCE.findall(text)
    assert [b.strip() for b in blocks[:2]] == [INSTALL, TEST], "README.md must start with the two set-up commands"
    before = text[:text.index(blocks[1]) + len(blocks[1])]
    assert not re.search(r"^##", before, re.MULTILINE), "the two set-up commands come before any section"


def test_ci_runs_the_readmes_test_command():
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    runs = [line for line in lines if line == TEST or line.startswith(TEST + " ")]
    assert runs, f".ci/run does not run README.md's test command ({TEST})"
    assert all(" -- " not in line and " tests/" not in line for line in runs), "CI runs the whole suite"


def test_every_page_of_docs_is_linked_from_the_readme():
    linked = {(README.parent / target.split("#")[0]).resolve() for target in LINK.findall(README.read_text())}
    missing = [page.name for page in sorted(DOCS.glob("*.md")) if page.resolve() not in linked]
    assert not missing, f"README.md links no docs/{', docs/'.join(missing)}"


def test_every_link_between_the_pages_resolves():
    broken = []
    for page in LINKED:
        for target in LINK.findall(prose(page.read_text())):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:: not ours to check
            path, _, anchor = target.partition("#")
            where = (page.parent / path).resolve() if path else page
            if not where.exists():
                if where not in ARRIVING:
                    broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
                continue
            if anchor and where.suffix == ".md" and anchor not in anchors(where):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "broken links: " + "; ".join(broken)


# -- tables written from the code ------------------------------------------------------------------------

def test_the_tables_of_options_are_written_from_the_option_table_and_current():
    tables = tables_module()
    assert "<!-- table: options (docs/tables.py) -->" in (DOCS / "command.md").read_text()
    assert "<!-- table: keywords (docs/tables.py) -->" in (DOCS / "api.md").read_text()
    stale = [str(page.relative_to(ROOT)) for page in tables.stale()]
    assert not stale, f"stale tables in {', '.join(stale)}: .venv/bin/python docs/tables.py"


def test_the_command_pages_table_holds_every_option_of_the_command_and_the_api():
    text = (DOCS / "command.md").read_text()
    for option in OPTIONS:
        if option.in_cli:
            assert f"`{option.flag}" in text, option.flag
        if option.in_api:
            assert f"`{option.name}=" in text, option.name
    for title in TOPICS.values():
        if any(TOPICS.get(o.topic) == title for o in OPTIONS):
            assert f"**{title}**" in text


# -- lists checked against the code ----------------------------------------------------------------------

def command_line_flags(words: list[str]) -> list[str]:
    """The flags of one sandboxed-run command line (the words after its name): up to `--`, the command, or the
    end of the shell's command (`&`, `;`, `|`). A flag's value is skipped as the command line would take it."""
    takes_value = {spelling for o in OPTIONS if o.in_cli and not o.switch
                   for spelling in (o.flag, *o.aliases, *([o.short] if o.short else []))}
    flags, words = [], list(words)
    while words:
        word = words.pop(0)
        if word == "--" or not word.startswith("-") or word in ("&", ";", "|", "&&", "||"):
            break
        flag = word.split("=")[0]
        flags.append(flag)
        if flag in takes_value and "=" not in word and words:
            words.pop(0)
    return flags


def test_every_flag_the_pages_name_exists():
    """A flag in a code span of the prose (`--tmpfs DIR`), or in a command line of sandboxed-run (in a span or a
    code block), is one the command has: a renamed or misspelt option in the manual fails."""
    known = known_flags()
    # Flags of other programs, named in spans of their own: rsync's, and sandbox-open-luks's.
    foreign = {"--no-owner", "--key-file"}
    unknown = []
    for page in PAGES:
        text = page.read_text()
        flags: list[str] = []
        lines = [line for block in FENCE.findall(text) for line in block.splitlines()]
        for span in spans(prose(text)):
            if span.startswith("-") and span != "--":
                flags += [word.split("=")[0].rstrip(",.;:)") for word in span.split() if word.startswith("-")]
            lines.append(span)
        for line in lines:
            for found in re.finditer(r"(?:^|[\s/])sandboxed-run(?= )", line):
                flags += command_line_flags(line[found.end():].split())
        for flag in flags:
            if re.fullmatch(r"--[a-z][a-z-]*|-[a-zA-Z]", flag) and flag not in known and flag not in foreign:
                unknown.append(f"{page.name}: {flag}")
    assert not unknown, "flags the command does not have: " + ", ".join(sorted(set(unknown)))


def test_the_limits_table_lists_every_limit_option():
    rows = table(DOCS / "confinement.md", "option (API keyword)")
    named = {spans(row[0])[0].split()[0] for row in rows}
    assert named == {o.flag for o in OPTIONS if o.topic == "limits"}
    for row in rows:
        option = next(o for o in OPTIONS if o.flag == spans(row[0])[0].split()[0])
        assert f"`{option.name}=" in row[0], row[0]


def test_the_status_events_and_stop_reasons_are_the_codes():
    page = DOCS / "status.md"
    events = [spans(row[0])[0] for row in table(page, "event")]
    assert sorted(events) == sorted(str(e) for e in wire.EventName)
    reasons = [spans(row[0])[0] for row in table(page, "reason")]
    assert sorted(reasons) == sorted(str(r) for r in wire.StopReason)


def test_the_hook_variables_and_usage_fields_are_the_codes():
    page = DOCS / "status.md"
    variables = [spans(row[0])[0] for row in table(page, "variable")]
    assert sorted(variables) == sorted(hooks.environment(None, None, None))
    fields = [field for row in table(page, "field (`sandbox.Usage`)") for field in spans(row[0])]
    assert sorted(fields) == sorted(Usage._fields)


def test_the_exit_statuses_are_the_codes():
    def statuses(page: Path, header: str) -> set[int]:
        return {int(m) for row in table(page, header) for m in re.findall(r"^\*\*(\d+)\*\*$", row[0])}

    assert statuses(DOCS / "command.md", "status") == {
        errors.EXIT_TIMEOUT, errors.EXIT_FAILURE, errors.EXIT_NOT_EXECUTABLE, errors.EXIT_NOT_FOUND,
        errors.EXIT_USAGE}
    assert statuses(DOCS / "running.md", "`--stop` exits") == {
        0, errors.EXIT_NO_SUCH_SANDBOX, errors.EXIT_NOT_PERMITTED, errors.EXIT_FAILURE, errors.EXIT_USAGE}


def test_the_test_index_names_every_test_file():
    """docs/testing.md says what each test file holds: a new file comes with its row."""
    index = (DOCS / "testing.md").read_text()
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py"))
    assert [f for f in files if f"]({'../' + f})" not in index] == []


def test_the_subprocess_page_names_every_parameter_of_subprocess_and_asyncio():
    import asyncio
    import inspect
    import subprocess

    page = (DOCS / "from-subprocess.md").read_text()
    for function in (subprocess.Popen, subprocess.run, asyncio.create_subprocess_exec):
        for name in inspect.signature(function).parameters:
            if name not in ("popenargs", "kwargs"):  # run's *popenargs and **kwargs are Popen's, named above
                assert f"`{name}`" in page, f"docs/from-subprocess.md does not name {function.__name__}'s {name}"
    for name in ("communicate", "poll", "wait", "send_signal", "terminate", "kill", "returncode",
                 "CalledProcessError", "TimeoutExpired", "SubprocessError"):
        assert name in page, name

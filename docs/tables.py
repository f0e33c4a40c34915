"""The tables of the docs pages that the option table holds, written from it: no page lists an option that
does not exist, or misses one that does.

A page marks each such table with two comments, and this script writes what lies between them:

    <!-- table: options (docs/tables.py) -->
    ...
    <!-- end of table -->

`.venv/bin/python docs/tables.py` rewrites every marked table in place; `--check` changes nothing and exits 1,
naming the stale pages (tests/test_docs.py makes the same check).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

from sandbox.cli import TOPICS
from sandboxed_run_helpers.shared.options import OPTIONS, Option

DOCS = Path(__file__).resolve().parent
BLOCK = re.compile(r"(<!-- table: (?P<name>[a-z]+) \(docs/tables\.py\) -->\n)(?P<body>.*?)(<!-- end of table -->)",
                   re.DOTALL)


def cell(text: str) -> str:
    """Text as one cell of a Markdown table: a '|' would end the cell."""
    return text.replace("|", "\\|")


def spellings(option: Option) -> list[str]:
    """The option as the command line takes it, every spelling, each with its value's metavar."""
    if not option.in_cli:
        return []
    value = f" {option.metavar}" if option.metavar and not option.switch else ""
    if option.switch and option.default is True:
        return [option.flag, f"--no-{option.flag[2:]}"]
    return [*([option.short] if option.short else []), *(f + value for f in (option.flag, *option.aliases))]


def keyword(option: Option) -> str:
    """The option as the API takes it, with its default."""
    return f"{option.name}={option.default!r}" if option.in_api else ""


def options_table() -> str:
    """Every option, by topic in --help's order: its flags, its API keyword and default, its help."""
    parts = []
    for topic, title in TOPICS.items():
        rows = [o for o in OPTIONS if o.topic == topic]
        if not rows:
            continue
        parts.append(f"**{title}**\n\n| option | API keyword | what it does |\n| --- | --- | --- |\n")
        for option in rows:
            flags = ", ".join(f"`{cell(s)}`" for s in spellings(option)) or "(API only)"
            api = f"`{keyword(option)}`" if option.in_api else "(command only)"
            parts.append(f"| {flags} | {api} | {cell(option.help)} |\n")
        parts.append("\n")
    return "".join(parts).rstrip("\n") + "\n"


def keywords_table() -> str:
    """The API's keywords with their defaults, and the flag each one is on the command line."""
    rows = ["| keyword and default | on the command line |\n", "| --- | --- |\n"]
    for option in OPTIONS:
        if option.in_api:
            flags = ", ".join(f"`{cell(s)}`" for s in spellings(option)) or "(API only)"
            rows.append(f"| `{keyword(option)}` | {flags} |\n")
    return "".join(rows)


TABLES: dict[str, Callable[[], str]] = {"options": options_table, "keywords": keywords_table}


def rewritten(text: str) -> str:
    """The page with each marked table written afresh."""
    def fill(match: re.Match) -> str:
        name = match["name"]
        if name not in TABLES:
            raise KeyError(f"no table named {name!r} (docs/tables.py knows {', '.join(TABLES)})")
        return match[1] + TABLES[name]() + match[4]
    return BLOCK.sub(fill, text)


def pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def stale() -> list[Path]:
    """The pages whose marked tables differ from what the option table says now."""
    return [page for page in pages() if rewritten(page.read_text()) != page.read_text()]


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        found = stale()
        for page in found:
            print(f"{page.relative_to(DOCS.parent)} is stale: .venv/bin/python docs/tables.py", file=sys.stderr)
        return 1 if found else 0
    if argv:
        print("usage: docs/tables.py [--check]", file=sys.stderr)
        return 2
    for page in pages():
        text = page.read_text()
        new = rewritten(text)
        if new != text:
            page.write_text(new)
            print(f"wrote {page.relative_to(DOCS.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

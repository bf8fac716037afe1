"""Write ``docs/reference/cli.md`` from the ``ttlx`` command's own ``--help`` texts.

``python scripts/cli_reference.py`` rewrites the page; ``python scripts/cli_reference.py --check`` writes
nothing and exits 1 when the committed page differs from what the code gives (``nox -s docs`` and the docs
test run it), so the page cannot go stale unnoticed. Help is rendered by click's plain formatter (no rich
boxes, no colour) at a fixed width, so the page is the same on every machine and terminal.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "reference" / "cli.md"
WIDTH = 100

HEADER = """\
# Command-line reference

Every `ttlx` command and sub-command with its `--help` text. This page is generated from the code:
after changing a command, run `python scripts/cli_reference.py` and commit the page
(`python scripts/cli_reference.py --check` and the docs test fail while it is stale).
"""


def walk(command, path: tuple[str, ...] = ("ttlx",), parent=None) -> Iterator[tuple[tuple[str, ...], object, object]]:
    """Every command under ``command`` (itself first), with its full name and a click context."""
    settings = {**command.context_settings, "terminal_width": WIDTH, "max_content_width": WIDTH}
    ctx = command.context_class(command, info_name=path[-1], parent=parent, **settings)
    yield path, command, ctx
    for name, sub in getattr(command, "commands", {}).items():
        yield from walk(sub, (*path, name), ctx)


def help_text(command, ctx) -> str:
    """``--help`` of one command as plain text (typer's rich panels switched off for the call)."""
    rich_mode = getattr(command, "rich_markup_mode", None)
    if hasattr(command, "rich_markup_mode"):
        command.rich_markup_mode = None
    try:
        text = command.get_help(ctx)
    finally:
        if hasattr(command, "rich_markup_mode"):
            command.rich_markup_mode = rich_mode
    return "\n".join(line.rstrip() for line in text.splitlines())


def reference_page() -> str:
    """The page's text, from the Typer app ``ttlx.cli.app``."""
    import typer

    from ttlx.cli import app

    parts = [HEADER]
    for path, command, ctx in walk(typer.main.get_command(app)):
        parts.append(f"## {' '.join(path)}\n\n```text\n{help_text(command, ctx)}\n```\n")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed page is stale")
    args = parser.parse_args(argv)
    page = reference_page()
    if args.check:
        if not PAGE.is_file() or PAGE.read_text(encoding="utf-8") != page:
            print(f"{PAGE.relative_to(ROOT)} is stale; run `python scripts/cli_reference.py` and commit it.")
            return 1
        return 0
    PAGE.parent.mkdir(parents=True, exist_ok=True)
    PAGE.write_text(page, encoding="utf-8")
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Rich tables for the command line (and, later, the matplotlib figures of the paper)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def format_cell(value: Any) -> str:
    """Integers with thousands separators, floats to 3 decimals, shapes as 'AxBxC', None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, (list, tuple)):
        return "x".join(str(v) for v in value)
    return str(value)


def print_rows(rows: Sequence[dict[str, Any]], title: str | None = None, console=None) -> None:
    """Print dict rows as one rich table; columns are the keys in first-seen order, numbers right-aligned."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    table = Table(title=title, box=box.SIMPLE_HEAD)
    for column in columns:
        numeric = all(isinstance(r.get(column), (int, float)) and not isinstance(r.get(column), bool)
                      for r in rows if r.get(column) is not None)
        # numbers never wrap or lose digits; long names fold onto a second line instead of being cut
        table.add_column(column.replace("_", " "), justify="right" if numeric else "left",
                         no_wrap=numeric, overflow="fold")
    for row in rows:
        table.add_row(*(format_cell(row.get(column)) for column in columns))
    (console or Console()).print(table)

"""What ``ttlx prepare`` shows while it works: a rich status line or progress bar on stderr, or nothing."""

from __future__ import annotations


def console():
    from rich.console import Console

    return Console(stderr=True)


class progress:
    """A rich progress bar (or nothing) whose ``advance(n)`` the builder calls per image."""

    def __init__(self, show: bool, title: str, total: int):
        self.show, self.title, self.total = show, title, total

    def __enter__(self):
        if not self.show:
            return lambda n: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console(),
        )
        self.bar.start()
        task = self.bar.add_task(self.title, total=self.total)
        return lambda n: self.bar.advance(task, n)

    def __exit__(self, *exc):
        if self.show:
            self.bar.stop()
        return False

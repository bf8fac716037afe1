"""The training progress display: a rich bar per epoch (step, loss, learning rate, images/s, time left)
and one summary line per finished epoch."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class TrainProgress:
    """Shows the steps of the current epoch (when ``bar``) and a line per epoch (unless ``quiet``)."""

    def __init__(self, max_epoch: int, bar: bool = True, quiet: bool = False, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.bar, self.quiet = bar and not quiet, quiet
        self.max_epoch = max_epoch
        self._progress: Progress | None = None
        self._task = None

    @contextlib.contextmanager
    def running(self) -> Iterator[TrainProgress]:
        if not self.bar:
            yield self
            return
        self._progress = Progress(
            TextColumn("epoch {task.fields[epoch]}/{task.fields[max_epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.2e}"),
            TextColumn("{task.fields[ips]:.1f} img/s"),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        with self._progress:
            yield self
        self._progress = None

    def start_epoch(self, epoch: int, steps: int, lr: float) -> None:
        if self._progress is None:
            return
        if self._task is not None:
            self._progress.remove_task(self._task)
        self._task = self._progress.add_task("train", total=steps, epoch=epoch, max_epoch=self.max_epoch,
                                             loss=float("nan"), lr=lr, ips=0.0)

    def update(self, step: int, loss: float, images_per_s: float) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=step, loss=loss, ips=images_per_s)

    def epoch_done(self, row: dict, best: bool) -> None:
        if self.quiet:
            return
        marker = " [green]best[/green]" if best else ""
        self.console.print(
            f"epoch {row['epoch']:>3}  train loss {row['train_loss']:.4f}  val loss {row['val_loss']:.4f}  "
            f"val acc {row['val_accuracy']:.4f}  val AUROC {row['val_auroc']:.4f}  lr {row['lr']:.2e}  "
            f"{row['images_per_s']:.1f} img/s{marker}"
        )

    def note(self, message: str) -> None:
        """One line for the user; never hard-wrapped, so paths in it can be copied whole."""
        if not self.quiet:
            self.console.print(message, soft_wrap=True, highlight=False, markup=False)

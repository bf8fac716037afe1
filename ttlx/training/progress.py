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


# Share of an epoch's training time spent waiting for the loader above which ttlx train says so, once a run
# (from epoch 2 on: epoch 1 holds the compile)
INPUT_BOUND_SHARE = 0.25


def note_input_bound(history: list[dict], workers: int, epoch: int, input_wait: float,
                     display: TrainProgress) -> None:
    """Say once a run (call before this epoch's row joins ``history``) that the loader sets the pace."""
    def waited(row: dict) -> bool:
        return row["epoch"] >= 2 and row.get("input_wait", 0.0) > INPUT_BOUND_SHARE

    if not waited({"epoch": epoch, "input_wait": input_wait}) or any(map(waited, history)):
        return
    display.note(f"Note: the training loop waited for images during {input_wait:.0%} of epoch {epoch}, so the "
                 f"input pipeline sets the pace; more worker processes (--num-workers N, this run has {workers}) "
                 "or loader threads (TTLX_LOADER_THREADS=N) may speed it up.")

"""The training progress display: what the bar and the epoch lines show."""

from __future__ import annotations

import io

from rich.console import Console

from ttlx.training.progress import TrainProgress


def console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=200, color_system=None), out


def test_the_bar_shows_epoch_step_loss_lr_speed_and_time_left():
    screen, out = console()
    display = TrainProgress(max_epoch=3, console=screen)
    with display.running():
        display.start_epoch(2, steps=10, lr=1e-3)
        display.update(4, 0.5, 123.4)
        display._progress.refresh()
    text = out.getvalue()
    for part in ("epoch 2/3", "4/10", "loss 0.5000", "lr 1.00e-03", "123.4 img/s", "left"):
        assert part in text, part


def test_epoch_lines_and_notes_and_quiet_hosts():
    screen, out = console()
    display = TrainProgress(max_epoch=3, bar=False, console=screen)
    row = {"epoch": 1, "train_loss": 0.9, "val_loss": 0.8, "val_accuracy": 0.5, "val_auroc": 0.75, "lr": 1e-4,
           "images_per_s": 10.0}
    display.epoch_done(row, best=True)
    long_path = "/very/long/" + "x" * 300
    display.note(f"Resuming {long_path} after epoch 1.")
    lines = out.getvalue().splitlines()
    assert lines[0] == ("epoch   1  train loss 0.9000  val loss 0.8000  val acc 0.5000  val AUROC 0.7500  "
                        "lr 1.00e-04  10.0 img/s best")
    assert lines[1] == f"Resuming {long_path} after epoch 1."  # never wrapped: the path can be copied
    quiet_screen, quiet_out = console()
    quiet = TrainProgress(max_epoch=3, quiet=True, console=quiet_screen)
    with quiet.running():
        quiet.start_epoch(1, steps=2, lr=1e-3)
        quiet.epoch_done(row, best=False)
        quiet.note("hidden")
    assert quiet_out.getvalue() == ""  # other hosts of a multi-host run print nothing

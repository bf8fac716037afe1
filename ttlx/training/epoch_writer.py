"""An epoch made durable while the next one trains: its checkpoints are written in the background and its
``metrics.jsonl`` row is appended once they are complete.

So a row in ``metrics.jsonl`` always has its ``latest`` checkpoint on disk, as when the saves blocked the
loop, and a kill or a full disk during a save leaves the previous epoch's files as they were. What changed
is when the row appears: as soon as the checkpoints are written, which :meth:`EpochWriter.poll` checks after
each train step of the next epoch (about 0.3 s into it for a small model, 2-3 s for a ResNet50 FTL state on
a 2-core CPU machine), instead of before the next epoch starts. In a multi-process run every process waits
for the checkpoints at the same point instead (at the next epoch's end), so that all take the same steps.
"""

from __future__ import annotations

import jax

from ttlx.runs import checkpoint as ckpt
from ttlx.runs.run_dir import RunDir


class EpochWriter:
    """Writes each epoch's checkpoints and metrics row, and prunes the steps the run no longer keeps."""

    def __init__(self, checkpoints: ckpt.RunCheckpoints, run: RunDir):
        self.checkpoints = checkpoints
        self.run = run
        self._pending: tuple[dict, dict[int, int]] | None = None  # (row, kept) of the epoch being written
        self._polls = jax.process_count() == 1  # several processes settle at the same point instead

    def write(self, row: dict, latest: tuple[dict, dict], kept: dict[int, int],
              best: tuple[dict, dict] | None = None) -> None:
        """Start writing the epoch of ``row``: its ``latest`` step ((arrays, meta)), and its ``best`` step if it
        improved; ``kept`` maps each latest epoch to keep to the best epoch its history points at. The epoch
        before is settled first."""
        self.settle()
        epoch = row["epoch"]
        if best is not None:
            self.checkpoints.save(ckpt.BEST, epoch, *best)
        self.checkpoints.save(ckpt.LATEST, epoch, *latest)
        self._pending = (row, dict(kept))

    def poll(self) -> None:
        """Settle the epoch being written if its checkpoints are complete (never waits for them)."""
        if self._pending is not None and self._polls and not self.checkpoints.writing():
            self.settle()

    def settle(self) -> None:
        """Wait for the epoch being written, then prune older steps and append its row; a failed save raises
        :class:`ttlx.runs.checkpoint.CheckpointSaveError` and logs no row."""
        if self._pending is None:
            return
        (row, kept), self._pending = self._pending, None
        self.checkpoints.finish()
        self.checkpoints.keep_only(ckpt.LATEST, set(kept))
        self.checkpoints.keep_only(ckpt.BEST, set(kept.values()))
        self.run.append_metrics(row)

    def close(self) -> None:
        """Settle what is still being written, if it can be (this runs when training stopped on an error,
        which stays the one reported), and release the checkpoint managers."""
        try:
            self.settle()
        except Exception:  # noqa: BLE001 - the earlier epoch's files stay; a re-run resumes from them
            pass
        finally:
            self.checkpoints.close()

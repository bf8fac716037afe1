"""The 3D loader's speed: windows/s of ttlx's window loader against a straightforward numpy + scipy one.

Both read the same stored volumes (a ``synthetic3d`` dataset prepared at PENet's stored size, 208 x 208 in
plane) and make the same training windows: 24 slices, crop 192, flip, rotation within +-15 degrees (fill
-1000 HU), HU window. The straightforward loader is what the PENet reference does per window in one
process: slice the study out of ``np.load(..., mmap_mode='r')``, crop, ``np.flip``,
``scipy.ndimage.rotate`` (cubic spline, reshape off) over the window, clip and scale. ttlx's is
``make_loader`` as ``ttlx train`` uses it (grain, batches of 8), with 0 worker processes (its threads only)
and with ``--workers`` processes. ``--storage`` also times reading one window's int16 voxels from the
memory-mapped store against ArrayRecord records of 8-slice slabs (the alternative weighed for the store).

    python benchmarks/volume_loader.py --data-dir /tmp/vol_bench [--studies 24 --slices 96 --windows 96]

Prints one JSON line per measurement; a shared machine's load moves the numbers, so each is the best of
``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

WINDOW, CROP, STORED = 24, 192, 208


def straightforward(store_dir: Path, studies: list[tuple[int, int]], windows: int, seed: int = 0,
                    order: int = 3) -> float:
    """Windows/s of a one-process numpy + scipy loader over the same voxels (``order``: the rotation's spline
    order, 3 as the reference, 1 for bilinear as ttlx)."""
    from scipy.ndimage import rotate

    from ttlx.data.volumes import VolumeStore

    store = VolumeStore(store_dir)
    rng = np.random.default_rng(seed)
    start_time = time.perf_counter()
    for k in range(windows):
        record, depth = studies[k % len(studies)]
        start = int(rng.integers(0, max(depth - WINDOW, 0) + 1))
        volume = np.asarray(store.volume(record)[start:start + WINDOW], np.float32)
        top, left = rng.integers(0, STORED - CROP + 1, size=2)
        volume = volume[:, top:top + CROP, left:left + CROP]
        if rng.random() < 0.5:
            volume = np.flip(volume, axis=-1)
        volume = rotate(volume, int(rng.integers(-15, 16)), (-2, -1), reshape=False, cval=-1000.0, order=order)
        volume = np.clip((volume + 100.0) / 1000.0, 0.0, 1.0) - 0.15897
    return windows / (time.perf_counter() - start_time)


def ttlx_loader(data_dir: Path, windows: int, workers: int, batch: int = 8) -> float:
    from ttlx.data.pipeline import make_loader

    loader = make_loader("synthetic3d", data_dir, exp=1, split="train", batch_size=batch, image_size=CROP,
                         train=True, seed=0, num_workers=workers, window=WINDOW)
    iterator = iter(loader)
    try:
        next(iterator)  # start-up (worker processes, first reads) is not the steady rate
        start = time.perf_counter()
        for _ in range(windows // batch):
            next(iterator)
        return windows // batch * batch / (time.perf_counter() - start)
    finally:
        iterator.close()


def storage(store_dir: Path, work: Path, reads: int = 400) -> dict:
    """Reads/s of one window's voxels: memory map against ArrayRecord 8-slice slabs (page cache warm)."""
    from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

    from ttlx.data.volumes import VolumeStore

    store, slab = VolumeStore(store_dir), 8
    path = work / "slabs.array_record"
    first = {}
    writer = ArrayRecordWriter(str(path), "group_size:1")
    count = 0
    for record in range(len(store)):
        volume = store.volume(record)
        first[record] = count
        for s in range(0, volume.shape[0], slab):
            writer.write(np.ascontiguousarray(volume[s:s + slab]).tobytes())
            count += 1
    writer.close()
    reader = ArrayRecordReader(str(path))
    rng = np.random.default_rng(0)
    picks = [(int(r), int(rng.integers(0, store.shape(int(r))[0] - WINDOW + 1)))
             for r in rng.integers(0, len(store), size=reads)]
    rates = {}
    for name in ("memmap", "array_record"):
        start_time = time.perf_counter()
        for record, start in picks:
            if name == "memmap":
                window = np.array(store.window(record, start, WINDOW))
            else:
                height, width = store.shape(record)[1:]
                lo, hi = start // slab, (start + WINDOW - 1) // slab
                data = reader.read([first[record] + i for i in range(lo, hi + 1)])
                stack = np.concatenate([np.frombuffer(d, np.int16).reshape(-1, height, width) for d in data])
                window = stack[start - lo * slab:start - lo * slab + WINDOW]
            assert window.shape[0] == WINDOW
        rates[name] = reads / (time.perf_counter() - start_time)
    reader.close()
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--studies", type=int, default=24)
    parser.add_argument("--slices", type=int, default=96)
    parser.add_argument("--windows", type=int, default=96)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--storage", action="store_true")
    args = parser.parse_args()

    from ttlx.data.prepare import prepare_dataset
    from ttlx.data.store import load_prepared

    start = time.perf_counter()
    prepare_dataset("synthetic3d", args.data_dir, count=args.studies, slices=args.slices, size=STORED)
    prepared = load_prepared("synthetic3d", args.data_dir)
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "load": os.getloadavg()[0]}
    print(json.dumps({"prepare_s": round(time.perf_counter() - start, 2), **machine}), flush=True)
    from ttlx.data.split_files import split_positions
    from ttlx.data.volumes import VolumeStore

    store = VolumeStore(prepared.records_dir)
    train = [(int(r), store.shape(int(r))[0]) for r in split_positions(prepared, exp=1, split="train")]
    results: dict[str, list[float]] = {"straightforward": [], "straightforward_bilinear": [], "ttlx_0_workers": [],
                                       f"ttlx_{args.workers}_workers": []}
    for _ in range(args.repeats):  # alternating, so that a load that comes and goes falls on every side
        results["straightforward"].append(straightforward(prepared.records_dir, train, args.windows))
        results["straightforward_bilinear"].append(straightforward(prepared.records_dir, train, args.windows, order=1))
        results["ttlx_0_workers"].append(ttlx_loader(args.data_dir, args.windows, 0))
        results[f"ttlx_{args.workers}_workers"].append(ttlx_loader(args.data_dir, args.windows, args.workers))
    best = {k: round(max(v), 1) for k, v in results.items()}
    print(json.dumps({"windows_per_s": best, "all": {k: [round(x, 1) for x in v] for k, v in results.items()},
                      "window": WINDOW, "crop": CROP, "stored": STORED, "load_after": os.getloadavg()[0]}))
    if args.storage:
        print(json.dumps({"window_reads_per_s": {k: round(v, 1) for k, v in
                                                 storage(prepared.records_dir, args.data_dir).items()}}))


if __name__ == "__main__":
    main()

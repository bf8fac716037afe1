"""Where ttlx's training input pipeline spends its time, stage by stage, on the benchmark's JPEGs.

    python benchmarks/profile_pipeline.py [--threads 2] [--images 512] [--json OUT]

Writes the synthetic 600x450 JPEGs of ``run.py``'s pipeline measurement, prepares them twice (as they
are, ``max_size=0``, and with ttlx's default ``max_size``: shorter side at most 256 px), then times on one
thread, per image: reading the record, the JPEG header, a full decode, the decode the training transform
does (DCT-scaled draft when the crop allows it, rows below the crop left undecoded), the crop + resize,
to-array, the flip, normalisation and batching; and the whole loader with grain threads against grain
worker processes on ``--threads`` cores. Milliseconds are medians over ``--repeats`` passes.

On an accelerator's host, whether the loader can feed the device (an H100 trains ResNet50 at 4,000-5,000
img/s; RESULTS section 6.3):
    python benchmarks/profile_pipeline.py --loader-only --as-shipped-only --batch-size 128 --loader-threads 8 \
        --workers 4 8 12 --uint8-only --batches 48
(``--loader-threads``: grain threads at other counts than ttlx's default; ``--uint8``: each setting also with
uint8 batches, as ``ttlx train`` loads them for the device to normalise; ``--uint8-only``: only those.) The
loader is timed after warm-up batches that drain what it buffered (:func:`drained_batches`).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import protocol  # noqa: E402


def per_image_ms(function, items: list, repeats: int) -> float:
    """Median over ``repeats`` passes of the mean time of ``function(item)``, in milliseconds."""
    function(items[0])
    passes = []
    for _ in range(repeats):
        start = time.perf_counter()
        for item in items:
            function(item)
        passes.append((time.perf_counter() - start) / len(items))
    return 1000 * statistics.median(passes)


def table_normalize(batch):
    """ttlx's normalisation before this profile: a per-level table gathered channel by channel."""
    import numpy as np

    from ttlx.data.augment import IMAGENET_MEAN, IMAGENET_STD

    levels = np.arange(256, dtype=np.float32)[:, None] / (255.0 * IMAGENET_STD) - IMAGENET_MEAN / IMAGENET_STD
    out = np.empty(batch.shape, np.float32)
    for channel in range(3):
        out[..., channel] = levels[:, channel][batch[..., channel]]
    return out


def stage_times(data_dir: Path, size: int, batch_size: int, repeats: int, count: int) -> dict:
    """Per-image milliseconds of each step of ``augment.train_transform`` and the batch map, one thread."""
    import numpy as np
    from PIL import Image

    from ttlx.data import augment
    from ttlx.data.pipeline import make_loader
    from ttlx.data.records import RecordReader
    from ttlx.data.store import load_prepared

    reader = RecordReader(load_prepared("folder", data_dir).records_dir)
    positions = list(range(min(count, len(reader))))
    datas = [reader.read(p)[0] for p in positions]

    def geometry(i):  # what train_transform computes before decoding: crop box, draft request, rows kept
        image = Image.open(io.BytesIO(datas[i]))
        full = image.size
        box = augment.random_resized_crop_box(*full, np.random.default_rng([0, i]))
        need = (math.ceil(full[0] * size / (box[2] - box[0])), math.ceil(full[1] * size / (box[3] - box[1])))
        return full, box, need

    geometries = [geometry(i) for i in positions]

    def decoded(i):  # the transform's decode: draft scale, then only the rows the resize reads
        full, box, need = geometries[i]
        image = augment.draft(Image.open(io.BytesIO(datas[i])), need)
        sx, sy = image.width / full[0], image.height / full[1]
        scaled = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
        height = image.height
        if image.width >= image.height and image.width >= size:
            augment.load_rows(image, math.ceil(scaled[3] + max(1.0, (scaled[3] - scaled[1]) / size)) + 1)
        else:
            image.load()
        return image, scaled, image.height / height

    images = [decoded(i) for i in positions]
    resized = [image.resize((size, size), Image.BILINEAR, box=box) for image, box, _ in images]
    arrays = [np.asarray(image) for image in resized]
    batch = np.stack(arrays[:batch_size])
    transform = augment.train_transform(size)
    loader = make_loader("folder", data_dir, exp=1, split="train", batch_size=batch_size, image_size=size,
                         train=True, seed=0)
    dataset = loader._dataset  # the grain MapDataset: batch j = dataset[j], computed on this thread
    batches = list(range(max(1, min(loader.steps_per_epoch, 4))))
    width, height = Image.open(io.BytesIO(datas[0])).size
    return {
        "stored_size": f"{width}x{height}",
        "draft_scaled_share": statistics.mean(images[i][0].width < geometries[i][0][0] for i in positions),
        "rows_decoded_share": statistics.mean(images[i][2] for i in positions),
        "ms": {
            "record read": per_image_ms(reader.read, positions, repeats),
            "JPEG header": per_image_ms(lambda i: Image.open(io.BytesIO(datas[i])), positions, repeats),
            "full decode": per_image_ms(lambda i: Image.open(io.BytesIO(datas[i])).load(), positions, repeats),
            "decode as the transform does": per_image_ms(decoded, positions, repeats),
            "crop + resize (box)": per_image_ms(
                lambda i: images[i][0].resize((size, size), Image.BILINEAR, box=images[i][1]), positions, repeats),
            "to array": per_image_ms(lambda i: np.asarray(resized[i]), positions, repeats),
            "flip, numpy copy (before)": per_image_ms(lambda i: np.ascontiguousarray(arrays[i][:, ::-1]),
                                                      positions, repeats),
            "flip, PIL transpose (now)": per_image_ms(
                lambda i: np.asarray(resized[i].transpose(Image.Transpose.FLIP_LEFT_RIGHT)), positions, repeats),
            "train_transform, all of it": per_image_ms(
                lambda i: transform(datas[i], np.random.default_rng([0, i])), positions, repeats),
            "normalize, per-channel table (before)": per_image_ms(lambda _: table_normalize(batch), [0],
                                                                  repeats * 4) / batch_size,
            "normalize, row-wise arithmetic (now)": per_image_ms(lambda _: augment.normalize(batch), [0],
                                                                 repeats * 4) / batch_size,
            "batching, np.stack (per image)": per_image_ms(lambda _: np.stack(arrays[:batch_size]), [0],
                                                           repeats * 4) / batch_size,
            "whole batch on one thread (per image)": per_image_ms(lambda j: dataset[j], batches, repeats)
            / batch_size,
        },
    }


def drained_batches(loader) -> int:
    """Warm-up batches that empty what the loader made before the clock starts: each process's grain threads
    read whole batches ahead (``2 x threads`` buffered, ``threads`` in the making). Timing fewer batches than
    that measured the buffers, not the loader: 6,100-20,300 img/s for 16 threads or 4-8 processes with 12
    timed batches on the first GPU host (RESULTS section 7)."""
    return 3 + 3 * loader.num_threads * max(1, loader.num_workers)


def loader_images_per_second(data_dir: Path, size: int, batch_size: int, batches: int, num_workers: int,
                             normalize: bool = True, num_threads: int | None = None) -> float:
    """The training loader as ``ttlx train`` uses it: grain threads (0) or grain worker processes;
    ``normalize=False``: uint8 batches, left for the device to normalise; ``num_threads``: grain threads
    per process (None: ttlx's default)."""
    from ttlx.data.pipeline import make_loader

    loader = make_loader("folder", data_dir, exp=1, split="train", batch_size=batch_size, image_size=size,
                         train=True, seed=0, num_workers=num_workers, normalize=normalize, num_threads=num_threads)
    stream = iter(loader)
    try:
        timing = protocol.time_steps(lambda: next(stream), warmup=drained_batches(loader), steps=batches)
    finally:
        stream.close()
    return protocol.images_per_second(batch_size, timing, overall=True)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="cores (default: all allowed)")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=32, help="timed loader batches")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profiled", type=int, default=256, help="images timed per stage")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--loader-only", action="store_true", help="time only the whole loader, no stages")
    parser.add_argument("--as-shipped-only", action="store_true", help="only the images as ttlx prepare stores them")
    parser.add_argument("--workers", type=int, nargs="+", default=None,
                        help="worker-process counts to time the loader with (default: one per core)")
    parser.add_argument("--loader-threads", type=int, nargs="+", default=[],
                        help="also time grain threads in the training process at these counts (num_workers=0)")
    parser.add_argument("--uint8", action="store_true",
                        help="also time each loader setting with uint8 batches (normalize=False)")
    parser.add_argument("--uint8-only", action="store_true",
                        help="time each loader setting only with uint8 batches, as ttlx train loads them")
    args = parser.parse_args(argv)
    threads = protocol.pin_threads(args.threads)
    from ttlx.runtime import process

    process.configure_process()  # as a ttlx command does (allocator settings matter for big batches)
    import jpegs

    from ttlx.data.prepare import prepare_dataset

    out: dict = {"threads": threads, "variants": {}}
    with tempfile.TemporaryDirectory(prefix="ttlx-profile-") as scratch:
        source = Path(scratch) / "jpegs"
        out["jpegs"] = jpegs.write_jpegs(source, args.images, 600, 450)
        variants = (("same bytes (max_size=0)", 0), ("as shipped (default max_size)", None))
        for name, max_size in variants[1:] if args.as_shipped_only else variants:
            data_dir = Path(scratch) / f"data-{max_size}"
            start = time.perf_counter()
            prepare_dataset("folder", data_dir, manual_dir=source, max_size=max_size)
            variant = {"prepare_s": time.perf_counter() - start}
            if not args.loader_only:
                variant.update(stage_times(data_dir, args.image_size, args.batch_size, args.repeats, args.profiled))
            settings = {f"grain threads (num_workers=0), {threads} cores": (0, None)}
            settings.update({f"{n} grain threads (num_workers=0)": (0, n) for n in args.loader_threads})
            settings.update({f"grain processes (num_workers={n})": (n, None) for n in args.workers or [threads]})
            variant["loader_img_s"] = {}
            for label, (workers, loader_threads) in settings.items():
                for normalize in (False,) if args.uint8_only else (True, False) if args.uint8 else (True,):
                    variant["loader_img_s"][label + ("" if normalize else ", uint8")] = loader_images_per_second(
                        data_dir, args.image_size, args.batch_size, args.batches, workers, normalize, loader_threads)
            out["variants"][name] = variant
    for name, variant in out["variants"].items():
        print(f"\n{name}: prepare {variant['prepare_s']:.1f} s")
        if "ms" in variant:
            print(f"  stored {variant['stored_size']}, draft-scaled {variant['draft_scaled_share']:.0%}, "
                  f"rows decoded {variant['rows_decoded_share']:.0%}")
        for stage, ms in variant.get("ms", {}).items():
            print(f"  {stage:40s} {ms:7.3f} ms/image")
        for setting, rate in variant["loader_img_s"].items():
            print(f"  loader, {setting:38s} {rate:7.0f} img/s")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()

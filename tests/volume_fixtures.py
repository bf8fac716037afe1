"""Generated test data for volumes: a PENet-layout folder with the reference's counts scaled down by 20.

The reference (PENet's series_list.pkl) holds train 1,454 / val 193 / test 190 studies; its default PE-type
filter (central, segmental) drops 25 / 29 / 28 subsegmental positives, leaving train 1,429 (483 positive,
946 negative), val 164 (79/85), test 162 (82/80). Divided by 20 and rounded: per phase (negatives, kept
positives, dropped subsegmental positives) below.
"""

from __future__ import annotations

import csv
import pickle
import sys
import types
from pathlib import Path

import numpy as np

SCALED = {"train": (47, 24, 1), "val": (4, 4, 1), "test": (4, 4, 1)}


def penet_layout(folder: Path, *, size: int = 16, manifest: bool = False, protocol: int = 4) -> list[dict]:
    """Write ``{study}.npy`` volumes and ``series_list.pkl`` (or ``manifest.csv``); returns the records."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    records, study = [], 1000
    for phase, (negatives, positives, dropped) in SCALED.items():
        kinds = [("", False)] * negatives + [("central", True), ("segmental", True)] * (positives // 2)
        kinds += [("segmental", True)] * (positives % 2) + [("subsegmental", True)] * dropped
        for pe_type, positive in kinds:
            study += 1
            slices = int(rng.integers(10, 40))
            hu = rng.integers(-1000, 1000, (slices, size, size)).astype(np.int16)
            pe = sorted(int(i) for i in rng.choice(slices, 6, replace=False)) if positive else []
            np.save(folder / f"{study}.npy", hu)
            records.append({"study_num": study, "slice_thickness": 1.25, "is_positive": positive,
                            "num_slices": slices, "pe_idxs": pe, "phase": phase, "type": pe_type})
    if manifest:
        with open(folder / "manifest.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["study", "label", "phase", "pe_slices", "type"])
            for r in records:
                writer.writerow([r["study_num"], int(r["is_positive"]), r["phase"],
                                 ";".join(map(str, r["pe_idxs"])), r["type"]])
    else:
        write_series_list(folder / "series_list.pkl", records, protocol=protocol)
    return records


def write_series_list(path: Path, records: list[dict], *, protocol: int = 4, extra=None) -> None:
    """Pickle ``records`` as the reference's ``ct.ct_pe.CTPE`` objects (a stand-in module while pickling)."""
    ct, ct_pe = types.ModuleType("ct"), types.ModuleType("ct.ct_pe")

    class CTPE:
        def __init__(self, record):
            self.study_num, self.slice_thickness = record["study_num"], record["slice_thickness"]
            self.is_positive, self.num_slices = record["is_positive"], record["num_slices"]
            self.pe_idxs, self.phase, self.type = list(record["pe_idxs"]), record["phase"], record["type"]
            self.age = self.is_smoker = self.race = self.sex = None

    CTPE.__module__, CTPE.__qualname__ = "ct.ct_pe", "CTPE"
    ct_pe.CTPE, ct.ct_pe = CTPE, ct_pe
    saved = {k: sys.modules.get(k) for k in ("ct", "ct.ct_pe")}
    sys.modules.update({"ct": ct, "ct.ct_pe": ct_pe})
    try:
        objects = [CTPE(r) for r in records]
        if extra is not None:
            objects.append(extra)
        path.write_bytes(pickle.dumps(objects, protocol=protocol))
    finally:
        for key, module in saved.items():
            if module is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = module

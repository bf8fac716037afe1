"""``penet``: the PENet CT pulmonary angiography studies (Huang et al. 2020), in the layout its code reads.

The manual dir holds ``series_list.pkl`` (a pickled list of the reference code's ``ct.ct_pe.CTPE`` records:
``study_num, slice_thickness, is_positive, num_slices, pe_idxs`` (0-based PE slices), ``phase``, ``type``)
and the volumes, either one ``{study_num}.npy`` per study (int16 HU, slices first) or all of them in
``data.hdf5`` (a dataset per study; reading it needs ``h5py``). The pickle is read with a restricted
unpickler (:mod:`ttlx.data.datasets.penet_pickle`) that rebuilds the records as plain data and refuses
anything else, so a hostile file runs no code. Data converted elsewhere can come as ``manifest.csv``
(``study,label,phase,pe_slices``, PE slices 0-based as ``12-30;45`` or ``12 13 14``) beside the ``.npy`` files.

The split is the reference's fixed one, by ``phase``: train 1,454 / val 193 / test 190 studies of 1,837. The
reference drops positive studies whose PE type is not central or segmental (``--pe-types
central,segmental``, the default; ``all`` keeps every study), leaving 1,429 / 164 / 162. In-plane slices are
stored at most 208 pixels wide (the reference resizes 512 to 208 and crops 192).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from ttlx.data.datasets.penet_pickle import load_series_list
from ttlx.data.spec import Catalog, DatasetSpec, Example
from ttlx.data.volumes import BadVolume, Volume, load_npy
from ttlx.errors import ConfigError, DataError

CLASSES = ("negative", "positive")
SERIES_LIST = "series_list.pkl"
MANIFEST = "manifest.csv"
HDF5 = "data.hdf5"
DEFAULT_PE_TYPES = "central,segmental"


class PENet(DatasetSpec):
    name = "penet"
    aliases = ("PENet", "pe-ct", "radfusion")
    description = "PENet CT pulmonary angiography: 1,837 studies, PE or not, fixed train/val/test by phase"
    volumetric = True
    channels = 1
    encoding = "int16"
    max_size = 208
    official_splits = True
    download = ("the PENet data (RadFusion, Stanford AIMI: https://stanfordaimi.azurewebsites.net/ , research-use "
                "agreement) with series_list.pkl")
    options = {"pe_types": DEFAULT_PE_TYPES}

    def scan(self, manual_dir: Path | None, pe_types: str = DEFAULT_PE_TYPES) -> Catalog:
        from ttlx.data.spec import require_manual_dir

        manual_dir = require_manual_dir(self, manual_dir, [])
        wanted = _pe_types(pe_types)
        if (manual_dir / SERIES_LIST).is_file():
            studies = [_from_record(r) for r in load_series_list(manual_dir / SERIES_LIST)]
        elif (manual_dir / MANIFEST).is_file():
            studies = _from_manifest(manual_dir / MANIFEST)
        else:
            raise DataError(f"The manual dir {manual_dir} holds neither {SERIES_LIST} nor {MANIFEST}; copy the PENet "
                            f"{SERIES_LIST} (or a {MANIFEST} of study,label,phase,pe_slices) beside the volumes.")
        found = {s["type"] for s in studies if s["positive"]}
        if wanted is not None and not wanted & found:
            raise ConfigError(f"--pe-types {pe_types} names none of the PE types of the data "
                              f"({', '.join(sorted(found)) or 'none'}); choose some of them, or all.")
        source = _VolumeSource(manual_dir, [s["study"] for s in studies])
        examples = []
        for s in studies:
            if s["positive"] and wanted is not None and s["type"] not in wanted:
                continue
            examples.append(Example(id=s["study"], label=int(s["positive"]), group=s["study"], split=s["phase"],
                                    image=_Study(source, s["study"], s["thickness"], s["pe_idxs"])))
        return Catalog(CLASSES, examples)


def _pe_types(value: str) -> set[str] | None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError("--pe-types takes PE types separated by commas (central,segmental,subsegmental) or all.")
    names = {t.strip().lower() for t in value.split(",") if t.strip()}
    return None if names == {"all"} else names


def _from_record(record: dict) -> dict:
    return {"study": str(record["study_num"]), "positive": bool(record["is_positive"]),
            "phase": str(record["phase"] or ""), "type": str(record.get("type") or "").lower(),
            "thickness": float(record.get("slice_thickness") or 1.0),
            "pe_idxs": tuple(int(i) for i in record.get("pe_idxs") or ())}


def _from_manifest(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"study", "label", "phase"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{path} lacks the columns {', '.join(sorted(missing))}; it needs study,label,phase"
                            " and optionally pe_slices, type and slice_thickness.")
        studies, bad = [], []
        for row_number, row in enumerate(reader, start=2):
            try:
                label = int(row["label"])
                if label not in (0, 1):
                    raise ValueError
                studies.append({"study": row["study"].strip(), "positive": bool(label), "phase": row["phase"].strip(),
                                "type": (row.get("type") or "").strip().lower(),
                                "thickness": float(row.get("slice_thickness") or 1.0),
                                "pe_idxs": _slice_list(row.get("pe_slices") or "")})
            except ValueError:
                bad.append(row_number)
    if bad:
        raise DataError(f"{path} has unreadable rows {', '.join(map(str, bad[:20]))} (label must be 0 or 1, "
                        "pe_slices like 12-30;45); fix those rows.")
    return studies


def _slice_list(text: str) -> tuple[int, ...]:
    out = []
    for part in re.split(r"[;,\s]+", text.strip()):
        if not part:
            continue
        low, _, high = part.partition("-")
        out.extend(range(int(low), int(high or low) + 1))
    return tuple(out)


class _VolumeSource:
    """Where the studies' voxels are: ``{study}.npy`` files, or datasets of ``data.hdf5``."""

    def __init__(self, manual_dir: Path, studies: list[str]):
        self.manual_dir = manual_dir
        self.hdf5 = manual_dir / HDF5 if (manual_dir / HDF5).is_file() else None
        if self.hdf5 is None and studies and not any((manual_dir / f"{s}.npy").is_file() for s in studies[:50]):
            raise DataError(f"The manual dir {manual_dir} holds neither {HDF5} nor the studies' .npy files "
                            f"(e.g. {studies[0]}.npy); copy the PENet volumes beside {SERIES_LIST}.")

    def read(self, study: str) -> np.ndarray:
        if self.hdf5 is None:
            return load_npy(self.manual_dir / f"{study}.npy")
        try:
            import h5py
        except ImportError:
            raise DataError(f"Reading {self.hdf5} needs h5py: `pip install 'ttlx[hdf5]'` (or h5py), or use the "
                            ".npy files.") from None
        try:
            with h5py.File(self.hdf5, "r") as f:
                if study not in f:
                    raise BadVolume(f"no dataset '{study}' in {HDF5}")
                return np.asarray(f[study])
        except OSError as err:
            raise BadVolume(f"unreadable in {HDF5} ({err})") from None


class _Study:
    """A deferred study, read on a builder thread."""

    def __init__(self, source: _VolumeSource, study: str, thickness: float, pe_idxs: tuple[int, ...]):
        self.source, self.study, self.thickness, self.pe_idxs = source, study, thickness, pe_idxs

    def __call__(self) -> Volume:
        hu = self.source.read(self.study)
        if hu.ndim == 3 and self.pe_idxs and max(self.pe_idxs) >= hu.shape[0]:
            raise BadVolume(f"PE slice {max(self.pe_idxs)} beyond its {hu.shape[0]} slices")
        # the in-plane spacing is not in series_list.pkl: recorded as 1 mm
        return Volume(hu, (self.thickness if self.thickness > 0 else 1.0, 1.0, 1.0), self.pe_idxs)

    def __str__(self) -> str:
        return f"{self.study}"


PENET = PENet()

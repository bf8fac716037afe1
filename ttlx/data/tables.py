"""Reading the CSV files that datasets come with: numbered rows and columns found by their usual names."""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Sequence
from pathlib import Path

from ttlx.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".dcm")


def read_rows(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """(column names, [(row number as a spreadsheet shows it, row)]); the header is row 1.

    Comma- or tab-separated (whichever the header line holds more of), UTF-8 with or without a byte
    order mark, or UTF-16 with one (Excel's "Unicode Text"). Cells are stripped of surrounding spaces;
    blank rows (also ones of empty cells only, as spreadsheets save them) are left out but still
    counted, so row numbers match what a spreadsheet shows. Extra cells past the header are ignored
    and missing ones read as "". A file that is not text, or has an unclosed quote, is a DataError
    naming the line.
    """
    text = _text(path)
    header_line = text.split("\n", 1)[0]
    delimiter = "\t" if header_line.count("\t") > header_line.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True, skipinitialspace=True)
    records = []
    try:
        for record in reader:
            records.append([cell.strip() for cell in record])
    except csv.Error as err:
        raise DataError(
            f"{path} is not a valid CSV file at row {len(records) + 1} ({err}); "
            "fix that row (an unclosed quote is the usual cause)."
        ) from None
    columns = records[0] if records else []
    rows = [
        (number, dict(zip(columns, record + [""] * (len(columns) - len(record)))))
        for number, record in enumerate(records[1:], start=2)
        if any(record)
    ]
    return columns, rows


def _text(path: Path) -> str:
    """The file decoded as UTF-8 (its BOM dropped), or UTF-16 when it starts with a UTF-16 BOM."""
    data = path.read_bytes()
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise DataError(f"{path} is not valid UTF-16 text; save it as UTF-8 (Excel: CSV UTF-8).") from None
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[start:].decode("utf-8")
    except UnicodeDecodeError as err:
        at = start + err.start
        line = data.count(b"\n", 0, at) + 1
        raise DataError(
            f"{path} is not UTF-8 text: line {line} holds the byte 0x{data[at]:02x} (byte {at} of the file); "
            "save it as UTF-8 (Excel: CSV UTF-8)."
        ) from None


def find_column(columns: Sequence[str], candidates: Sequence[str], path: Path, what: str, required: bool = True):
    """The first column of ``columns`` matching one of ``candidates`` (case-insensitive), or None."""
    lowered = {c.lower(): c for c in columns}
    for name in candidates:
        if name.lower() in lowered:
            return lowered[name.lower()]
    if required:
        raise DataError(
            f"{path} has no {what} column; name one of its columns {' or '.join(candidates[:4])} "
            f"(it has: {', '.join(columns) or 'no header'})."
        )
    return None


def single_csv(folder: Path, dataset: str) -> Path:
    """The one CSV directly in ``folder``; ask for --csv when there are none or several."""
    found = sorted(folder.glob("*.csv"))
    if len(found) != 1:
        which = "no CSV file" if not found else f"{len(found)} CSV files"
        raise DataError(f"{folder} holds {which}; pass the CSV listing the images of '{dataset}' with --csv.")
    return found[0]


def is_image(path: Path) -> bool:
    """An image file by its suffix, or a DICOM file named without one (PACS exports: IM0001, or a UID)."""
    if path.name.startswith(".") or not path.is_file():
        return False
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    from ttlx.data.dicom import is_dicom

    return (path.suffix == "" or path.suffix[1:].isdigit()) and is_dicom(path)  # IM0001, 1.2.840.113619.2.55

"""``ham10000``: the HAM10000 dermatoscopic images (Harvard Dataverse), grouped by lesion."""

from __future__ import annotations

from pathlib import Path

from ttlx.data.spec import Catalog, DatasetSpec, Example, bad_labels, require_manual_dir
from ttlx.data.tables import find_column, read_rows
from ttlx.errors import DataError

# The reference code's class order (nv=0 ... df=6); ANCHORS section 5 lists the counts in this order.
CLASSES = ("nv", "mel", "bkl", "bcc", "akiec", "vasc", "df")
METADATA_NAMES = ("HAM10000_metadata.csv", "HAM10000_metadata.tab", "HAM10000_metadata")
IMAGE_FOLDERS = ("HAM10000_images_part_1", "HAM10000_images_part_2", "HAM10000_images", "jpgs", "images")


class Ham10000(DatasetSpec):
    name = "ham10000"
    aliases = ("HAM10000", "HAM", "ham")
    description = "HAM10000 dermatoscopy, 10,015 images of 7,470 lesions, 7 classes (split by lesion)"
    pad_square = True  # the reference pads the 600x450 images to a white square
    download = (
        "https://doi.org/10.7910/DVN/DBW86T (HAM10000_metadata and HAM10000_images_part_1.zip, "
        "HAM10000_images_part_2.zip, unzipped)"
    )
    id_columns = ("image_id", "id")

    def scan(self, manual_dir: Path | None) -> Catalog:
        root = require_manual_dir(self, manual_dir, [])
        metadata = next((root / n for n in METADATA_NAMES if (root / n).is_file()), None)
        folders = [root / n for n in IMAGE_FOLDERS if (root / n).is_dir()]
        missing = ([] if metadata else ["HAM10000_metadata.csv"]) + (
            [] if folders else ["HAM10000_images_part_1/", "HAM10000_images_part_2/"]
        )
        zips = sorted(p.name for p in root.glob("HAM10000_images_part_*.zip"))
        if zips and not folders:
            raise DataError(f"Unzip {' and '.join(zips)} in {root} first (each into its own folder of JPEGs).")
        if missing:
            raise DataError(
                f"The manual dir {root} is incomplete for 'ham10000': missing {', '.join(missing)}. "
                f"Download it from {self.download}"
            )
        columns, rows = read_rows(metadata)
        image_col = find_column(columns, ("image_id",), metadata, "image_id")
        lesion_col = find_column(columns, ("lesion_id",), metadata, "lesion_id")
        dx_col = find_column(columns, ("dx",), metadata, "dx")
        outside = [n for n, row in rows if row[dx_col] not in CLASSES]
        if outside:
            raise bad_labels(self.name, metadata, outside, CLASSES)
        files = _image_files(folders)
        examples = [
            Example(
                id=row[image_col],
                label=CLASSES.index(row[dx_col]),
                image=files.get(row[image_col], folders[0] / f"{row[image_col]}.jpg"),
                group=row[lesion_col],
            )
            for _, row in rows
        ]
        return Catalog(CLASSES, examples)


def _image_files(folders: list[Path]) -> dict[str, Path]:
    """image_id -> file, over every image folder (the two Dataverse parts or the reference's jpgs/)."""
    files: dict[str, Path] = {}
    for folder in folders:
        for path in folder.iterdir():
            if path.suffix.lower() in (".jpg", ".jpeg"):
                files.setdefault(path.stem, path)
    return files


HAM10000 = Ham10000()

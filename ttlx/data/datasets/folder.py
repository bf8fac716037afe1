"""``folder``: a user's own images, one sub-folder per class."""

from __future__ import annotations

from pathlib import Path

from ttlx.data.spec import Catalog, DatasetSpec, Example, require_manual_dir
from ttlx.data.tables import is_image
from ttlx.errors import DataError


def class_list(value: str | None) -> tuple[str, ...] | None:
    """The --classes option ("a,b,c") as a tuple, or None when not given."""
    if not value:
        return None
    classes = tuple(c.strip() for c in value.split(",") if c.strip())
    if len(set(classes)) != len(classes):
        raise DataError(f"--classes lists a class twice: {value}.")
    return classes


class Folder(DatasetSpec):
    name = "folder"
    aliases = ("imagefolder", "folders")
    description = "your own images, one sub-folder per class (--manual-dir ROOT)"
    options = {"classes": None}
    nameable = True

    def scan(self, manual_dir: Path | None, classes: str | None = None) -> Catalog:
        root = require_manual_dir(self, manual_dir, [])
        folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not folders:
            raise DataError(f"{root} has no sub-folders; put the images of each class in a sub-folder named after it.")
        wanted = class_list(classes) or tuple(folders)
        strangers = [f for f in folders if f not in wanted]
        if strangers:
            raise DataError(
                f"{root} has folders outside the class list ({', '.join(wanted)}): {', '.join(strangers)}; "
                "move them out or add them to --classes."
            )
        examples = [
            Example(id=path.relative_to(root).as_posix(), label=label, image=path)
            for label, name in enumerate(wanted)
            for path in sorted((root / name).rglob("*") if (root / name).is_dir() else [])
            if is_image(path)
        ]
        return Catalog(wanted, examples)


FOLDER = Folder()

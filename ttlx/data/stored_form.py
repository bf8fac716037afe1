"""How a prepared dataset stored its images, so that an image file given later is treated alike.

``ttlx prepare`` does not keep the source images: it converts each one to grayscale or RGB, pads it to a
white square where the dataset asks (HAM10000), shrinks its shorter side to ``max_size`` and re-encodes it
(``ttlx.data.images``). A network trained on those images must see a new file the same way before the
evaluation transform, or it sees another input: a 600x450 HAM10000 photo centre-cropped without the padding
shows a different part of the lesion. ``ttlx predict`` and ``ttlx analyze gradcam FILES`` therefore pass every
file through :meth:`StoredForm.store` first. Training records the form in the run's ``config.json``
(``dataset.stored``); for runs trained before that, it comes from the prepared dataset.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class StoredForm:
    channels: int  # 1 (grayscale) or 3 (RGB)
    encoding: str  # jpeg or png
    max_size: int  # bound on the shorter side; 0 keeps the size
    pad_square: bool  # padded to a white square first

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> StoredForm:
        return cls(int(record["channels"]), str(record["encoding"]), int(record["max_size"]),
                   bool(record["pad_square"]))

    @classmethod
    def of_prepared(cls, meta: dict[str, Any]) -> StoredForm:
        """The form of a prepared dataset from its ``prepared.json`` (datasets prepared before it recorded
        ``pad_square`` take their spec's)."""
        pad_square = meta.get("pad_square")
        if pad_square is None:
            from ttlx.registry import datasets

            pad_square = getattr(datasets.get(meta.get("dataset", meta["name"])), "pad_square", False)
        return cls(int(meta["channels"]), str(meta["encoding"]), int(meta["settings"]["max_size"]),
                   bool(pad_square))

    def store(self, path: str | Path) -> bytes:
        """The bytes ``ttlx prepare`` would have stored for the image file ``path``; ``images.BadImage`` (with
        the reason) for a file that is missing or not a readable image."""
        from ttlx.data import images

        image = images.open_source(Path(path), shorter_at_least=self.max_size, pad_square=self.pad_square)
        try:
            stored = images.stored_image(image, channels=self.channels, max_size=self.max_size,
                                         pad_square=self.pad_square)
            return images.encode(stored, self.encoding)
        finally:
            image.close()

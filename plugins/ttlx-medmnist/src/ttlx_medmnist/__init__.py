"""ttlx-medmnist: the 2D MedMNIST datasets (v2/v3 release ``.npz`` files) as ttlx dataset plugins.

Each dataset keeps its official train/val/test split in every repeat. Point ``--manual-dir`` at the
folder holding ``<name>.npz`` (28 px) or ``<name>_<size>.npz`` (v3: 64, 128, 224 px; pick with
``--size``); without it, ``~/.medmnist`` (where the ``medmnist`` package downloads) is used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ttlx.data.spec import Catalog, DatasetSpec, Example
from ttlx.errors import ConfigError, DataError

__version__ = "0.1.0"

SPLITS = ("train", "val", "test")
SIZES = (28, 64, 128, 224)
ORGANS = tuple(
    "bladder femur-left femur-right heart kidney-left kidney-right liver lung-left lung-right pancreas spleen".split()
)


class MedMnist(DatasetSpec):
    """One 2D MedMNIST dataset read from its release file."""

    encoding = "png"  # lossless: the images are already small
    max_size = 0
    official_splits = True
    download = "https://zenodo.org/records/10519652 (or `python -m medmnist download`)"
    options = {"size": 28}
    id_columns = ("id",)

    def __init__(self, name: str, title: str, classes: tuple[str, ...], channels: int, multilabel=False):
        self.name, self.classes, self.channels, self.multilabel = name, classes, channels, multilabel
        self.aliases = (title,)
        kind = "multi-label" if multilabel else f"{len(classes)} classes"
        self.description = f"MedMNIST {title} ({kind}, official splits; plugin ttlx-medmnist)"

    def release_file(self, manual_dir: Path | None, size: int) -> Path:
        if size not in SIZES:
            raise ConfigError(f"--size for {self.name} must be one of {', '.join(map(str, SIZES))}, got {size}.")
        folder = Path(manual_dir).expanduser() if manual_dir is not None else Path("~/.medmnist").expanduser()
        path = folder / (f"{self.name}.npz" if size == 28 else f"{self.name}_{size}.npz")
        if not path.is_file():
            raise DataError(f"{path} is missing; download {path.name} from {self.download} into {folder}.")
        return path

    def scan(self, manual_dir: Path | None, size: int = 28) -> Catalog:
        path = self.release_file(manual_dir, size)
        with np.load(path) as release:
            missing = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels") if f"{s}_{k}" not in release.files]
            if missing:
                raise DataError(f"{path} lacks {', '.join(missing)}; it is not a MedMNIST release file.")
            examples = []
            for split in SPLITS:
                images = self._checked_images(release[f"{split}_images"], split, path)
                examples += self._examples(split, images, release[f"{split}_labels"], path)
        return Catalog(self.classes, examples)

    def _checked_images(self, images: np.ndarray, split: str, path: Path) -> np.ndarray:
        """A split's images as the spec stores them (the 3D sets check and squeeze their volumes)."""
        return images

    def _examples(self, split: str, images: np.ndarray, labels: np.ndarray, path: Path) -> list[Example]:
        labels = labels.reshape(len(labels), -1).astype(np.int64)
        width = len(self.classes) if self.multilabel else 1
        if labels.shape[1] != width or labels.min(initial=0) < 0 or labels.max(initial=0) >= len(self.classes):
            raise DataError(
                f"{path} has {split} labels that do not fit the {len(self.classes)} classes of {self.name}."
            )
        return [
            Example(
                id=f"{split}_{i:06d}",
                label=tuple(int(v) for v in label) if self.multilabel else int(label[0]),
                image=image,
                split=split,
            )
            for i, (image, label) in enumerate(zip(images, labels, strict=True))
        ]


PATHMNIST = MedMnist("pathmnist", "PathMNIST", ("adipose", "background", "debris", "lymphocytes", "mucus",
                     "smooth muscle", "normal colon mucosa", "cancer-associated stroma",
                     "colorectal adenocarcinoma epithelium"), 3)  # fmt: skip
CHESTMNIST = MedMnist("chestmnist", "ChestMNIST", ("atelectasis", "cardiomegaly", "effusion", "infiltration",
                      "mass", "nodule", "pneumonia", "pneumothorax", "consolidation", "edema", "emphysema",
                      "fibrosis", "pleural", "hernia"), 1, multilabel=True)  # fmt: skip
DERMAMNIST = MedMnist("dermamnist", "DermaMNIST", ("actinic keratoses and intraepithelial carcinoma",
                      "basal cell carcinoma", "benign keratosis-like lesions", "dermatofibroma", "melanoma",
                      "melanocytic nevi", "vascular lesions"), 3)  # fmt: skip
OCTMNIST = MedMnist("octmnist", "OCTMNIST", ("choroidal neovascularization", "diabetic macular edema", "drusen",
                    "normal"), 1)  # fmt: skip
PNEUMONIAMNIST = MedMnist("pneumoniamnist", "PneumoniaMNIST", ("normal", "pneumonia"), 1)
RETINAMNIST = MedMnist("retinamnist", "RetinaMNIST", ("0", "1", "2", "3", "4"), 3)
BREASTMNIST = MedMnist("breastmnist", "BreastMNIST", ("malignant", "normal, benign"), 1)
BLOODMNIST = MedMnist("bloodmnist", "BloodMNIST", ("basophil", "eosinophil", "erythroblast",
                      "immature granulocytes", "lymphocyte", "monocyte", "neutrophil", "platelet"), 3)  # fmt: skip
TISSUEMNIST = MedMnist("tissuemnist", "TissueMNIST", ("collecting duct, connecting tubule",
                       "distal convoluted tubule", "glomerular endothelial cells", "interstitial endothelial cells",
                       "leukocytes", "podocytes", "proximal tubule segments", "thick ascending limb"), 1)  # fmt: skip
ORGANAMNIST = MedMnist("organamnist", "OrganAMNIST", ORGANS, 1)
ORGANCMNIST = MedMnist("organcmnist", "OrganCMNIST", ORGANS, 1)
ORGANSMNIST = MedMnist("organsmnist", "OrganSMNIST", ORGANS, 1)

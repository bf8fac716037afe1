"""A cheap ranking of truncation points: a linear probe on frozen pretrained features at every point.

One forward pass of the pretrained backbone over the train and val splits gives the globally averaged
output of every unit; the output at a truncation point is the output of that point's last unit (a
truncated network is a prefix of the full one). A logistic regression per point, fitted on train and
scored by macro AUROC on val, ranks the points before any fine-tuning is paid for.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ttlx.analysis.activations import collect


@dataclass(frozen=True)
class ProbePoint:
    """A truncation point, the unit its truncated network ends with, and that network's size."""

    trunc: int
    layerwise: bool
    unit: str
    params: int
    depth: int  # units in the truncated network, stem included

    @property
    def label(self) -> str:
        return f"layerwise {self.trunc}" if self.layerwise else f"trunc {self.trunc}"


def probe_points(model: str, *, points: Sequence[int] | None = None, layerwise: bool = False,
                 image_size: int = 224, window: int | None = None) -> list[ProbePoint]:
    """The block-wise points of ``model`` (or the given ones; all 0..N when ``layerwise`` and none given).

    Unknown points raise :class:`ttlx.errors.ConfigError` naming the point, before any data is read.
    """
    from ttlx.cost.model_cost import count_params
    from ttlx.models import get_architecture, resolve_config
    from ttlx.models.abstract import abstract_model

    arch = get_architecture(model)
    wanted = points if points is not None else (arch.layer_points() if layerwise else arch.block_points)
    found = []
    for trunc in wanted:
        _, cfg = resolve_config(arch.name, trunc, layerwise=layerwise, head=None, image_size=image_size,
                                window=window)
        network = abstract_model(arch, cfg)
        names = [name for name, _ in network.units()]
        found.append(ProbePoint(cfg.trunc, layerwise, names[-1], count_params(network)[0], len(names)))
    return found


def features_and_labels(backbone, batches: Iterable, units: Sequence[str]) -> tuple[dict, dict]:
    """Pooled features of ``units`` over one pass of ``batches``, with their labels (and label masks)."""
    extras: dict[str, list[np.ndarray]] = {}

    def tap(stream):  # record the labels of the real rows as the batches stream by
        for batch in stream:
            real = int(np.sum(batch["mask"])) if "mask" in batch else len(batch["image"])
            for key in ("label", "label_mask"):
                if key in batch:
                    extras.setdefault(key, []).append(np.asarray(batch[key])[:real])
            yield batch

    acts = collect(backbone, tap(batches))
    missing = [u for u in units if u not in acts]
    if missing:
        raise ValueError(f"The backbone has no unit {missing[0]}; build it deep enough for every point.")
    return {u: acts[u] for u in units}, {k: np.concatenate(v) for k, v in extras.items()}


def probe_auroc(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray, *,
                train_mask: np.ndarray | None = None, val_mask: np.ndarray | None = None,
                seed: int = 0) -> float:
    """Val macro AUROC of a class-balanced logistic regression on standardised features.

    Integer labels: one multinomial probe, AUROC one-vs-rest per class averaged over the classes present
    in val. Multi-hot labels [N, C]: one probe per finding on its unmasked rows, averaged over findings.
    """
    if train_y.ndim == 2:
        scores = []
        for k in range(train_y.shape[1]):
            tr = slice(None) if train_mask is None else train_mask[:, k] > 0
            va = slice(None) if val_mask is None else val_mask[:, k] > 0
            if len(np.unique(train_y[tr, k])) == 2:
                scores.append(probe_auroc(train_x[tr], train_y[tr, k].astype(int), val_x[va],
                                          val_y[va, k].astype(int), seed=seed))
        return _mean(scores)
    probe = _fit(train_x, train_y, seed)
    probs = probe.predict_proba(val_x)
    return _macro_auroc(val_y, probs, probe.classes_)


def _fit(x: np.ndarray, y: np.ndarray, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # balanced class weights: the fine-tuning recipe weights its loss by inverse class frequency too
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced",
                                                               random_state=seed))
    return probe.fit(x, y)


def _macro_auroc(y: np.ndarray, probs: np.ndarray, classes: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    scores = []
    for column, cls in enumerate(classes):
        positive = y == cls
        if 0 < positive.sum() < len(y):
            scores.append(roc_auc_score(positive, probs[:, column]))
    return _mean(scores)


def _mean(scores: list[float]) -> float:
    return float(np.mean(scores)) if scores else float("nan")


def rank_points(points: Sequence[ProbePoint], train: tuple[dict, dict], val: tuple[dict, dict],
                seed: int = 0) -> list[dict]:
    """One row per point, best val AUROC first (ties: fewer parameters first), with its rank."""
    (train_feats, train_extra), (val_feats, val_extra) = train, val
    rows = []
    for point in points:
        auroc = probe_auroc(train_feats[point.unit], train_extra["label"], val_feats[point.unit],
                            val_extra["label"], train_mask=train_extra.get("label_mask"),
                            val_mask=val_extra.get("label_mask"), seed=seed)
        rows.append({"point": point.label, "trunc": point.trunc, "layerwise": point.layerwise,
                     "unit": point.unit, "channels": int(train_feats[point.unit].shape[1]),
                     "params": point.params, "probe_auroc": auroc})
    rows.sort(key=lambda r: (-_sortable(r["probe_auroc"]), r["params"]))
    return [{"rank": i + 1, **row} for i, row in enumerate(rows)]


def _sortable(value: float) -> float:
    return -1.0 if np.isnan(value) else value


def probe(backbone, points: Sequence[ProbePoint], train_batches: Iterable, val_batches: Iterable,
          seed: int = 0) -> list[dict]:
    """Rank ``points`` with frozen features of ``backbone`` (a head-less network deep enough for all)."""
    units = [p.unit for p in points]
    train = features_and_labels(backbone, train_batches, units)
    val = features_and_labels(backbone, val_batches, units)
    return rank_points(points, train, val, seed)


def probe_dataset(dataset: str, model: str, pretrained: str = "imagenet", *,
                  points: Sequence[int] | None = None, layerwise: bool = False,
                  layerwise_points: Sequence[int] = (), exp: int = 1, sub: int = 100, image_size: int = 224,
                  batch_size: int = 32, data_dir=None, num_workers: int = 0, seed: int = 0,
                  data=None, window: int | None = None) -> list[dict]:
    """Rank the truncation points of ``model`` on a prepared dataset (train split fits, val split scores).

    ``points`` are block-wise (layer-wise with ``layerwise``); ``layerwise_points`` adds layer-wise points
    to the same pass. Both splits go through the eval transform (resize + centre crop, no augmentation),
    once each. ``data`` replaces ``ttlx.data.pipeline`` (tests pass an in-memory stand-in). A 3D network
    probes windows of ``window`` slices (None: 24), each window's pooled features and label one example.
    """
    from ttlx.models import create_model, get_architecture
    from ttlx.training.volume_input import check_input_kind

    arch = get_architecture(model).name  # a legacy name must not translate the points a second time
    chosen = probe_points(arch, points=points, layerwise=layerwise, image_size=image_size, window=window)
    if layerwise_points:
        chosen += probe_points(arch, points=layerwise_points, layerwise=True, image_size=image_size, window=window)
    if data is None:
        from ttlx.data import pipeline as data
    info = data.dataset_info(dataset, data_dir)
    check_input_kind(get_architecture(arch), info, window)  # a 3D network on images: one sentence
    deepest = max(chosen, key=lambda p: p.depth)
    backbone = create_model(arch, deepest.trunc, layerwise=deepest.layerwise, head=None, pretrained=pretrained,
                            image_size=image_size, window=window)
    windows = {"window": window} if getattr(info, "volumetric", False) else {}  # 2D loaders take no window

    def loader(split):
        return data.make_loader(dataset, data_dir, exp=exp, split=split, sub=sub, batch_size=batch_size,
                                image_size=image_size, train=False, num_workers=num_workers, **windows)

    return probe(backbone, chosen, loader("train"), loader("val"), seed)


PROBE_COLUMNS = ("rank", "point", "trunc", "layerwise", "unit", "channels", "params", "probe_auroc")


def write_probe(rows: list[dict], out_dir) -> tuple:
    """Write ``probe.json``, ``probe.csv`` and ``probe.md`` (the ranked table) into ``out_dir``."""
    import csv
    import json
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe.json").write_text(json.dumps(rows, indent=2) + "\n")
    with open(out / "probe.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=PROBE_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(PROBE_COLUMNS) + " |", "|" + "---|" * len(PROBE_COLUMNS)]
    for row in rows:
        cells = [f"{row[c]:.3f}" if c == "probe_auroc" else f"{row[c]:,}" if c == "params" else str(row[c])
                 for c in PROBE_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    (out / "probe.md").write_text("\n".join(lines) + "\n")
    return out / "probe.json", out / "probe.csv", out / "probe.md"

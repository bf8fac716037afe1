"""Evaluation of a run dir: metrics with bootstrap intervals, a confusion matrix and the model's cost.

``evaluate_run`` rebuilds the run's model from ``config.json``, loads its ``best`` (or ``latest``)
checkpoint, predicts one split, and writes ``eval_<split>.json``, ``confusion_<split>.png`` and the
per-image ``predictions_<split>.csv`` (:mod:`ttlx.runs.predictions`).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import jax
import numpy as np
from rich.console import Console
from rich.table import Table

from ttlx.config import EvalConfig, ModelConfig
from ttlx.evaluation.trained_run import TrainedRun, check_checkpoint, check_split, open_trained_run
from ttlx.metrics import bootstrap_intervals, classification_metrics, confusion_matrix, probabilities
from ttlx.runs.run_dir import write_json_atomic
from ttlx.training.sharding import data_mesh, local_batch_size
from ttlx.training.steps import graph_defs, make_eval_step, model_arrays, model_part, predict


def evaluate_run(cfg: EvalConfig, *, data=None, console: Console | None = None, show: bool = True) -> dict:
    """Evaluate one split of a run dir, write ``eval_<split>.json`` and return its content."""
    from ttlx import data as data_layer

    check_split(cfg.split)
    check_checkpoint(cfg.checkpoint)
    run = open_trained_run(cfg.run_dir)
    data = data or data_layer.data_source()
    info = data.dataset_info(run.train.dataset, run.data_dir(cfg.data_dir))
    model, epoch = run.network_and_epoch(cfg.checkpoint)
    predictions = predict_split(model, run, info, cfg, data)
    probs = probabilities(predictions.logits, info.multilabel)
    studies = None
    if getattr(info, "volumetric", False):  # windows of volumes: metrics per study (ttlx.evaluation.study)
        from ttlx.evaluation.study import per_study

        studies = per_study(run, info, cfg, predictions, probs)
        predictions = replace(predictions, labels=studies.labels, ids=studies.ids)
        probs = studies.probs
    result = {
        "run_dir": str(Path(cfg.run_dir)), "split": cfg.split, "checkpoint": cfg.checkpoint, "epoch": epoch,
        "dataset": info.name, "classes": list(info.classes), "loss": predictions.loss,
        **classification_metrics(predictions.labels, probs, info.classes, info.multilabel),
        "bootstrap": cfg.bootstrap,
        "ci95": (bootstrap_intervals(predictions.labels, probs, info.classes, info.multilabel,
                                     resamples=cfg.bootstrap, seed=cfg.seed) if cfg.bootstrap else {}),
        "cost": cost_columns(model, run.model),
        "evaluated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if studies is not None:
        result.update(level="study", aggregate=studies.aggregate, windows=studies.windows)
    if not info.multilabel:
        result["confusion_matrix"] = confusion_matrix(predictions.labels, probs).tolist()
    if jax.process_index() == 0:
        result["predictions"] = write_predictions_of(run.path, cfg.split, predictions, probs, info)
        write_json_atomic(run.path / f"eval_{cfg.split}.json", result)
        if not info.multilabel:
            draw_confusion(np.asarray(result["confusion_matrix"]), info.classes,
                           run.path / f"confusion_{cfg.split}.png", f"{info.name} {cfg.split}")
        if show:
            print_result(result, console or Console())
    return result


def write_predictions_of(run_dir: Path, split: str, predictions, probs: np.ndarray, info) -> str | None:
    """Write ``predictions_<split>.csv`` (:mod:`ttlx.runs.predictions`); its file name, or None where the ids are
    unknown (several processes: each saw only its part of the split)."""
    from ttlx.runs.predictions import predictions_path, write_predictions

    path = predictions_path(run_dir, split)
    if predictions.ids is None:
        path.unlink(missing_ok=True)  # an earlier evaluation's rows would not be this one's
        return None
    write_predictions(path, predictions.ids, predictions.labels, probs, info.classes, info.multilabel)
    return path.name


def predict_split(model, run: TrainedRun, info, cfg: EvalConfig, data):
    """Predictions of the model on one split, over all devices."""
    train_cfg = run.train
    mesh = data_mesh()
    devices = mesh.devices.size
    batch_size = cfg.batch_size or train_cfg.batch_size
    batch_size = -(-batch_size // devices) * devices  # padding makes any multiple of the devices exact
    weights = (data.class_weights(train_cfg.dataset, run.data_dir(cfg.data_dir), exp=train_cfg.exp, sub=train_cfg.sub)
               if train_cfg.class_weighted else np.ones(len(info.classes), np.float32))
    _, eval_graph = graph_defs(model, set())
    step = make_eval_step(eval_graph, weights, info.multilabel, mesh, run.input_convention)
    loader = run.loader(cfg.split, batch_size=local_batch_size(batch_size), data_dir=cfg.data_dir, data=data,
                        seed=train_cfg.seed, shard_index=jax.process_index(), shard_count=jax.process_count(),
                        normalize=False)  # as ttlx train's loaders
    params, rest = model_arrays(model)
    state = jax.device_put(model_part({"params": params, "rest": rest}), jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec()))
    return predict(step, state, loader, mesh)


def cost_columns(model, model_cfg: ModelConfig) -> dict[str, Any]:
    """Parameters (whole model, and without the classifier) and, from ``ttlx.cost.model_cost``, GMACs and
    latency."""
    from ttlx.cost.model_cost import count_params, model_cost

    classifier = getattr(model, "classifier_key", None)
    total, backbone = count_params(model, (classifier,) if classifier else ())
    measured = model_cost(model_cfg, model=model)
    return {"params": total, "params_backbone": backbone,
            **{key: measured[key] for key in ("gmacs", "gmacs_ptflops", "latency_ms")}}


def draw_confusion(matrix: np.ndarray, classes, path: Path, title: str) -> None:
    from ttlx.report.figures import confusion_matrix_figure

    confusion_matrix_figure(matrix, list(classes), path, title)


def _examples(result: dict) -> str:
    if result.get("level") != "study":
        return "images"
    return f"studies, {result['windows']} windows, {result['aggregate']} per study"


def print_result(result: dict, console: Console) -> None:
    """A rich table of the summary metrics with their intervals, then per-class values and the cost."""
    table = Table(title=f"{result['dataset']} {result['split']} ({result['checkpoint']} checkpoint, epoch "
                        f"{result['epoch']}, {result['num_examples']} {_examples(result)})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("95% CI", justify="right")
    for key in ("accuracy", "balanced_accuracy", "auroc", "auprc", "auprc_trapz"):
        low_high = result["ci95"].get(key)
        interval = f"{low_high[0]:.4f} - {low_high[1]:.4f}" if low_high else ""
        table.add_row(key, f"{result[key]:.4f}", interval)
    console.print(table)
    classes = Table(title="per class")
    for column in ("class", "support", "auroc", "auprc", "auprc_trapz"):
        classes.add_column(column, justify="left" if column == "class" else "right")
    for name, values in result["per_class"].items():
        classes.add_row(name, str(values["support"]),
                        *(f"{values[k]:.4f}" for k in ("auroc", "auprc", "auprc_trapz")))
    console.print(classes)
    cost = result["cost"]
    parts = [f"params {cost['params']:,} (backbone {cost['params_backbone']:,})"]
    parts += [f"{key} {cost[key]:.3f}" for key in ("gmacs", "gmacs_ptflops", "latency_ms")
              if cost[key] is not None]
    console.print("cost: " + ", ".join(parts))
    if result.get("predictions"):
        # soft wrap: a path that does not fit stays whole, to copy from the terminal
        each = "study" if result.get("level") == "study" else "image"  # one row per study on volumes
        console.print(f"per-{each} predictions: {Path(result['run_dir']) / result['predictions']}", soft_wrap=True,
                      markup=False, highlight=False)

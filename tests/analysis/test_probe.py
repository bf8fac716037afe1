"""Linear-probe ranking of truncation points: which unit each point ends with, that one pass of the full
backbone gives the truncated networks' features, and that the probe scores what the features hold."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from ttlx.analysis.probe import ProbePoint, features_and_labels, probe, probe_auroc, probe_points, write_probe
from ttlx.errors import ConfigError


def batches_of(images, labels, batch=16, mask=None):
    """Loader-style batches; the last one padded to full size with ``mask`` 0, as eval loaders do."""
    count = len(images)
    total = -(-count // batch) * batch

    def padded(a):
        a = np.asarray(a)
        return np.concatenate([a, np.zeros((total - count, *a.shape[1:]), a.dtype)])

    arrays = {"image": padded(images), "label": padded(labels), "mask": padded(np.ones(count, np.float32))}
    if mask is not None:
        arrays["label_mask"] = padded(mask)
    return [{k: v[i : i + batch] for k, v in arrays.items()} for i in range(0, total, batch)]


def tinted(count, seed):
    """Noise images whose faint colour tint (red 0, green 1) is the class."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, count).astype(np.int32)
    images = rng.normal(0, 1, (count, 32, 32, 3)).astype(np.float32)
    images[np.arange(count), :, :, labels] += 0.3
    return images, labels


def test_probe_points_of_resnet50_end_at_the_right_bottleneck_with_the_paper_sizes():
    points = probe_points("resnet50")
    assert [(p.trunc, p.unit, p.params) for p in points] == [
        (-1, "layer4.2", 23_508_032), (1, "layer1.2", 225_344), (2, "layer2.3", 1_444_928),
        (3, "layer3.5", 8_543_296)]
    stem, ttl2 = probe_points("resnet50", points=[0, 11], layerwise=True)
    assert (stem.unit, stem.params, stem.depth) == ("stem", 9_536, 1)
    assert (ttl2.unit, ttl2.params, ttl2.label) == ("layer3.3", 6_308_928, "layerwise 11")


def test_probe_points_of_densenet201_keep_transitions_and_norm5():
    points = probe_points("densenet201", points=[1, -1])
    assert [(p.unit, p.params) for p in points] == [("transition1", 377_856), ("norm5", 18_092_928)]
    (inside,) = probe_points("densenet201", points=[7], layerwise=True)
    assert inside.unit == "denseblock2.denselayer1"


def test_a_point_the_model_lacks_is_refused_before_any_data_is_read():
    with pytest.raises(ConfigError, match="resnet50 has no block-wise truncation point 5; choose one of -1, 1, 2, 3"):
        probe_points("resnet50", points=[1, 5])


@pytest.fixture(scope="module")
def tiny_backbone(tinynet):
    """tinynet's full backbone with random weights."""
    from ttlx.models import create_model

    return create_model("tinynet", -1, head=None, image_size=32, seed=0)


@pytest.mark.slow
def test_one_pass_of_the_backbone_gives_each_truncated_network_its_features(tiny_backbone):
    from flax import nnx

    from ttlx.cost.model_cost import abstract_model
    from ttlx.models import resolve_config
    from ttlx.runs.checkpoint import assign_model_state, flatten

    images, labels = tinted(40, seed=0)
    points = probe_points("tinynet", image_size=32)
    assert [p.unit for p in points] == ["layer3.0", "layer1.0", "layer2.1"]
    feats, extra = features_and_labels(tiny_backbone, batches_of(images, labels), [p.unit for p in points])
    np.testing.assert_array_equal(extra["label"], labels)  # the padded rows of the last batch are dropped
    truncated = abstract_model(*resolve_config("tinynet", 2, head=None, image_size=32))
    assign_model_state(truncated, flatten(nnx.state(tiny_backbone)))  # the backbone's weights, fewer units
    truncated.eval()
    pooled = np.asarray(truncated(jnp.asarray(images))).mean(axis=(1, 2))
    np.testing.assert_allclose(feats["layer2.1"], pooled, rtol=1e-5, atol=1e-6)


def test_the_ranking_scores_informative_labels_high_and_unrelated_labels_near_chance(tiny_backbone, tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    points = probe_points("tinynet", image_size=32)
    (train_x, train_y), (val_x, val_y) = tinted(192, seed=1), tinted(128, seed=2)
    rows = probe(tiny_backbone, points, batches_of(train_x, train_y), batches_of(val_x, val_y))
    assert [r["rank"] for r in rows] == [1, 2, 3]
    assert [r["probe_auroc"] for r in rows] == sorted((r["probe_auroc"] for r in rows), reverse=True)
    assert min(r["probe_auroc"] for r in rows) > 0.9
    # the same number from an independent fit on the features of the best point
    best = next(p for p in points if p.unit == rows[0]["unit"])
    (ft, _), (fv, _) = (features_and_labels(tiny_backbone, batches_of(x, y), [best.unit])
                        for x, y in ((train_x, train_y), (val_x, val_y)))
    scaler = StandardScaler().fit(ft[best.unit])
    fit = LogisticRegression(max_iter=2000, class_weight="balanced")
    fit.fit(scaler.transform(ft[best.unit]), train_y)
    expected = roc_auc_score(val_y, fit.predict_proba(scaler.transform(fv[best.unit]))[:, 1])
    assert rows[0]["probe_auroc"] == pytest.approx(expected, abs=1e-9)
    # labels that the images do not hold: the val AUROC stays near 0.5 whatever direction the probe picks
    coin = np.random.default_rng(3).integers(0, 2, 320)
    unrelated = probe(tiny_backbone, points, batches_of(train_x, coin[:192]), batches_of(val_x, coin[192:]))
    assert all(abs(r["probe_auroc"] - 0.5) < 0.15 for r in unrelated)
    json_path, csv_path, md_path = write_probe(rows, tmp_path)
    assert json.loads(json_path.read_text()) == rows
    assert csv_path.read_text().splitlines()[0] == "rank,point,trunc,layerwise,unit,channels,params,probe_auroc"
    assert md_path.read_text().splitlines()[2].startswith(f"| 1 | {rows[0]['point']} |")


def test_multilabel_probes_ignore_masked_labels():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(400, 6))
    y = np.stack([x[:, 0] > 0, x[:, 1] + x[:, 2] > 0], axis=1).astype(np.float32)
    mask = np.ones_like(y)
    mask[:150, 0] = 0
    y[:150, 0] = 1 - y[:150, 0]  # what the mask hides is wrong on purpose
    train, val = slice(0, 250), slice(250, 400)
    masked = probe_auroc(x[train], y[train], x[val], y[val], train_mask=mask[train], val_mask=mask[val])
    ignored = probe_auroc(x[train], y[train], x[val], y[val])
    assert masked > 0.97
    assert ignored < masked - 0.05


def test_probe_point_labels_match_the_sweep_names():
    assert ProbePoint(2, False, "layer2.3", 1, 8).label == "trunc 2"
    assert ProbePoint(11, True, "layer3.3", 1, 12).label == "layerwise 11"


@pytest.mark.slow
def test_probe_dataset_ranks_block_and_layerwise_points_in_one_pass(tiny_backbone, fake_data, monkeypatch):
    import ttlx.models

    built = []

    def fake_create_model(name, trunc, **options):  # the random backbone stands in for pretrained weights
        built.append((name, trunc, options["layerwise"], options["head"], options["pretrained"]))
        return tiny_backbone

    monkeypatch.setattr(ttlx.models, "create_model", fake_create_model)
    from ttlx.analysis.probe import probe_dataset

    rows = probe_dataset("fake", "TinyNet", "imagenet", points=[1, 2], layerwise_points=[1, 4], image_size=32,
                         batch_size=16, data=fake_data)
    assert built == [("tinynet", 4, True, None, "imagenet")]  # the deepest point: all 4 units
    assert sorted(r["point"] for r in rows) == ["layerwise 1", "layerwise 4", "trunc 1", "trunc 2"]
    assert {r["point"]: r["unit"] for r in rows}["layerwise 1"] == {r["point"]: r["unit"] for r in rows}["trunc 1"]
    assert all(0.8 < r["probe_auroc"] <= 1.0 for r in rows)  # three colour-coded classes, macro AUROC

"""Record torchvision's outputs for the parity test: ``nox -s golden`` (torch 2.14.1, torchvision 0.29.1).

Every weight and BatchNorm statistic of torchvision's resnet50, densenet201 and densenet121 is filled from numpy
(:func:`golden_array`, one generator per key seeded from the key's name), so the parity test rebuilds
the same weights without torch. The script runs a fixed small input through both networks and writes,
per network, ``tests/golden/<arch>.npz``: the state dict's key/shape manifest, the logits of the full
network and the NHWC feature map at every block-wise point and several layer-wise points, named like
ttlx's units (``layer2.3``, ``transition1``). It also writes two tiny ``.pt`` files (zip and legacy
format) and their expected arrays for the torch-free ``.pth`` reader. Only small outputs are written,
never the weights. The functions above ``main`` import no torch, so tests import this file.

``xrv`` (needs ``pip install torchxrayvision``, 1.5.7 used) writes a torchxrayvision DenseNet with small
widths pickled whole in torch's legacy format, as the published chest-X-ray files are, with its feature
maps on grey inputs (``xrv_small.pt``/``.npz``), and a reference-style ``best.pt``
(``DataParallel(Sequential(backbone, head))``, zip format) for the restricted module reader. Usage:
``python scripts/make_golden.py [resnet50 densenet201 densenet121 torchfile xrv]`` (all when none given).
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np

SEED = 2106  # arXiv 2106.05152
INPUT_SHAPE = (2, 3, 32, 32)  # NCHW; every stride-2 layer still sees an even size
GOLDEN_DIR = Path(__file__).resolve().parent.parent / "tests" / "golden"
POINTS = {
    # ttlx unit name: what it is (block-wise points t and layer-wise points n of ANCHORS.md section 2)
    "resnet50": {
        "stem": "layer-wise 0", "layer1.0": "layer-wise 1", "layer1.2": "block-wise 1",
        "layer2.1": "layer-wise 5", "layer2.3": "block-wise 2", "layer3.3": "layer-wise 11 (TTL-2)",
        "layer3.5": "block-wise 3", "layer4.2": "block-wise -1",
    },
    "densenet201": {
        "stem": "layer-wise 0", "denseblock1.denselayer3": "layer-wise 3",
        "denseblock1.denselayer6": "layer-wise 6", "transition1": "block-wise 1",
        "denseblock2.denselayer1": "layer-wise 7", "transition2": "block-wise 2",
        "denseblock3.denselayer42": "layer-wise 60", "transition3": "block-wise 3",
        "norm5": "block-wise -1 (with the ReLU before the classifier)",
    },
    "densenet121": {
        "stem": "layer-wise 0", "denseblock1.denselayer2": "layer-wise 2",
        "transition1": "block-wise 1", "denseblock2.denselayer5": "layer-wise 11",
        "transition2": "block-wise 2", "denseblock3.denselayer24": "layer-wise 42",
        "transition3": "block-wise 3", "denseblock4.denselayer9": "layer-wise 51",
        "norm5": "block-wise -1 (with the ReLU before the classifier)",
    },
}


def golden_array(key: str, shape: tuple[int, ...], seed: int = SEED) -> np.ndarray:
    """The value of one state-dict entry, from numpy alone.

    Convolution and linear weights are He-normal; BatchNorm weights, biases and statistics are spread
    around their usual values (running_var positive) so that a swapped statistic shows in the outputs.
    """
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        return np.asarray(rng.integers(1, 1000), np.int64)
    if leaf == "running_var":
        return rng.uniform(0.5, 2.0, shape).astype(np.float32)
    if leaf == "running_mean":
        return rng.normal(0.0, 0.2, shape).astype(np.float32)
    if leaf == "bias":
        return rng.normal(0.0, 0.1, shape).astype(np.float32)
    if len(shape) == 1:
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    fan_in = math.prod(shape[1:])
    return (rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(np.float32)


def golden_state_dict(manifest: list[tuple[str, tuple[int, ...]]], seed: int = SEED) -> dict[str, np.ndarray]:
    return {key: golden_array(key, tuple(shape), seed) for key, shape in manifest}


def golden_input(seed: int = SEED) -> np.ndarray:
    """The NCHW input batch."""
    return np.random.default_rng(seed).standard_normal(INPUT_SHAPE).astype(np.float32)


def load_golden(arch: str, folder: Path = GOLDEN_DIR) -> tuple[list[tuple[str, tuple]], dict[str, np.ndarray]]:
    """(manifest, outputs by point name incl. ``logits``) of one recorded network."""
    with np.load(folder / f"{arch}.npz") as data:
        manifest = [(k, tuple(s)) for k, s in json.loads(str(data["manifest"]))]
        outputs = {name[len("out:"):]: data[name] for name in data.files if name.startswith("out:")}
    return manifest, outputs


# ------------------------------------------------------------------------------------------------
# torch from here on
# ------------------------------------------------------------------------------------------------
def fill(model, seed: int = SEED) -> list[tuple[str, tuple[int, ...]]]:
    import torch

    state = model.state_dict()
    manifest = [(key, tuple(state[key].shape)) for key in sorted(state)]
    model.load_state_dict({k: torch.from_numpy(v) for k, v in golden_state_dict(manifest, seed).items()})
    return manifest


def record_resnet(model, x) -> dict:
    outputs, hooks = {}, [model.maxpool.register_forward_hook(lambda m, i, o: outputs.__setitem__("stem", o))]
    for stage in range(1, 5):
        for index, block in enumerate(getattr(model, f"layer{stage}")):
            name = f"layer{stage}.{index}"
            hooks.append(block.register_forward_hook(lambda m, i, o, name=name: outputs.__setitem__(name, o)))
    outputs["logits"] = model(x)
    for hook in hooks:
        hook.remove()
    return outputs


def record_densenet(model, x) -> dict:
    import torch

    features, outputs, hooks = model.features, {}, []
    hooks.append(features.pool0.register_forward_hook(lambda m, i, o: outputs.__setitem__("stem", o)))
    for block_index in range(1, 5):
        block, grown = getattr(features, f"denseblock{block_index}"), []
        # a torchvision dense layer returns only its new channels; ttlx's unit returns the concatenation
        hooks.append(block.register_forward_pre_hook(lambda m, i, grown=grown: grown.append(i[0])))
        for index, layer in enumerate(block.values()):
            name = f"denseblock{block_index}.denselayer{index + 1}"

            def keep(m, i, o, name=name, grown=grown):
                grown.append(o)
                outputs[name] = torch.cat(grown, 1)

            hooks.append(layer.register_forward_hook(keep))
        if block_index < 4:
            name = f"transition{block_index}"
            transition = getattr(features, name)
            hooks.append(transition.register_forward_hook(lambda m, i, o, name=name: outputs.__setitem__(name, o)))
    hooks.append(features.norm5.register_forward_hook(
        lambda m, i, o: outputs.__setitem__("norm5", torch.relu(o))))
    outputs["logits"] = model(x)
    for hook in hooks:
        hook.remove()
    return outputs


def save_network(arch: str, model, recorder) -> Path:
    import torch

    model.eval()
    manifest = fill(model)
    with torch.no_grad():
        outputs = recorder(model, torch.from_numpy(golden_input()))
    arrays = {"manifest": np.array(json.dumps(manifest))}
    for name in [*POINTS[arch], "logits"]:
        value = outputs[name].numpy()
        arrays[f"out:{name}"] = value if value.ndim == 2 else value.transpose(0, 2, 3, 1)  # NHWC like ttlx
        print(f"{arch:12s} {name:26s} {str(arrays[f'out:{name}'].shape):20s} max|y| {np.abs(value).max():.3g}")
    path = GOLDEN_DIR / f"{arch}.npz"
    np.savez_compressed(path, **arrays)
    return path


def save_torch_files() -> None:
    """Tiny files in both torch formats with the dtypes and layouts a state dict can hold."""
    import torch

    rng = np.random.default_rng(SEED)
    base = torch.from_numpy(rng.standard_normal((4, 6)).astype(np.float32))
    state = {
        "conv.weight": torch.from_numpy(rng.standard_normal((2, 3, 3, 3)).astype(np.float32)),
        "bn.num_batches_tracked": torch.tensor(7),
        "half": torch.from_numpy(rng.standard_normal(5).astype(np.float16)),
        "bfloat16": torch.from_numpy(rng.standard_normal(3).astype(np.float32)).bfloat16(),
        "transposed": base.t(), "slice": base[1:3, 2:], "empty": torch.zeros(0, 3),
        "flags": torch.tensor([True, False]),
    }
    torch.save(state, GOLDEN_DIR / "torchfile_zip.pt")
    torch.save(state, GOLDEN_DIR / "torchfile_legacy.pt", _use_new_zipfile_serialization=False)
    expected = {k: (v.float() if v.dtype == torch.bfloat16 else v).numpy() for k, v in state.items()}
    np.savez(GOLDEN_DIR / "torchfile_expected.npz", **expected)


# ------------------------------------------------------------------------------------------------
# chest-X-ray sources: a small torchxrayvision DenseNet and a reference-style best.pt (torch from here on)
# ------------------------------------------------------------------------------------------------
XRV_SMALL = {"growth_rate": 8, "block_config": (1, 2, 1, 1), "num_init_features": 16, "in_channels": 1}
XRV_INPUT_SHAPE = (2, 1, 32, 32)  # NCHW grey images in torchxrayvision's [-1024, 1024]
XRV_POINTS = ("stem", "transition1", "transition2", "transition3", "norm5")


def xrv_input(seed: int = SEED) -> np.ndarray:
    return np.random.default_rng([seed, 1]).uniform(-1024, 1024, XRV_INPUT_SHAPE).astype(np.float32)


def save_xrv_small() -> None:
    """``xrv_small.pt``: a torchxrayvision DenseNet of 18 outputs with small widths, pickled whole in torch's
    legacy format like the published files; ``xrv_small.npz``: its input and the NHWC maps at each block."""
    import torch
    import torchxrayvision as xrv

    model = xrv.models.DenseNet(**XRV_SMALL)
    fill(model)
    model.eval()
    torch.save(model, GOLDEN_DIR / "xrv_small.pt", _use_new_zipfile_serialization=False)
    features, outputs = model.features, {}
    hooks = [features.pool0.register_forward_hook(lambda m, i, o: outputs.__setitem__("stem", o))]
    for index in range(1, 4):
        name = f"transition{index}"
        hooks.append(getattr(features, name).register_forward_hook(
            lambda m, i, o, name=name: outputs.__setitem__(name, o)))
    x = torch.from_numpy(xrv_input())
    with torch.no_grad():
        outputs["norm5"] = torch.relu(features(x))
        logits = model.classifier(torch.nn.functional.adaptive_avg_pool2d(outputs["norm5"], 1).flatten(1))
    for hook in hooks:
        hook.remove()
    arrays = {"input": xrv_input().transpose(0, 2, 3, 1), "out:logits": logits.numpy(),
              "config": np.array(json.dumps(XRV_SMALL))}
    for name in XRV_POINTS:
        arrays[f"out:{name}"] = outputs[name].numpy().transpose(0, 2, 3, 1)
        print(f"xrv_small    {name:26s} {str(arrays[f'out:{name}'].shape):20s}")
    np.savez_compressed(GOLDEN_DIR / "xrv_small.npz", **arrays)


def save_reference_checkpoint() -> None:
    """``reference_best.pt``: what the reference code saves after CheXpert pretraining, small: a whole pickled
    ``DataParallel(Sequential(backbone, head))`` (zip format) with a torch.device field."""
    import torch
    import torchvision

    backbone = torchvision.models.DenseNet(growth_rate=8, block_config=(1, 1, 1, 1), num_init_features=16,
                                           num_classes=2)
    fill(backbone)
    head = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(2, 14))
    wrapped = torch.nn.DataParallel(torch.nn.Sequential(backbone, head))
    wrapped.src_device_obj = torch.device("cuda", 0)  # as on the GPU it was trained on
    wrapped.device_ids = [0]
    torch.save(wrapped, GOLDEN_DIR / "reference_best.pt")  # its values are golden_array's, by key


def main(parts: list[str]) -> None:
    """Write the golden files of ``parts`` (network names, ``torchfile``; all when empty)."""
    import torch
    import torchvision

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # a fixed summation order for the reference
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}")
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    networks = {"resnet50": record_resnet, "densenet201": record_densenet, "densenet121": record_densenet}
    for arch, recorder in networks.items():
        if not parts or arch in parts:
            save_network(arch, getattr(torchvision.models, arch)(weights=None), recorder)
    if not parts or "torchfile" in parts:
        save_torch_files()
    if not parts or "xrv" in parts:  # needs torchxrayvision (pip install torchxrayvision)
        save_xrv_small()
        save_reference_checkpoint()


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])

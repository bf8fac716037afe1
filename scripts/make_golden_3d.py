"""Record the 3D reference networks' outputs for the parity tests (torch 2.14.1, torchvision 0.29.1).

    python scripts/make_golden_3d.py [r3d_18] [penet PENET_CHECKOUT] [checkpoints]

``r3d_18``: torchvision's video ResNet-18. ``penet``: ``PENetClassifier`` (depth 50) imported from a local
checkout of the published PENet code (github.com/marshuang80/penet) whose path is given; that code has no
licence, so it is run here and never copied: only its outputs are committed. Every weight, GroupNorm and
BatchNorm value is filled from numpy (``make_golden.golden_array``, seeded by key) so the tests rebuild the
same weights without torch. Each network writes ``tests/golden/<arch>_3d.npz``: the state dict's
key/shape manifest, the logits and the NDHWC map at every block-wise and some layer-wise points, named
like ttlx's units. ``checkpoints`` writes a tiny PENet-style ``.pth.tar`` checkpoint (torch's legacy format
as torch 0.4 wrote, with optimizer, lr_scheduler and model_args entries) for the reader's tests.
The functions above the torch line import no torch, so tests import this file.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("make_golden", ROOT / "scripts" / "make_golden.py")
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)

SEED = golden.SEED
GOLDEN_DIR = golden.GOLDEN_DIR
INPUT_SHAPES = {"r3d_18": (1, 3, 4, 16, 16), "penet": (1, 1, 8, 16, 16)}  # NCDHW, small: the files stay small
CLASSES = {"r3d_18": 400, "penet": 1}
POINTS = {
    "r3d_18": {
        "stem": "layer-wise 0", "layer1.0": "layer-wise 1", "layer1.1": "block-wise 1",
        "layer2.1": "block-wise 2", "layer3.0": "layer-wise 5", "layer3.1": "block-wise 3",
        "layer4.1": "block-wise -1",
    },
    "penet": {
        "stem": "layer-wise 0", "encoders.0.penet_blocks.0": "layer-wise 1",
        "encoders.0.penet_blocks.2": "block-wise 1", "encoders.1.penet_blocks.3": "block-wise 2",
        "encoders.2.penet_blocks.1": "layer-wise 9", "encoders.2.penet_blocks.5": "block-wise 3",
        "encoders.3.penet_blocks.2": "block-wise -1",
    },
}
TINY_CHECKPOINT = {"classes": 3, "seed": SEED + 1}  # the fake checkpoints' head and weights


def golden_input(arch: str, seed: int = SEED) -> np.ndarray:
    """The NCDHW input batch of ``arch``."""
    return np.random.default_rng([seed, 3]).standard_normal(INPUT_SHAPES[arch]).astype(np.float32)


def load_golden(arch: str, folder: Path = GOLDEN_DIR):
    """(manifest, outputs by point name incl. ``logits``) of one recorded 3D network."""
    with np.load(folder / f"{arch}_3d.npz") as data:
        manifest = [(k, tuple(s)) for k, s in json.loads(str(data["manifest"]))]
        outputs = {name[len("out:"):]: data[name] for name in data.files if name.startswith("out:")}
    return manifest, outputs


# ------------------------------------------------------------------------------------------------
# torch from here on
# ------------------------------------------------------------------------------------------------
def record(model, units: dict, stem, x) -> dict:
    """Outputs of the stem module and of every unit (name -> module), and the logits."""
    outputs = {}
    hooks = [stem.register_forward_hook(lambda m, i, o: outputs.__setitem__("stem", o))]
    for name, unit in units.items():
        hooks.append(unit.register_forward_hook(lambda m, i, o, name=name: outputs.__setitem__(name, o)))
    outputs["logits"] = model(x)
    for hook in hooks:
        hook.remove()
    return outputs


def r3d_units(model) -> dict:
    return {f"layer{s}.{i}": block for s in range(1, 5) for i, block in enumerate(getattr(model, f"layer{s}"))}


def penet_units(model) -> dict:
    return {f"encoders.{i}.penet_blocks.{j}": block for i, encoder in enumerate(model.encoders)
            for j, block in enumerate(encoder.penet_blocks)}


def import_penet(checkout: Path):
    """``PENetClassifier`` from a checkout; its ``util`` package (data and plotting helpers the classifier's
    forward pass never calls) is replaced by an empty module when its dependencies are missing."""
    import types

    sys.path.insert(0, str(checkout))
    try:
        import util  # noqa: F401
    except ImportError:
        sys.modules["util"] = types.ModuleType("util")
    from models.penet_classifier import PENetClassifier

    return PENetClassifier


def save_network(arch: str, model, units: dict, stem) -> Path:
    import torch

    model.eval()
    manifest = golden.fill(model)
    with torch.no_grad():
        outputs = record(model, units, stem, torch.from_numpy(golden_input(arch)))
    arrays = {"manifest": np.array(json.dumps(manifest))}
    for name in [*POINTS[arch], "logits"]:
        value = outputs[name].numpy()
        arrays[f"out:{name}"] = value if value.ndim == 2 else value.transpose(0, 2, 3, 4, 1)  # NDHWC like ttlx
        print(f"{arch:8s} {name:28s} {str(arrays[f'out:{name}'].shape):22s} max|y| {np.abs(value).max():.3g}")
    path = GOLDEN_DIR / f"{arch}_3d.npz"
    np.savez_compressed(path, **arrays)
    return path


def save_checkpoint(PENetClassifier) -> None:
    """``xnet_kin_tiny.pth.tar``: a PENet checkpoint laid out as the published Kinetics one (legacy format;
    ``module.``-prefixed model_state with ``xnet_blocks``; optimizer, lr_scheduler and model_args entries),
    holding a PENet cut to its stem and first bottleneck so the file stays small (the optimizer steps the
    head only). The weights are golden_array's with ``TINY_CHECKPOINT['seed']``."""
    import functools
    import math

    import torch

    model = PENetClassifier(model_depth=50, num_classes=TINY_CHECKPOINT["classes"])
    model.encoders = model.encoders[:1]
    model.encoders[0].penet_blocks = model.encoders[0].penet_blocks[:1]
    model.classifier.fc = torch.nn.Linear(256, TINY_CHECKPOINT["classes"])
    model.classifier.fc.is_output_head = True
    golden.fill(model, TINY_CHECKPOINT["seed"])
    wrapped = torch.nn.DataParallel(model)
    optimizer = torch.optim.SGD(model.classifier.parameters(), 0.1, momentum=0.9, dampening=0.9, weight_decay=1e-3)
    wrapped(torch.zeros(1, 1, 4, 16, 16)).sum().backward()
    optimizer.step()
    golden.fill(model, TINY_CHECKPOINT["seed"])  # the saved weights are the filled ones, not the stepped ones
    # torch 0.4 pickled a LambdaLR's whole __dict__, lambdas (functools.partial of a module function) included
    schedule = {"lr_lambdas": [functools.partial(math.cos)], "last_epoch": 3, "base_lrs": [0.1]}
    state = wrapped.state_dict()
    state = type(state)((k.replace("penet_blocks", "xnet_blocks"), v) for k, v in state.items())
    checkpoint = {"ckpt_info": {"epoch": 3, "val_loss": 0.5}, "model_name": "PENetClassifier",
                  "model_args": {**model.args_dict(), "num_classes": TINY_CHECKPOINT["classes"]},
                  "model_state": state, "optimizer": optimizer.state_dict(), "lr_scheduler": schedule}
    path = GOLDEN_DIR / "xnet_kin_tiny.pth.tar"
    torch.save(checkpoint, path, _use_new_zipfile_serialization=False)
    print(f"wrote {path.name} ({path.stat().st_size} bytes)")


def main(argv: list[str]) -> None:
    import torch
    import torchvision

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}")
    parts = argv or ["r3d_18"]
    if "r3d_18" in parts:
        model = torchvision.models.video.r3d_18(weights=None)
        save_network("r3d_18", model, r3d_units(model), model.stem)
    if "penet" in parts or "checkpoints" in parts:
        where = parts.index("penet") if "penet" in parts else parts.index("checkpoints")
        if where + 1 >= len(parts):
            sys.exit("give the path of a PENet checkout after 'penet' or 'checkpoints'")
        PENetClassifier = import_penet(Path(parts[where + 1]))
        if "penet" in parts:
            model = PENetClassifier(model_depth=50, num_classes=CLASSES["penet"])
            save_network("penet", model, penet_units(model), model.max_pool)
        if "checkpoints" in parts:
            save_checkpoint(PENetClassifier)


if __name__ == "__main__":
    main(sys.argv[1:])

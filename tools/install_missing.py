"""Install, from a carried folder of wheels, only the distributions this interpreter lacks.

A lent GPU machine has no network and its own image (jax with CUDA, flax, torch); whether it also has
grain, tensorflow-datasets or array-record is not known before the loan starts. So the loan carries a
wheelhouse built here for the device's Python (``pip download --only-binary=:all: --python-version 3.12
...``) and this script installs, with ``--no-deps`` into ``--target``, each wheel whose distribution is
not installed at all; a distribution the image already has is left as the image has it.

    python3 tools/install_missing.py WHEELHOUSE TARGET      # then: export PYTHONPATH=TARGET
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path


def distribution_name(wheel: Path) -> str:
    """The normalised distribution name of a wheel file (PEP 503: lower case, runs of -_. as one -)."""
    return re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()


def missing_wheels(wheelhouse: Path) -> list[Path]:
    missing = []
    for wheel in sorted(wheelhouse.glob("*.whl")):
        try:
            metadata.version(distribution_name(wheel))
        except metadata.PackageNotFoundError:
            missing.append(wheel)
    return missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheelhouse", type=Path)
    parser.add_argument("target", type=Path)
    args = parser.parse_args(argv)
    wheels = missing_wheels(args.wheelhouse)
    print("installing:", " ".join(distribution_name(w) for w in wheels) or "nothing, all present", flush=True)
    if not wheels:
        return 0
    return subprocess.call([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                            "--no-compile", "--target", str(args.target), *map(str, wheels)])


if __name__ == "__main__":
    sys.exit(main())

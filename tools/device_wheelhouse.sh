#!/usr/bin/env bash
# Build what a lent GPU machine (no network, its own image with jax[cuda], flax and torch, Python 3.12 but
# no grain, tensorflow-datasets or array-record; benchmarks/RESULTS.md section 7) needs to run ttlx's
# benchmarks: ttlx's wheel in OUT_DIR and, in OUT_DIR/deps, wheels for that Python of ttlx's dependencies
# the image may lack.
# The big ones the image has (jax, jaxlib, numpy, scipy, tensorstore, matplotlib) are left out to stay
# under the 64 MiB a run may carry.
#   bash tools/device_wheelhouse.sh [OUT_DIR=.whl] [PIP=pip]   (from the repository root)
# On the machine, before the benchmarks:
#   python3 tools/install_missing.py .whl/deps /tmp/site &&
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/ttlx-*.whl &&
#   export PYTHONPATH=/tmp/site
set -euo pipefail
out=${1:-.whl}
pip=${2:-pip}
rm -rf "$out"
mkdir -p "$out/deps"
"$pip" wheel -q --no-deps -w "$out" .
# promise (tensorflow-datasets') is published only as a source archive: built here, it is pure Python
"$pip" wheel -q --no-deps -w "$out/deps" promise
target=(--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
        --platform any -d "$out/deps")
"$pip" download -q "${target[@]}" --no-deps tensorflow-datasets==4.9.10
"$pip" download -q "${target[@]}" grain==0.2.18 array-record==0.8.6 absl-py dm-tree etils immutabledict protobuf psutil \
    requests simple_parsing tensorflow-metadata termcolor toml tqdm wrapt typer rich orbax-checkpoint \
    scikit-learn submitit huggingface_hub safetensors importlib_resources pillow
cd "$out/deps"
rm -f jax-* jaxlib-* scipy-* tensorstore-* numpy-* uvloop-* ml_dtypes-* opt_einsum-* msgpack-* hf_xet-* \
    matplotlib-* fonttools-* kiwisolver-* contourpy-*
du -sh .

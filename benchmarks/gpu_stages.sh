#!/usr/bin/env bash
# The GPU benchmarks in stages, most important first, each writing its own JSON as soon as it ends, so a
# machine lent for a few minutes still leaves every stage it finished. Same measurements as one
# `python benchmarks/run.py` (bfloat16, batch 128 on a GPU); one interpreter holds both sides here.
#   bash benchmarks/gpu_stages.sh OUT_DIR [PYTHON]
set -u
out=${1:?usage: gpu_stages.sh OUT_DIR [PYTHON]}
py=${2:-python3}
mkdir -p "$out"
stage() {
    local name=$1
    shift
    echo "== stage $name $(date -u +%T)" | tee -a "$out/log.txt"
    "$py" benchmarks/run.py --json "$out/$name.json" --reference-python "$py" "$@" 2>&1 | tee -a "$out/log.txt"
}
stage resnet50_train --only train_step --models resnet50-ftl resnet50-ttl2 resnet50-ttl1
stage memory_startup --only memory startup
stage densenet201_train --only train_step --models densenet201-ftl
stage latency --only latency --models resnet50-ftl resnet50-ttl2 densenet201-ftl
stage compile --only compile
echo "== done $(date -u +%T)" | tee -a "$out/log.txt"

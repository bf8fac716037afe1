#!/usr/bin/env bash
# The GPU benchmarks in stages, most important first, each writing its own JSON as soon as it ends, so a
# machine lent for a few minutes still leaves every stage it finished. Same measurements as one
# `python benchmarks/run.py` (bfloat16, batch 128 on a GPU); one interpreter holds both sides here.
# Runs from any folder (paths are taken from where this script lies).
#   bash tools/gpu_stages.sh OUT_DIR [PYTHON [STAGE ...]]
# With no STAGE, all of them in the order below; name some to run only those, in the order given
# (a short loan spends its minutes on what is still unmeasured). These run only when named:
# `resnet50_bs64`, `resnet50_targets` at the reference recipe's batch of 64 (`ttlx train`'s default),
# `variants`, `benchmarks/probes/variant_probe.py`: ttlx against the formulations it replaced on accelerators
# (OUT_DIR/variants.jsonl),
# `train_e2e`, whole `ttlx train` runs of ResNet50 FTL and TTL-2 (`benchmarks/probes/train_e2e.py`) with ttlx's
# default worker processes (half the cores, up to 8 per GPU) at its default 4, and at 1 and 2, threads per
# worker (images/s of the epochs after the first, 40 steps each; OUT_DIR/train_e2e.json),
# `prefetch`, the same whole runs with TTLX_DEVICE_PREFETCH at 0 and 2, alternating (4 epochs of 30 steps;
# OUT_DIR/prefetch.json): whether placing the batches on the device from a thread speeds the loop,
# `between_epochs`, `benchmarks/probes/between_epochs.py` on a prepared digits at 224 px, ResNet50 FTL, the
# loop's host parts per step (OUT_DIR/between_epochs.json), and
# `xla_options`, `variant_probe.py` with XLA's GPU compiler options as variants (CUDA graphs off, CUDA
# graphs of any length, cuDNN runtime fusion) against ttlx as shipped, 4 rounds (OUT_DIR/xla_options.jsonl).
# `volumes_3d`: `benchmarks/train_step_3d.py`, the penet and r3d_18 train steps against torchvision and the PENet
# code (a checkout carried along, its path in PENET_CHECKOUT; without it only r3d_18's reference runs) at batch 8
# of 24x192x192 windows in bfloat16, with each side's peak device memory (OUT_DIR/train_step_3d.json).
# On a machine without network whose image lacks grain, tensorflow-datasets or array-record, install them first
# from a wheelhouse built by tools/device_wheelhouse.sh (see tools/README.md).
set -u
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:?usage: gpu_stages.sh OUT_DIR [PYTHON [STAGE ...]]}
py=${2:-python3}
shift $(( $# < 2 ? $# : 2 ))
declare -A args=(
    [resnet50_targets]="--only train_step --models resnet50-ftl resnet50-ttl2"
    [resnet50_ttl1]="--only train_step --models resnet50-ttl1"
    [resnet50_bs64]="--only train_step --models resnet50-ftl resnet50-ttl2 --batch-size 64"
    [memory_startup]="--only memory startup"
    [densenet201_train]="--only train_step --models densenet201-ftl"
    [latency]="--only latency --models resnet50-ftl resnet50-ttl2 densenet201-ftl"
    [compile]="--only compile"
    [variants]=""
    [train_e2e]=""
    [prefetch]=""
    [between_epochs]=""
    [xla_options]=""
    [volumes_3d]=""
)
order=(resnet50_targets resnet50_ttl1 memory_startup densenet201_train latency compile)
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=("${order[@]}")
for name in "${stages[@]}"; do
    if [ -z "${args[$name]+set}" ]; then
        echo "unknown stage '$name'; choose from: ${order[*]} resnet50_bs64 variants train_e2e prefetch between_epochs xla_options volumes_3d" >&2
        exit 2
    fi
done
mkdir -p "$out"
for name in "${stages[@]}"; do
    echo "== stage $name $(date -u +%T)" | tee -a "$out/log.txt"
    if [ "$name" = train_e2e ]; then
        "$py" "$root/benchmarks/probes/train_e2e.py" --json "$out/train_e2e.json" --models resnet50-ftl resnet50-ttl2 \
            --images 8192 --workers auto --worker-threads 1 2 2>&1 | tee -a "$out/log.txt"
        continue
    fi
    if [ "$name" = prefetch ]; then
        "$py" "$root/benchmarks/probes/train_e2e.py" --json "$out/prefetch.json" --models resnet50-ftl resnet50-ttl2 \
            --images 6144 --epochs 4 --workers auto --device-prefetch 0 2 2>&1 | tee -a "$out/log.txt"
        continue
    fi
    if [ "$name" = between_epochs ]; then
        scratch=$(mktemp -d)
        "$py" -m ttlx.cli prepare digits --data-dir "$scratch/data" >/dev/null 2>&1
        "$py" "$root/benchmarks/probes/between_epochs.py" --json "$out/between_epochs.json" -- --dataset digits \
            --data-dir "$scratch/data" --model resnet50 --trunc -1 --pretrained random --image-size 224 \
            --pooling --lr 2e-3 --max-epoch 6 --bs 128 --dtype bfloat16 --workdir "$scratch/run" 2>&1 \
            | tee -a "$out/log.txt"
        rm -rf "$scratch"
        continue
    fi
    if [ "$name" = xla_options ]; then
        "$py" "$root/benchmarks/probes/variant_probe.py" --out "$out/xla_options.jsonl" --rounds 4 \
            --variants base no_command_buffers command_buffers_min_1 runtime_fusion 2>&1 | tee -a "$out/log.txt"
        continue
    fi
    if [ "$name" = volumes_3d ]; then
        "$py" "$root/benchmarks/train_step_3d.py" run --reference-python "$py" --penet-checkout "${PENET_CHECKOUT:-}" \
            --models penet r3d_18 --batch-size 8 --window 24 --image-size 192 --dtype bfloat16 --steps 10 \
            --warmup 3 --rounds 2 --json "$out/train_step_3d.json" 2>&1 | tee -a "$out/log.txt"
        continue
    fi
    if [ "$name" = variants ]; then
        "$py" "$root/benchmarks/probes/variant_probe.py" --out "$out/variants.jsonl" 2>&1 | tee -a "$out/log.txt"
        continue
    fi
    # shellcheck disable=SC2086  # the stage's arguments are meant to split
    "$py" "$root/benchmarks/run.py" --json "$out/$name.json" --reference-python "$py" ${args[$name]} 2>&1 \
        | tee -a "$out/log.txt"
done
echo "== done $(date -u +%T)" | tee -a "$out/log.txt"

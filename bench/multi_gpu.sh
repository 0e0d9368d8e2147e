#!/usr/bin/env bash
# The multi-GPU acceptance of docs/multi-gpu.md, from the repository root, on one machine with
# several GPUs (2-8; a random-weight Llama-3-70B shape in bf16 is ~141 GB of weights, so it needs at
# least two H200s, or more smaller GPUs):
#   bash bench/multi_gpu.sh OUTDIR [device-map|tp|all]
# "device-map": accelerate's pipeline split over every visible GPU; "tp": tensor parallelism under
# torchrun, one process per GPU (GPUS, default: every visible GPU). Each runs 64->50 and 512->200 at
# batch 1 and 8: plain generate(), full and summary capture in the same process, median and paired
# ratios, peak memory of every GPU, and the report's structure against a tiny one-device model.
# Each part writes OUTDIR/<part>.txt (the Markdown table) and OUTDIR/<part>.json.
# SHAPE (default llama3-70b), CASES, BATCHES and REPEATS narrow it for a smaller machine or a first try,
# e.g. SHAPE=tiny CASES=16:4 BATCHES=1 REPEATS=1 bash bench/multi_gpu.sh /tmp/mg all on a CPU machine.
set -u
out="${1:-bench-multi-gpu}"
part="${2:-all}"
shape="${SHAPE:-llama3-70b}"
cases="${CASES:-64:50,512:200}"
batches="${BATCHES:-1,8}"
repeats="${REPEATS:-3}"
python="${PYTHON:-python3}"
if command -v nvidia-smi >/dev/null; then
    gpus="${GPUS:-$(nvidia-smi --list-gpus | wc -l)}"
    dtype=bfloat16
    nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader
else
    gpus="${GPUS:-2}"
    dtype=float32
fi
mkdir -p "$out"
common=(--shape "$shape" --dtype "$dtype" --cases "$cases" --batch "$batches" --repeats "$repeats")
if [ "$part" = device-map ] || [ "$part" = all ]; then
    "$python" bench/multi_gpu.py --layout device-map "${common[@]}" --json "$out/device-map.json" \
        >"$out/device-map.txt" 2>&1
    tail -n 16 "$out/device-map.txt"
fi
if [ "$part" = tp ] || [ "$part" = all ]; then
    "$python" -m torch.distributed.run --nproc-per-node "$gpus" bench/multi_gpu.py --layout tp "${common[@]}" \
        --json "$out/tp.json" >"$out/tp.txt" 2>&1
    tail -n 16 "$out/tp.txt"
fi

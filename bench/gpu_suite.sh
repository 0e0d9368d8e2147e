#!/usr/bin/env bash
# Every GPU table of docs/performance.md in one run (about 9 minutes on an H200), from the
# repository root: `bash bench/gpu_suite.sh OUTDIR`. Each case writes OUTDIR/<name>.txt (the
# Markdown table) and OUTDIR/<name>.json; the tail of each table is echoed as it finishes.
# On a machine without this project's dependencies, install them first (see docs/performance.md).
set -u
out="${1:-bench-gpu}"
mkdir -p "$out"
bench() {
    local name="$1"
    shift
    python3 bench/overhead.py --device cuda --dtype bfloat16 --json "$out/$name.json" "$@" >"$out/$name.txt" 2>&1
    tail -n 4 "$out/$name.txt"
}
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu --format=csv,noheader
bench llama_b1 --shape llama3-8b --cases 64:50,512:200 --batch 1 --modes full,summary --repeats 7 --warmup 2
bench llama_b8 --shape llama3-8b --cases 64:50 --batch 8 --modes full,summary --repeats 5
bench smollm2_b1 --shape smollm2-135m --cases 64:50,512:200 --batch 1 --modes full,summary --repeats 5
bench llama_other --shape llama3-8b --cases 64:50 --batch 1 --modes full-no-prompt,on_risk --repeats 3

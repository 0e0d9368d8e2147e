#!/usr/bin/env bash
# Every GPU table of docs/performance.md, from the repository root:
#   bash bench/gpu_suite.sh OUTDIR [llama|rest|static|dynamic|dynamic-steps|dynamic-split|side-stream|first-step|budgets|compiled|trace|families|quantized|all]
# "llama" (Llama-3-8B shape, batch 1: the targets; about 6 minutes on an H200) and "rest"
# (SmolLM2-135M shape, batch 8, the other capture modes; about 6 minutes) each fit one 10-minute
# device call; "all" (the default) runs both. "static" (transformers' compiled static-cache decoding
# step, Llama-3-8B shape, 512->200 and 64->50, batch 1 and 8: each batch size and capture mode
# compiles once, 35-76 s each on the H200 hosts lent, so the first run of each is long: BATCHES=8
# alone took about 6 minutes, both batch sizes ran past 10 minutes on a slow host) and "dynamic"
# (the same cases with the dynamic cache; every case in one call with REPEATS=4 PHASES=0, 404 s; with
# phases, split by BATCHES or CASES) are the fast-path table; "dynamic-steps" times the dynamic cases
# phase by phase in one call (bench/step_probe.py, REPEATS=6 rounds: 322 s on an H100 host; STEP_MODES
# sets its capture modes, default summary,full: STEP_MODES=summary,full,full:one-stream adds full capture
# with its prompt telemetry on the model's stream); "side-stream" times the prompt pass alone (eight
# 512-token prompts, one new token) with the prompt telemetry on a CUDA stream of its own (the default
# on the dynamic cache) and on the model's stream (modes "full:one-stream", "summary:one-stream");
# "dynamic-split" splits a summary decoding step at batch 1 into the wrappers, the copy of the rows
# and the observer (step_probe's plain-wrapped and plain-copied controls, the observer's calls timed
# in place, the host's cost of a step's pieces; CASES, default 64:50,512:200; about 5 minutes).
# "first-step" times the prompt pass alone (one new token, dynamic cache, eight 512-token prompts):
# full capture with and without its prompt telemetry and summary capture against plain, then one
# profiled full run, its device time by CoreVital function (about 30 s once the model is built).
# "trace" profiles one run of each mode of the static-cache cases (where the device's time goes, by
# CoreVital function; BATCHES=8 for batch 8 alone, about 6 minutes). "budgets" compares, in one process, capture with the budgets the GPU's free memory allows and with
# the budgets sized by the model alone (modes with ":sized"), static cache, batch 8 (about 6 minutes).
# "compiled" times the prompt pass's reductions per layer (bench/prompt_parts.py: as written and
# compiled) into OUTDIR/prompt_parts.txt and a window's (bench/window_parts.py, with the device
# memory each takes) into OUTDIR/window_parts.txt, then compares, in one process, full capture with its
# reductions compiled (the default where generate() compiles the decoding steps) and as written
# (mode "full:written"), static cache, 512->200 (BATCHES as for "static").
# "families" runs the static-cache subset of the decoder-family matrix on the GPU (generate()
# compiles every tiny model's decoding step; 8 pytest workers, about 2 minutes; needs pytest-xdist)
# into OUTDIR/family_static.txt. "quantized" saves a random Llama-3-8B shape once and loads it
# 4-bit and 8-bit with bitsandbytes (64->50, batch 1; about 5 minutes). Each bench case writes OUTDIR/<name>.txt (the Markdown table) and
# OUTDIR/<name>.json; the tail of each table is echoed as it finishes.
# "static" and "dynamic" also print, for each case, where the time goes: the first step, the first
# decoding step, the median decoding step and what follows the last step, each mode against plain
# (PHASES more untimed runs each),
# and time plain generate() a second time as a mode ("plain-again", an A/A control: its ratio to plain
# is what two identical runners read in that case, the resolution of the capture modes' ratios).
# BATCHES (default "1,8") narrows the static and dynamic parts to some batch sizes: "static" with
# both took 427-514 s on fast H200 hosts and ran past 575 s on slower ones (compilations 37-82 s);
# BATCHES=1 and BATCHES=8 in two calls leave room. Or, for every static case in one call, run
# "static" twice on one machine: inductor's caches stay in the machine's /tmp while it stays warm
# (30 s after a call), so the second call compiles each graph in 8-14 s instead of 39-73 s and takes
# about 300 s with REPEATS=7 PHASES=1. COMPILE_CACHE=DIR does the same across machines: "static"
# loads torch's compile caches from DIR when it holds them, else writes them there after each case's
# warm-up (in parts of at most 15 MiB, zlib-compressed), so a call that writes them into OUTDIR hands
# the graphs to a later call that carries them. PROFILE (e.g. "py:full,py:summary") profiles one
# more run of those modes in each static case after its timed runs (bench/overhead.py --profile:
# cProfile for "py:" modes, where the host's time goes). REPEATS and PHASES set the timed and the phase
# runs of each mode ("static": 7 and 3, "dynamic": 4 and 1); CASES narrows "dynamic" to some of its
# cases. Each case's table and the JSON so far are written as the case finishes.
# NOISE_GATE=PCT (e.g. 8) times plain five times after each case's warm-up and stops the suite there
# (status 3, nothing measured) when those runs spread by more than PCT % of their median
# (bench/overhead.py and bench/step_probe.py --noise-gate): a busy host cannot resolve budgets of
# one to ten points.
# GATE_TRIES=N checks up to N times, 20 s apart, before stopping (--gate-tries): a host whose load
# comes and goes.
# On a machine without this project's dependencies, install them first (see docs/performance.md).
set -u
out="${1:-bench-gpu}"
part="${2:-all}"
batches="${BATCHES:-1,8}"
mkdir -p "$out"
bench() {
    local name="$1"
    shift
    python3 bench/overhead.py --device cuda --dtype bfloat16 --json "$out/$name.json" \
        --noise-gate "${NOISE_GATE:-0}" --gate-tries "${GATE_TRIES:-1}" "$@" >"$out/$name.txt" 2>&1
    local status=$?
    tail -n 4 "$out/$name.txt"
    stop_if_noisy "$status"
}
probed() {
    # bench/step_probe.py's table without its per-run lines
    grep -v "^- \|^Each\|^$" "$2"
    stop_if_noisy "$1"
}
stop_if_noisy() {
    if [ "$1" -eq 3 ]; then
        exit 3 # a bench's host check failed: the rest would meet the same host
    fi
}
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu --format=csv,noheader
if [ "$part" = llama ] || [ "$part" = all ]; then
    bench llama_b1 --shape llama3-8b --cases 64:50,512:200 --batch 1 --modes full,summary --repeats 9 --warmup 2
fi
if [ "$part" = rest ] || [ "$part" = all ]; then
    bench smollm2_b1 --shape smollm2-135m --cases 64:50,512:200 --batch 1 --modes full,summary --repeats 5
    bench llama_b8 --shape llama3-8b --cases 64:50 --batch 8 --modes full,summary --repeats 5
    bench llama_other --shape llama3-8b --cases 64:50 --batch 1 --modes full-no-prompt,on_risk --repeats 3
fi
# The static cache's longest case first: transformers (and CoreVital) never shrink a model's static
# cache, so 64->50 then runs over the same 711-position cache and reuses the compiled graphs (three
# per batch size: plain, full, summary) instead of compiling its own first.
if [ "$part" = static ]; then
    bench llama_static --shape llama3-8b --cases 512:200,64:50 --batch "$batches" --modes plain-again,full,summary \
        --repeats "${REPEATS:-7}" --warmup 1 --cache static --phases "${PHASES:-3}" \
        ${COMPILE_CACHE:+--compile-cache "$COMPILE_CACHE"} ${PROFILE:+--profile "$PROFILE"}
fi
if [ "$part" = dynamic ]; then
    bench llama_dynamic --shape llama3-8b --cases "${CASES:-64:50,512:200}" --batch "$batches" \
        --modes plain-again,full,summary \
        --repeats "${REPEATS:-4}" --warmup 1 --cache dynamic --phases "${PHASES:-1}"
fi
if [ "$part" = dynamic-split ]; then
    # what a summary decoding step adds, split: wrappers (plain-wrapped), the copy of the rows
    # (plain-copied), the observer's own calls timed in place, the host's cost of one operator, of
    # the copy and of a norm's call bare and wrapped
    python3 bench/step_probe.py --device cuda --shape llama3-8b --cases "${CASES:-64:50,512:200}" --batch 1 \
        --modes summary --sections observer,launches,allocator,phases \
        --controls plain-again,plain-hold,plain-wrapped,plain-copied --rounds "${REPEATS:-6}" --warmup 1 \
        --noise-gate "${NOISE_GATE:-0}" --gate-tries "${GATE_TRIES:-1}" >"$out/llama_dynamic_split.txt" 2>&1
    probed $? "$out/llama_dynamic_split.txt"
fi
if [ "$part" = first-step ]; then
    bench llama_first_step --shape llama3-8b --cases 512:1 --batch "${BATCHES:-8}" \
        --modes full,full-no-prompt,summary --repeats "${REPEATS:-5}" --warmup 1 --cache dynamic --profile full
    sed -n '/^| function | run ms/,/^$/p' "$out/llama_first_step.txt" | head -n 20
fi
if [ "$part" = dynamic-steps ]; then
    # the dynamic cache's four cases phase by phase (bench/step_probe.py: one model, plain against
    # itself as the A/A control, ratios paired by round with their 95 % intervals; about 320 s)
    python3 bench/step_probe.py --device cuda --shape llama3-8b --cases "${CASES:-64:50,512:200}" \
        --batch "$batches" --modes "${STEP_MODES:-summary,full}" --sections phases --controls plain-again \
        --rounds "${REPEATS:-6}" --warmup 1 --noise-gate "${NOISE_GATE:-0}" --gate-tries "${GATE_TRIES:-1}" \
        >"$out/llama_dynamic_steps.txt" 2>&1
    probed $? "$out/llama_dynamic_steps.txt"
fi
if [ "$part" = side-stream ]; then
    # the prompt telemetry computed beside the model (the default on the dynamic cache) against on
    # the model's stream (":one-stream"): the prompt pass alone, eight 512-token prompts, one new token
    bench llama_side_first_step --shape llama3-8b --cases 512:1 --batch "${BATCHES:-8}" \
        --modes full,full:one-stream,full-no-prompt,summary,summary:one-stream --repeats "${REPEATS:-5}" \
        --warmup 1 --cache dynamic
fi
if [ "$part" = budgets ]; then
    bench llama_budgets --shape llama3-8b --cases 512:200,64:50 --batch 8 \
        --modes full,full:sized,summary,summary:sized --repeats 7 --warmup 1 --cache static
fi
if [ "$part" = compiled ]; then
    python3 bench/prompt_parts.py --device cuda --dtype bfloat16 >"$out/prompt_parts.txt" 2>&1
    tail -n 12 "$out/prompt_parts.txt"
    python3 bench/window_parts.py --device cuda --dtype bfloat16 >"$out/window_parts.txt" 2>&1
    tail -n 13 "$out/window_parts.txt"
    bench llama_compiled --shape llama3-8b --cases 512:200 --batch "$batches" --modes full,full:written \
        --repeats "${REPEATS:-7}" --warmup 1 --cache static --phases "${PHASES:-1}" \
        ${COMPILE_CACHE:+--compile-cache "$COMPILE_CACHE"}
fi
if [ "$part" = trace ]; then
    # one profiled run of plain, full and summary per case (torch.profiler with Python stacks): each
    # run's device busy time against its wall time, the device time of every CoreVital function, and
    # the timelines in OUTDIR/traces (Chrome trace format)
    mkdir -p "$out/traces"
    bench llama_trace --shape llama3-8b --cases 512:200,64:50 --batch "$batches" --modes full,summary \
        --repeats 3 --warmup 1 --cache static --profile plain,full,summary --trace-dir "$out/traces"
fi
if [ "$part" = quantized ]; then
    # bitsandbytes (not on the device machine: install its wheel first, see docs/performance.md)
    bench llama_quantized --shape llama3-8b --quantize 4bit,8bit --cases 64:50 --batch 1 --modes full,summary \
        --repeats 3
fi
if [ "$part" = families ]; then
    CV_TEST_DEVICE=cuda python3 -m pytest -q -p no:cacheprovider -n 8 -rA \
        tests/integration/test_family_matrix.py -k static >"$out/family_static.txt" 2>&1
    tail -n 1 "$out/family_static.txt"
fi

#!/usr/bin/env bash
# A same-host A/B of commits: bench/overhead.py on this tree's source and on other commits' source,
# one after another on one machine, so that the ratios of two commits come from one host (device
# hosts differ by more than the budgets: docs/performance.md, "The dynamic cache").
#
#   bash bench/ab_trees.sh prepare DIR COMMIT...   # here: each COMMIT's src/ in DIR/<its hash>/
#   bash bench/ab_trees.sh run DIR OVERHEAD_ARGS... # there: this tree, then each tree in DIR
#
# "prepare" writes each commit's src/ (git archive) next to a copy of this tree's bench/ and
# tests/support/, so every tree runs the same bench (each bench puts its own tree's src/ first on
# sys.path) and any bench runs from a tree's folder as it is, e.g. `cd DIR/<hash> && python3
# bench/step_probe.py ...`. DIR is best .ab/ (git ignores it; a device call carries it with carry
# [".ab"]).
# "run" runs bench/overhead.py with OVERHEAD_ARGS (give --json nothing: each tree writes
# OUT/NAME-ROUND.json and OUT/NAME-ROUND.txt, OUT being $OUT or ./ab-out) on this tree ("head"),
# then on each tree in DIR, ROUNDS times (default 1) in that order, and prints each run's host
# check and table (PYTHON names the interpreter, default python3). With --noise-gate, a check that
# fails on this tree stops everything (status 3): the trees after it would meet the same host.
set -u

usage() {
    sed -n '2,16p' "$0" >&2
    exit 2
}

[ $# -ge 2 ] || usage
action=$1
dir=$2
shift 2
repo=$(cd "$(dirname "$0")/.." && pwd)

case "$action" in
prepare)
    [ $# -ge 1 ] || usage
    for commit in "$@"; do
        git -C "$repo" rev-parse --verify --quiet "$commit^{commit}" >/dev/null || {
            echo "ab_trees.sh: no commit $commit" >&2
            exit 2
        }
        tree="$dir/$(git -C "$repo" rev-parse --short "$commit^{commit}")" # HEAD~1, origin/main: by hash
        rm -rf "$tree"
        mkdir -p "$tree"
        git -C "$repo" archive "$commit" src | tar -x -C "$tree"
        cp -r "$repo/bench" "$tree/bench"
        mkdir -p "$tree/tests"
        cp -r "$repo/tests/support" "$tree/tests/support" # the shapes' tiny models (bench/shapes.py)
        find "$tree" -name __pycache__ -prune -exec rm -rf {} +
        echo "$tree: src/ of $(git -C "$repo" log -1 --format='%h %s' "$commit" | cut -c1-72)"
    done
    ;;
run)
    [ -d "$dir" ] || {
        echo "ab_trees.sh: no directory $dir (run prepare first)" >&2
        exit 2
    }
    out=${OUT:-ab-out}
    mkdir -p "$out"
    export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" # tests.support, for bench/shapes.py
    trees=("head:$repo")
    shopt -s nullglob
    for tree in "$dir"/*/; do
        tree=${tree%/}
        trees+=("$(basename "$tree"):$tree")
    done
    for round in $(seq 1 "${ROUNDS:-1}"); do
        for entry in "${trees[@]}"; do
            name=${entry%%:*}
            root=${entry#*:}
            "${PYTHON:-python3}" "$root/bench/overhead.py" "$@" --json "$out/$name-$round.json" \
                >"$out/$name-$round.txt" 2>&1
            status=$?
            echo "## $name, round $round: status $status"
            grep -E "host check|host too noisy|^\| " "$out/$name-$round.txt" | awk '!seen[$0]++'
            if [ "$status" -eq 3 ] && [ "$name" = head ]; then
                exit 3
            fi
        done
    done
    ;;
*)
    usage
    ;;
esac

#!/usr/bin/env bash
# One GPU job of the side-by-side: the authors' runs (sidebyside/authors_toy.py, resumed from
# STATE if given) and one of our grids, side by side on one GPU machine.
#   sidebyside/gpu_phase.sh AUTHORS_DIR RUNS SECONDS VARIANTS OUT [STATE.tar.gz]
# writes OUT/authors-state.tar.gz (metrics and resume state of the authors' runs), OUT/grid/
# (our grid's metrics.jsonl, config.json, summary.json) and the logs.
set -u
AUTH=$1 RUNS=$2 SECONDS_=$3 VARIANTS=$4 OUT=$5 STATE=${6:-}
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONPATH=$PWD/src
WORK=$(mktemp -d)
mkdir -p "$WORK/authors" "$OUT/grid"
[ -n "$STATE" ] && tar xzf "$STATE" -C "$WORK"
python3 sidebyside/authors_toy.py "$AUTH" "$WORK/authors" --runs "$RUNS" \
    --time-limit "$SECONDS_" > "$OUT/authors.log" 2>&1 &
if [ -n "$VARIANTS" ]; then
    timeout $((SECONDS_ + 30)) python3 -m attnstreams.cli icl grid --variants "$VARIANTS" \
        --seeds 10 --device cuda --compile --precision tf32 --out "$WORK/grid" --json ${GRID_ARGS:-} \
        > "$OUT/grid.json" 2> "$OUT/grid.err"
    echo "grid exit $?" >> "$OUT/grid.err"
    cp "$WORK"/grid/{metrics.jsonl,config.json,summary.json} "$OUT/grid/" 2>/dev/null
fi
wait
tar czf "$OUT/authors-state.tar.gz" -C "$WORK" --exclude='*.tests.npz' authors
nvidia-smi --query-gpu=name,memory.used --format=csv >> "$OUT/authors.log"
tail -3 "$OUT/authors.log"; tail -2 "$OUT/grid.err" 2>/dev/null

#!/usr/bin/env bash
# One GPU job of the side-by-side: the authors' runs (sidebyside/authors_toy.py, resumed from
# STATE if given) and our grids, side by side on one GPU machine.
#   sidebyside/gpu_phase.sh AUTHORS_DIR RUNS SECONDS "VARIANTS[;VARIANTS...]" OUT [STATE.tar.gz]
# Each ';'-separated variant group is one `icl grid` of 10 seeds, run one after the other while
# the authors' runs go on; their runs stop (resumable) after SECONDS. Writes
# OUT/authors-state.tar.gz (their metrics and resume state), OUT/grids.tar.gz (our grids'
# metrics.jsonl, config.json, summary.json) and the logs. GRID_ARGS adds flags to each grid.
set -u
AUTH=$1 RUNS=$2 SECONDS_=$3 GROUPS_=$4 OUT=$5 STATE=${6:-}
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONPATH=$PWD/src
WORK=$(mktemp -d)
START=$(date +%s)
mkdir -p "$WORK/authors" "$WORK/grids"
[ -n "$STATE" ] && tar xzf "$STATE" -C "$WORK"
python3 sidebyside/authors_toy.py "$AUTH" "$WORK/authors" --runs "$RUNS" \
    --time-limit "$SECONDS_" > "$OUT/authors.log" 2>&1 &
i=0
GROUP_LIST=(); [ -n "$GROUPS_" ] && IFS=";" read -ra GROUP_LIST <<< "$GROUPS_"
for variants in ${GROUP_LIST[@]+"${GROUP_LIST[@]}"}; do
    i=$((i + 1))
    left=$((START + SECONDS_ + 30 - $(date +%s)))
    timeout "$left" python3 -m attnstreams.cli icl grid --variants "$variants" --seeds 10 \
        --device cuda --compile --precision tf32 --out "$WORK/grids/$i" --json ${GRID_ARGS:-} \
        > "$OUT/grid.json" 2>> "$OUT/grid.err"
    echo "grid $i ($variants) exit $? at $(( $(date +%s) - START )) s" >> "$OUT/grid.err"
    rm -f "$WORK/grids/$i/checkpoint.safetensors"
done
wait
tar czf "$OUT/authors-state.tar.gz" -C "$WORK" --exclude='*.tests.npz' authors
tar czf "$OUT/grids.tar.gz" -C "$WORK" grids
nvidia-smi --query-gpu=name,memory.used --format=csv >> "$OUT/authors.log"
tail -3 "$OUT/authors.log"; tail -4 "$OUT/grid.err"

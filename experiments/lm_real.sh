#!/usr/bin/env bash
# Experiment 2 on real TinyStories text (results/lm-real): the commands behind its numbers.
#   experiments/lm_real.sh sweep CORPUS WORK OUT      vocabulary x epochs sweep (arm none, seed 0)
#   experiments/lm_real.sh grid CORPUS WORK OUT VOCAB EPOCHS NAMES [WORKERS [ARMS]]
#                                                     4 arms x 10 seeds, names original|resampled
#                                                     (ARMS: a comma list, to run some arms alone)
# CORPUS: a folder of TinyStories text files; WORK: scratch (token files, checkpoints);
# OUT: where the metrics and logs (no checkpoints) are packed, one file a phase. One GPU;
# several runs at once.
set -u
PHASE=$1 CORPUS=$2 WORK=$3 OUT=$4
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:-$PWD/src}
CLI="python3 -m attnstreams.cli --threads 1"
DATA="--data $CORPUS --train-tokens 0 --val-tokens 1000000"
TRAIN="--preset tinystories-8m --batch 64 --eval-batches 0 --ioi-prompts 1024 --device cuda \
  --compile --cuda-graphs --json"
mkdir -p "$WORK" "$OUT"
start=$(date +%s)
pack() {  # metrics, configs, summaries and the tokenizers; never checkpoints
  (cd "$WORK" && find . -name metrics.jsonl -o -name config.json -o -name summary.json \
    -o -name 'tokenizer*.json' -o -name ioi_vocab.json -o -name data_config.json \
    -o -name train.json -o -name validation.json -o -name '*.err' -o -name 'prep-*.json') | tar czf "$OUT/$1.tar.gz" -C "$WORK" -T -
}
case $PHASE in
sweep)
  for V in 2048 4096 8192; do
    $CLI lm prepare $DATA --vocab-size $V --data-dir "$WORK/data-$V" --json > "$WORK/prep-$V.json" &
  done
  wait
  echo "prepared at $(( $(date +%s) - start )) s"
  for V in 2048 4096 8192; do
    for E in 3 6 12; do
      timeout 500 $CLI lm grid $DATA $TRAIN --vocab-size $V --data-dir "$WORK/data-$V" \
        --epochs $E --eval-every 50 --stream none --seeds 1 --out "$WORK/sweep-$V-e$E" \
        > "$WORK/sweep-$V-e$E.json" 2> "$WORK/sweep-$V-e$E.err" &
    done
  done
  wait
  echo "sweep done at $(( $(date +%s) - start )) s"
  pack sweep
  ;;
grid)
  V=$5 E=$6 NAMES=$7 WORKERS=${8:-4} ARMS=${9:-none,value,value-first,value-learned}
  D="$WORK/data-$V-$NAMES"
  $CLI lm prepare $DATA --vocab-size $V --names $NAMES --epochs $E --data-dir "$D" --json \
    > "$WORK/prep-$NAMES.json"
  echo "prepared at $(( $(date +%s) - start )) s"
  timeout 520 $CLI lm grid $DATA $TRAIN --vocab-size $V --names $NAMES --epochs $E \
    --data-dir "$D" --eval-every 50 --stream $ARMS --seeds 10 \
    --workers $WORKERS --out "$WORK/grid-$NAMES" > "$WORK/grid-$NAMES.json" 2> "$WORK/grid-$NAMES.err"
  rc=$?  # 124: stopped by the time limit; rerun the same command to continue the grid
  tail -3 "$WORK/grid-$NAMES.err"
  echo "grid exit $rc at $(( $(date +%s) - start )) s"
  pack "grid-$NAMES"
  ;;
esac
nvidia-smi --query-gpu=name,memory.used --format=csv

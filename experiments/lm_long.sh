#!/usr/bin/env bash
# Experiment 2, long training (results/lm-long): the commands behind its numbers.
#   experiments/lm_long.sh CORPUS WORK OUT NAMES ARMS SEED SEEDS [NAMES ARMS SEED SEEDS ...]
# Each NAMES ARMS SEED SEEDS group (NAMES original|resampled, ARMS a comma list of `lm grid`
# arms: streams, residuals or STREAM+RESIDUAL; seeds SEED..SEED+SEEDS-1) is one `lm grid` of
# 8M models on a 8,192-token BPE, trained for
# $EPOCHS passes over the train split (names resampled: a freshly renamed copy each pass),
# evaluated at $EVALS log-spaced steps. All groups run at once on one GPU, one process a run;
# every run must end inside the job (a checkpoint is not kept between jobs). MPS=1 starts a
# CUDA MPS daemon first, so that the processes' kernels can share the GPU at once. STACK=K
# trains up to K seeds of an arm as one batched computation (`lm grid --stack`), a process each.
# DATA_ROOT: where the token files go (default WORK); a later job given the same folder and
# settings reuses them.
# WARM=0: an arm's processes each compile its step (`lm grid --no-warm-compile`), rather than
# loading what one process compiled first.
# CORPUS: a folder of TinyStories text files; WORK: scratch; OUT: the metrics and logs (no
# checkpoints) packed into one file, plus timings. The grids are stopped LIMIT s after they
# start or DEADLINE s after the job starts, whichever comes first, so that what they wrote is
# packed inside a 10-minute job even when preparing the data is slow.
# COMPILE_CACHE: torch.compile's on-disk cache (Inductor's, with its Triton kernels) lives in
# WORK/compile-cache and is packed into OUT/compile-cache.tar.gz at the end; a later job given
# that file here starts from it (a cold compile of mHC takes about 5 minutes of a 10-minute job).
set -u
CORPUS=$1 WORK=$2 OUT=$3
shift 3
if [ -n "${COMPILE_CACHE:-}" ] && [ ! -f "$COMPILE_CACHE" ]; then
  echo "lm_long.sh: COMPILE_CACHE $COMPILE_CACHE is not a file" >&2
  exit 2
fi
# COPIES: renamed copies to draw from (default: one a pass); fewer than EPOCHS cycle them
EPOCHS=${EPOCHS:-150} EVALS=${EVALS:-48} LIMIT=${LIMIT:-540} DEADLINE=${DEADLINE:-570} COPIES=${COPIES:-} STACK=${STACK:-1}
WARM=${WARM:-1} DATA_ROOT=${DATA_ROOT:-$WORK}
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:-$PWD/src}
CLI=${CLI:-"python3 -m attnstreams.cli --threads 1"}  # CLI: another command (a test's stub)
DATA="--data $CORPUS --train-tokens 0 --val-tokens 1000000 --vocab-size 8192 --epochs $EPOCHS"
copies() { [ "$1" = resampled ] && echo "${COPIES:+--copies $COPIES}"; }  # renamed settings only
# TRAIN: the run settings (a CPU check of this script sets a tiny model here)
# PRESET: the model (modern-8m: the modern block of similar size, for the residual comparison)
TRAIN=${TRAIN:-"--preset ${PRESET:-tinystories-8m} --batch 64 --eval-batches 0 --ioi-prompts 1024 \
  --device cuda --compile --cuda-graphs --eval-every 50 --eval-log $EVALS --checkpoints end --json"}
mkdir -p "$WORK" "$OUT"
start=$(date +%s)
stamp() { echo "[$(( $(date +%s) - start )) s] $*"; }
export TORCHINDUCTOR_CACHE_DIR=$WORK/compile-cache
mkdir -p "$TORCHINDUCTOR_CACHE_DIR"
if [ -n "${COMPILE_CACHE:-}" ]; then
  tar xzf "$COMPILE_CACHE" -C "$TORCHINDUCTOR_CACHE_DIR" \
    && stamp "compile cache unpacked: $(du -sh "$TORCHINDUCTOR_CACHE_DIR" | cut -f1)"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if [ "${MPS:-0}" = 1 ]; then
  export CUDA_MPS_PIPE_DIRECTORY=$WORK/mps-pipe CUDA_MPS_LOG_DIRECTORY=$WORK/mps-log
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  nvidia-cuda-mps-control -d && stamp "MPS daemon started"
  # a client must be able to use it; else the runs go without (the daemon is stopped)
  if ! timeout 60 python3 -c "import torch; print(float(torch.ones(4, device='cuda').sum()))"; then
    echo quit | nvidia-cuda-mps-control
    unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
    MPS=0
    stamp "MPS refused its client: running without it"
  fi
fi
for NAMES in original resampled; do  # only the settings asked for
  case " $* " in *" $NAMES "*) ;; *) continue ;; esac
  $CLI lm prepare $DATA $(copies "$NAMES") --names "$NAMES" --data-dir "$DATA_ROOT/data-$NAMES" --json \
    > "$WORK/prep-$NAMES.json" 2> "$WORK/prep-$NAMES.err" &
done
wait
stamp "prepared"
LEFT=$(( DEADLINE - ($(date +%s) - start) ))
[ "$LEFT" -lt "$LIMIT" ] && LIMIT=$LEFT && stamp "grids stop in ${LIMIT} s (DEADLINE)"
[ "$LIMIT" -lt 1 ] && LIMIT=1
cat "$WORK"/prep-*.json
GROUP=0
while [ $# -ge 4 ]; do
  NAMES=$1 ARMS=$2 SEED=$3 SEEDS=$4
  shift 4
  GROUP=$((GROUP + 1))
  JOBS=$(( $(echo "$ARMS" | tr ',' '\n' | wc -l) * ((SEEDS + STACK - 1) / STACK) ))
  # a folder a group: two groups of one setting and first seed (other arms) must not share one
  G="$WORK/$NAMES-s$SEED-g$GROUP"
  timeout "$LIMIT" $CLI lm grid $DATA $(copies "$NAMES") $TRAIN --names "$NAMES" \
    --data-dir "$DATA_ROOT/data-$NAMES" \
    --stream "$ARMS" --seed "$SEED" --seeds "$SEEDS" --workers "$JOBS" --stack "$STACK" \
    $([ "$WARM" = 0 ] && echo --no-warm-compile) --out "$G" \
    > "$G.json" 2> "$G.err" &
done
wait
stamp "grids ended"
grep -h "^lm grid: compiled" "$WORK"/*.err
tail -n 3 "$WORK"/*.err
if [ "${MPS:-0}" = 1 ]; then echo quit | nvidia-cuda-mps-control; fi
(cd "$WORK" && find . -name metrics.jsonl -o -name config.json -o -name summary.json \
  -o -name ioi_vocab.json -o -name data_config.json -o -name train.json -o -name '*.err' \
  -o -name validation.json -o -name 'prep-*.json' -o -name '*-s*.json' -o -name 'tokenizer*.json' \
  | grep -v -e mps- -e compile-cache | tar czf "$OUT/runs.tar.gz" -C "$WORK" -T -)
tar czf "$OUT/compile-cache.tar.gz" -C "$TORCHINDUCTOR_CACHE_DIR" . \
  && stamp "compile cache packed: $(du -h "$OUT/compile-cache.tar.gz" | cut -f1)"
for f in "$WORK"/*/*/summary.json; do
  [ -f "$f" ] && python3 -c "import json,sys; s=json.load(open(sys.argv[1])); \
print(sys.argv[1].split('/')[-3:-1], s['step'], round(s['tokens_per_s']), round(s['wall_s']))" "$f"
done
stamp "packed"

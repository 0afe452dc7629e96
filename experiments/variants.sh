#!/usr/bin/env bash
# The cross-layer value variants on one GPU: the commands behind results/icl-grid's gated and
# shared rows and BENCHMARKS.md's variant rows, and the smeared-key control's toy grid.
#   experiments/variants.sh toy OUT      value-gated, value-shared x 10 seeds on the toy task
#   experiments/variants.sh smear OUT    key-smear, key-smear-sum x 10 seeds on the toy task,
#                                        merged with results/icl-grid (paired by seed), reported
#   experiments/variants.sh speed8m OUT  step time of every variant at 8M (GPT-2 and modern block)
#   experiments/variants.sh speed124m OUT   the same at 124M (GPT-2 block)
#   experiments/variants.sh speedmodern124m OUT   the modern block at 124M, with the value stream
#   experiments/variants.sh residuals OUT   step time, peak memory and parameters of every
#                                        residual method against none at 8M and 124M (both
#                                        blocks), the baseline first and last; PRESETS="..."
#                                        times only those (one file each), RESIDUALS="..." only
#                                        those arms (a comma list; put none first)
set -u -o pipefail
PHASE=$1 OUT=$2
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:-$PWD/src}
mkdir -p "$OUT"
ALL=none,value,value-learned,value-first,value-first-gated,value-shared,value-embed,none  # none twice: the spread
case $PHASE in
toy)
  python3 -m attnstreams.cli icl grid --variants value-gated,value-shared --seeds 10 \
    --device cuda --compile --precision tf32 --out "$OUT/icl-variants" > "$OUT/icl-variants.log" 2>&1
  echo "toy grid exit $?"; tail -2 "$OUT/icl-variants.log"
  ;;
smear)
  set -e
  python3 -m attnstreams.cli icl grid --variants key-smear,key-smear-sum --seeds 10 \
    --device cuda --compile --precision tf32 --out "$OUT/icl-smear" > "$OUT/icl-smear.log" 2>&1
  tail -2 "$OUT/icl-smear.log"
  python3 -m attnstreams.cli icl merge results/icl-grid "$OUT/icl-smear" --out "$OUT/icl-grid-smear"
  python3 -m attnstreams.cli icl report "$OUT/icl-grid-smear"
  ;;
speed8m)
  set -e
  python3 benchmarks/lm_throughput.py --device cuda --presets tinystories-8m --streams $ALL \
    --modes compile+cudagraphs --steps 50 --json "$OUT/speed-8m.json"
  python3 benchmarks/lm_throughput.py --device cuda --presets modern-8m \
    --streams none,value,value-first-gated,none --modes compile+cudagraphs --steps 50 \
    --json "$OUT/speed-modern-8m.json"
  ;;
speed124m)
  set -e
  python3 benchmarks/lm_throughput.py --device cuda --presets gpt2-124m \
    --streams none,value,value-first-gated,value-shared,value-embed,none --modes compile \
    --steps 30 --json "$OUT/speed-124m.json"
  ;;
speedmodern124m)
  set -e
  python3 benchmarks/lm_throughput.py --device cuda --presets modern-124m \
    --streams none,value,none --modes compile --steps 30 --json "$OUT/speed-modern-124m.json"
  ;;
residuals)
  set -e
  RES=${RESIDUALS:-none,value,denseformer,hc,dhc,mhc,attnres,attnres-b2,mudd,muddvr,none}
  # PRESETS (default all four): each its own file, so that a job can take a part
  for P in ${PRESETS:-tinystories-8m modern-8m gpt2-124m modern-124m}; do
    # 8M: the vocabulary of Experiment 2's runs, whose `lm report --cost` reads these rows
    # --jobs: the rows compile side by side and are timed one at a time; a 124M row at 64 x 1024
    # needs ~40-50 GB, so 124M is timed at 16 x 1024, 3 rows at once (each keeps its memory
    # while the others are timed)
    case $P in
      *8m) MODE=compile+cudagraphs STEPS=50 EXTRA="--vocab 8192 --jobs 11" ;;
      *) MODE=compile STEPS=20 EXTRA="--batch 16 --jobs 3" ;;
    esac
    python3 benchmarks/lm_throughput.py --device cuda --presets "$P" --streams $RES \
      --modes $MODE --steps $STEPS $EXTRA --json "$OUT/residuals-$P.json" || echo "$P: exit $?"
  done
  ;;
*)
  echo "unknown phase $PHASE" >&2
  exit 2
  ;;
esac
nvidia-smi --query-gpu=name --format=csv,noheader

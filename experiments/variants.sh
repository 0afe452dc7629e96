#!/usr/bin/env bash
# The cross-layer value variants on one GPU: the commands behind results/icl-grid's gated and
# shared rows and BENCHMARKS.md's variant rows.
#   experiments/variants.sh toy OUT      value-gated, value-shared x 10 seeds on the toy task
#   experiments/variants.sh speed8m OUT  step time of every variant at 8M (GPT-2 and modern block)
#   experiments/variants.sh speed124m OUT   the same at 124M (GPT-2 block)
#   experiments/variants.sh speedmodern124m OUT   the modern block at 124M, with the value stream
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
esac
nvidia-smi --query-gpu=name --format=csv,noheader

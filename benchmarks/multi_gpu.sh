#!/usr/bin/env bash
# The multi-GPU figures of BENCHMARKS.md (issue 7), on one host: DDP weak scaling of gpt2-124m
# and its modern-block twin (eager and compiled, with and without the value stream) on 1, 2, 4,
# 8 GPUs up to GPUS, FSDP on gpt-1b and modern-1b, and one `lm train
# --parallel fsdp` stopped, resumed and its checkpoint evaluated in a single process.
#
#   benchmarks/multi_gpu.sh OUTDIR [GPUS]   # GPUS (1, 2, 4 or 8): default, all nvidia-smi lists
#
# Writes OUTDIR/rows.jsonl (one ddp_scaling.py row a run), OUTDIR/log.txt (the runs' logs),
# OUTDIR/step.out (the last row's output) and OUTDIR/lm/ (the lm train run). The value-stream
# rows and the last FSDP rows run on all GPUS.
# Environment: PYTHON; SMALL, BIG, LM, MODERN_SMALL, MODERN_BIG (presets; the modern ones
# empty: no modern rows), DEVICE, BLOCK (the 1B context), LM_TOKENS,
# LM_VOCAB and LM_BATCH (the lm train's corpus, BPE size and batch), LM_RUN=0 (skip the lm
# train), COMPILED=0 (skip the compiled rows), STEP_TIMEOUT.
# tests/test_benchmarks.py shrinks it to a CPU smoke run: SMALL=tiny BIG=tiny ... OUTDIR 1.
set -u -o pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
out=${1:?usage: multi_gpu.sh OUTDIR [GPUS]}
gpus=${2:-$(nvidia-smi -L 2>/dev/null | wc -l)}
[ "$gpus" -ge 1 ] 2>/dev/null || { echo "multi_gpu.sh: no GPUs found; pass GPUS" >&2; exit 2; }
if [ -e "$out/rows.jsonl" ]; then
    echo "multi_gpu.sh: $out holds a run; choose another OUTDIR" >&2
    exit 2
fi
py=${PYTHON:-python} device=${DEVICE:-cuda}
small=(--preset "${SMALL:-gpt2-124m}" --steps 20)
big=(--preset "${BIG:-gpt-1b}" --batch 4 --block "${BLOCK:-2048}" --steps 10)
modern_small=${MODERN_SMALL-modern-124m} modern_big=${MODERN_BIG-modern-1b}
small_m=(--preset "$modern_small" --steps 20)
here=$(dirname "$0")
mkdir -p "$out"
counts=$(for g in 1 2 4 8; do [ "$g" -le "$gpus" ] && echo "$g"; done)
failures=0

run() {  # run GPUS ARGS...: torchrun, one process a GPU, stopped after STEP_TIMEOUT seconds
    local g=$1
    shift
    timeout "${STEP_TIMEOUT:-300}" \
        "$py" -m torch.distributed.run --standalone --nproc_per_node "$g" "$@"
}

step() {  # step NAME GPUS ARGS...: one ddp_scaling.py run; its JSON row goes to rows.jsonl
    local name=$1 g=$2
    shift 2
    echo "== $name on $g ($(date -u +%T))" | tee -a "$out/log.txt"
    run "$g" "$here/ddp_scaling.py" --device "$device" "$@" >"$out/step.out" 2>>"$out/log.txt"
    local rc=$?
    if [ $rc -eq 0 ]; then
        tail -1 "$out/step.out" | tee -a "$out/rows.jsonl"
    else
        echo "   failed: rc=$rc (see $out/log.txt)"
        failures=$((failures + 1))
    fi
}

for g in $counts; do step "small, eager DDP" "$g" "${small[@]}" --batch 16; done
step "big, one device" 1 "${big[@]}"
for g in $counts; do [ "$g" -gt 1 ] && step "big, FSDP" "$g" "${big[@]}" --parallel fsdp; done
step "big, FSDP, value stream" "$gpus" "${big[@]}" --parallel fsdp --stream value
if [ -n "$modern_small" ]; then
    for g in $counts; do step "modern small, eager DDP" "$g" "${small_m[@]}" --batch 16; done
    step "modern small, eager DDP, value" "$gpus" "${small_m[@]}" --batch 16 --stream value
fi
if [ -n "$modern_big" ]; then
    big_m=(--preset "$modern_big" --batch 4 --block "${BLOCK:-2048}" --steps 10 --parallel fsdp)
    step "modern big, FSDP" "$gpus" "${big_m[@]}"
    step "modern big, FSDP, value stream" "$gpus" "${big_m[@]}" --stream value
fi

# Training for real under FSDP on every GPU: stop half way, resume, evaluate on the CPU.
lm=(-m attnstreams.cli lm train --preset "${LM:-tinystories-8m}" --data generated
    --vocab-size "${LM_VOCAB:-4096}" --train-tokens "${LM_TOKENS:-3000000}" --val-tokens 100000 --steps 60
    --batch "${LM_BATCH:-64}" --eval-every 20 --eval-batches 4 --ioi-prompts 32
    --parallel fsdp --device "$device" --out "$out/lm")
if [ "${LM_RUN:-1}" != 0 ]; then
    echo "== lm train FSDP on $gpus: stop at 30, resume to 60 ($(date -u +%T))" | tee -a "$out/log.txt"
    run "$gpus" "${lm[@]}" --stop-after 30 >>"$out/log.txt" 2>&1 &&
        run "$gpus" "${lm[@]}" --resume --json >>"$out/log.txt" 2>&1 &&
        timeout "${STEP_TIMEOUT:-300}" "$py" -m attnstreams.cli lm eval \
            "$out/lm/checkpoint.safetensors" --device cpu --ioi-prompts 64 --json 2>&1 |
        tee -a "$out/log.txt" | tail -1
    rc=$?
    echo "   lm rc=$rc"
    [ $rc -eq 0 ] || failures=$((failures + 1))
fi

if [ "${COMPILED:-1}" != 0 ]; then
    for g in $counts; do step "small, compiled DDP" "$g" "${small[@]}" --batch 32 --compile; done
    step "small, compiled DDP, value" "$gpus" "${small[@]}" --batch 32 --compile --stream value
    if [ -n "$modern_small" ]; then
        for g in $counts; do step "modern small, compiled DDP" "$g" "${small_m[@]}" --batch 32 --compile; done
        step "modern small, compiled DDP, value" "$gpus" "${small_m[@]}" --batch 32 --compile --stream value
    fi
    if [ "$gpus" -gt 1 ]; then  # the DDP bucket size that is fastest on all GPUS
        for mb in 25 100 400 1000; do
            step "small, compiled DDP, $mb MB buckets" "$gpus" "${small[@]}" --batch 32 --compile --bucket-mb "$mb"
        done
    fi
    step "big, one device, compiled" 1 "${big[@]}" --compile
    step "big, FSDP, compiled" "$gpus" "${big[@]}" --parallel fsdp --compile
fi
echo "$failures failed"
[ "$failures" -eq 0 ]

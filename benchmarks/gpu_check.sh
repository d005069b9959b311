#!/usr/bin/env bash
# The one GPU check (<= 8 minutes on one GPU): kernel benchmarks, a bf16 correctness check of the
# kernels, and a few hundred training steps of one paper-scale run per task, each timed against the
# task's own estimate. Writes benchmarks/results/gpu-*.json (commit them).
#
#   benchmarks/gpu_check.sh              # on the GPU box
#   benchmarks/gpu_check.sh --dry-run    # anywhere (CPU): the same sections on tiny shapes, the
#                                        # kernels under TRITON_INTERPRET=1; writes to $GPU_CHECK_OUT
#                                        # (default: a temporary folder), never to benchmarks/results
#
# Every section runs under its own time limit (the limits add up to 7 min 55 s), and one failing
# section never stops the others; gpu-check-summary.json lists each section's exit status and time.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
if [ "$DRY" = 1 ]; then
  OUT=${GPU_CHECK_OUT:-$(mktemp -d)}
  export TRITON_INTERPRET=1 CUDA_VISIBLE_DEVICES=""
else
  OUT=benchmarks/results
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
    echo "error: no CUDA device; on a CPU run benchmarks/gpu_check.sh --dry-run" >&2; exit 2; }
fi
mkdir -p "$OUT"
SUMMARY=()
START=$(date +%s)

section() {  # section NAME LIMIT_S CMD...: run CMD under a time limit, record its status and time
  local name=$1 limit=$2; shift 2
  [ "$DRY" = 1 ] && limit=$(( limit * 2 ))  # a loaded CPU runs the tiny shapes slower than a GPU the real ones
  local t0=$(date +%s)
  echo "== $name (limit ${limit}s): $*"
  timeout --kill-after=10 "$limit" "$@"
  local rc=$?
  SUMMARY+=("{\"section\": \"$name\", \"rc\": $rc, \"seconds\": $(( $(date +%s) - t0 )), \"limit_s\": $limit}")
  [ $rc = 0 ] || echo "!! $name failed (exit $rc)" >&2
}

# 1. kernels: timing against SDPA and the materialising reference; correctness in bf16 and fp32 first
if [ "$DRY" = 1 ]; then
  section kernel-correctness 60 "$PY" benchmarks/kernel_check.py --dry-run --out "$OUT/gpu-kernel_check.json"
else
  section kernel-correctness 45 "$PY" benchmarks/kernel_check.py --out "$OUT/gpu-kernel_check.json"
  section attention_entropy 100 "$PY" benchmarks/attention_entropy.py --lengths 1024 2048 4096 8192 --rep 40 \
    --out "$OUT/gpu-attention_entropy.json"
fi
# kv_lookup (DKVB's top-k nearest keys, C 256 x N 4,096 x d_k 14): Triton against cdist + topk and the
# reference, its own correctness check first; the bf16 check is in kernel-correctness above
if [ "$DRY" = 1 ]; then
  section kv_lookup 60 "$PY" benchmarks/kv_lookup.py --dry-run --out "$OUT/gpu-kv_lookup.json"
else
  section kv_lookup 40 "$PY" benchmarks/kv_lookup.py --out "$OUT/gpu-kv_lookup.json"
fi

# 2. one paper-scale run per task: real sizes, the task's training step, a few hundred steps
STEPS_ARGS=()
[ "$DRY" = 1 ] && STEPS_ARGS=(--dry-run)
section paper-infinite_compute 90 "$PY" benchmarks/paper_steps.py --task infinite_compute --steps 100 \
  "${STEPS_ARGS[@]}" --out "$OUT/gpu-paper-infinite_compute.json"
section paper-entropy_attention 60 "$PY" benchmarks/paper_steps.py --task entropy_attention --steps 200 \
  "${STEPS_ARGS[@]}" --out "$OUT/gpu-paper-entropy_attention.json"
section paper-self_tuning_networks 35 "$PY" benchmarks/paper_steps.py --task self_tuning_networks --steps 200 \
  "${STEPS_ARGS[@]}" --out "$OUT/gpu-paper-self_tuning_networks.json"
section paper-noisy_labels 35 "$PY" benchmarks/paper_steps.py --task noisy_labels --steps 300 \
  "${STEPS_ARGS[@]}" --out "$OUT/gpu-paper-noisy_labels.json"
section paper-dkvb 30 "$PY" benchmarks/paper_steps.py --task dkvb --steps 300 \
  "${STEPS_ARGS[@]}" --out "$OUT/gpu-paper-dkvb.json"
section paper-cmim 40 "$PY" benchmarks/paper_steps.py --task cmim --steps 100 \
  "${STEPS_ARGS[@]}" --out "$OUT/gpu-paper-cmim.json"

# 3. the summary
{
  echo "{\"dry_run\": $([ "$DRY" = 1 ] && echo true || echo false), \"seconds\": $(( $(date +%s) - START )),"
  echo " \"sections\": ["
  for i in "${!SUMMARY[@]}"; do
    sep=","; [ "$i" = $(( ${#SUMMARY[@]} - 1 )) ] && sep=""
    echo "  ${SUMMARY[$i]}$sep"
  done
  echo " ]}"
} > "$OUT/gpu-check-summary.json"
echo "wrote $OUT/gpu-*.json"
failed=$(grep -c '"rc": [^0]' "$OUT/gpu-check-summary.json")
[ "$failed" = 0 ]

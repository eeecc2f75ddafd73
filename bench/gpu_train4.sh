#!/usr/bin/env bash
# Session-4 training calls (nvidia-h100-x1); run folders in the git-ignored outputs/, weights back through $OUT.
#   PHASE=geo : geometry-only phase (--loss geometry, 2 views, batch 32) from the shipped weights; the step count is
#               set from a 2-step throughput probe so that the cosine schedule ends inside the call. REUSE=K trains
#               K optimizer steps per rendered batch (--batch-reuse; inputs swapped on odd reuses): cap DATA_RATE
#               at K x the data rate.
#   PHASE=full: full LSM loss from the geometry run's weights (carry outputs/geo_weights), then gsplat pass
#               variants and batched-camera render throughput.
set -uo pipefail
source bench/gpu_env.sh
LIMIT=${LIMIT:-560}
probe() {  # probe PRECISION LOSS VIEWS BATCH -> pairs/s of the step alone
  python3 bench/bench_train.py --device cuda --presets small --size 256 --batch "$4" --precision "$1" --loss "$2" \
    --views "$3" --steps 3 --warmup 2 2>&1 | grep '^{' | tee -a "$OUT/results.jsonl" |
    python3 -c "import json,sys; print(json.loads(sys.stdin.readline())['pairs_per_s'])"
}
train() {  # train OUT_DIR BATCH PAIRS_PER_S [args...]
  local out=$1 bs=$2 rate=$3; shift 3
  local left=$(( LIMIT - $(elapsed) - 45 ))
  local steps; steps=$(python3 -c "print(max(20, int($rate * 0.85 * $left / $bs)))")
  echo "training $steps steps of $bs in <= $left s (probe $rate pairs/s)"
  openlsm train --config small --resolution 256 --batch-size "$bs" --steps "$steps" --out "$out" \
    --max-minutes "$(python3 -c "print(round($left / 60, 2))")" --val-every 0 --ckpt-every 0 --log-every 25 \
    --export-weights --overwrite "$@" 2>&1 | grep -v Warning | tail -n 4
  cp "$out"/metrics.jsonl "$OUT/"; cp -r "$out"/weights "$OUT/weights"
}
if [ "${PHASE:-geo}" = geo ]; then
  # call 1 (probe 321 pairs/s fp32, 253 bf16) ran data-bound at 100-123 pairs/s with 12 workers: DATA_RATE caps
  # the probe so that the schedule fits the call
  R=$(probe fp32 geometry 2 "${BS:-32}"); R=$(python3 -c "print(min($R, ${DATA_RATE:-1e9}))")
  train outputs/runs/geo "${BS:-32}" "$R" --loss geometry --views 2 --lr "${LR:-3e-4}" --warmup-steps "${WARMUP:-50}" \
    --precision fp32 --init "${INIT:-src/openlsm/weights/lsm_small}" --data-workers "${WORKERS:-12}" \
    --batch-reuse "${REUSE:-1}"
else
  R=$(probe fp32 paper 3 8)
  [ "${RENDER:-1}" = 1 ] && LIMIT=$(( LIMIT - 40 ))  # leaves time for the render variants below
  train outputs/runs/full 8 "$R" --loss paper --views 3 --lr "${LR:-1e-4}" --warmup-steps "${WARMUP:-20}" \
    --precision fp32 --init "${INIT:-outputs/geo_weights}" --data-workers 12
  [ "${RENDER:-1}" = 1 ] || { echo "done at $(elapsed) s"; exit 0; }
  for fp in 64 32; do
    python3 bench/bench_render.py --device cuda --backend gsplat --sizes 256 --repeat 100 --feature-pass $fp 2>&1 | grep '^{' >> "$OUT/results.jsonl"
  done
  python3 bench/bench_render.py --device cuda --backend gsplat --sizes 256 512 --repeat 30 --cameras 8 2>&1 | grep '^{' >> "$OUT/results.jsonl"
  tail -n 3 "$OUT/results.jsonl"
fi
echo "done at $(elapsed) s"; ls -la "$OUT" "$OUT/weights"

#!/usr/bin/env bash
# Device calls that train the shipped `small` model (session 3 plan; run folders live in the git-ignored outputs/).
#   PHASE=1: training throughput (fp32 and bf16, before any other GPU work), then concurrently: the semantic
#            extractor goes on from outputs/small_extractor.safetensors (class-balanced) -> outputs/ext2, and LSM
#            run A trains with the old extractor as teacher. Both come back through $OUT.
#   PHASE=2: LSM run B = run A's weights (outputs/run_a_weights) + the new extractor (outputs/ext2.safetensors),
#            STEPS long; a slice of SLICE_MIN minutes.
#   PHASE=3: the next slice of run B (resumed when the machine stayed warm, else restarted from outputs/run_b_weights).
# Carry: .whl (wheels + text table) and the outputs/ files named above.
set -uo pipefail
source bench/gpu_env.sh
BS=${BS:-8}; LIMIT=${LIMIT:-590}
minutes_left() { python3 -c "print(round(($LIMIT - $(elapsed) - ${1:-0}) / 60, 2))"; }
train() {  # train OUT_DIR [args...]: a slice that ends before the call's limit; weights and metrics to $OUT
  local out=$1; shift
  openlsm train --config small --resolution 256 --batch-size $BS --lr 3e-4 --out "$out" --max-minutes "$(minutes_left 25)" \
    --val-every 400 --ckpt-every 200 --log-every 25 --export-weights --precision "$(cat outputs/precision.txt)" "$@" \
    2>&1 | grep -v Warning | tail -n 6
  local name; name=$(basename "$out"); mkdir -p "$OUT/$name"
  cp "$out"/metrics.jsonl "$out"/config.yaml "$OUT/$name/"; cp -r "$out"/weights "$OUT/$name/"
}
if [ "${PHASE:-1}" = 1 ]; then
  for p in fp32 bf16; do
    python3 bench/bench_train.py --device cuda --presets small --size 256 --batch $BS --precision $p --steps 4 \
      --warmup 2 2>&1 | grep '^{' | tee -a "$OUT/results.jsonl"
  done
  python3 - "$OUT/results.jsonl" > outputs/precision.txt <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if '"bench": "train"' in line]
print(max(rows, key=lambda r: r.get("pairs_per_s_with_data", 0))["precision"])
EOF
  RATE=$(python3 -c "import json;print(max(json.loads(l).get('pairs_per_s_with_data',0) for l in open('$OUT/results.jsonl') if 'train' in l))")
  echo "precision $(cat outputs/precision.txt), $RATE pairs/s at $(elapsed) s"
  ( openlsm train-semantics --init outputs/small_extractor.safetensors --class-balance 0.5 --lr 1e-3 \
      --steps ${SEM_STEPS:-600} --log-every 100 --text-encoder table --text-table .whl/text_table.safetensors \
      --resolution 256 --views 4 --batch-size 6 --device cuda --test-scenes 100 --out outputs/ext2.safetensors \
      > "$OUT/semantics.log" 2>&1; cp outputs/ext2.safetensors "$OUT/" ) &
  STEPS=$(python3 -c "print(int($RATE * 0.6 * $LIMIT / $BS))")
  train outputs/runs/run_a --steps "$STEPS" --warmup-steps 25 \
    --semantic-weights outputs/small_extractor.safetensors --overwrite
  wait; tail -n 3 "$OUT/semantics.log"
elif [ "$PHASE" = 2 ]; then
  train outputs/runs/run_b --steps "${STEPS:?}" --warmup-steps 20 --init "${INIT:-outputs/run_a_weights}" \
    --semantic-weights outputs/ext2.safetensors --overwrite
else
  if [ -f outputs/runs/run_b/checkpoint.pt ]; then train outputs/runs/run_b --steps "${STEPS:?}" --warmup-steps 20 --resume
  else train outputs/runs/run_c --steps "${STEPS:?}" --warmup-steps 5 --init outputs/run_b_weights; fi
fi
echo "done at $(elapsed) s"; ls -la "$OUT"

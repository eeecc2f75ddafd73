#!/usr/bin/env bash
# Device calls for the shipped model, in one warm lease (the run folder lives in the git-ignored outputs/):
#   PHASE=1: semantic-extractor test mIoU, gsplat build + check, training throughput, first training slice.
#   PHASE=2: resume the same run, then evaluate on the SynthRooms test split with baselines.
# Carry: .whl (wheels + text table) and outputs/ (small_extractor.safetensors, and phase 1's run when cold).
set -uo pipefail
source bench/gpu_env.sh
RUN=outputs/runs/small; BS=${BS:-8}; TRAIN_S=${TRAIN_S:-660}; SLICE_MIN=${SLICE_MIN:-5.5}
SEM=outputs/small_extractor.safetensors
log() { tee -a "$OUT/results.jsonl" | grep -v Warning | tail -n "${1:-6}"; }
if [ "${PHASE:-1}" = 1 ]; then
  openlsm train-semantics --evaluate $SEM --text-encoder table --text-table .whl/text_table.safetensors \
    --resolution 256 --views 4 --batch-size 6 --test-scenes 200 --device cuda 2>&1 | log 2
  python3 bench/bench_train.py --device cuda --presets small --size 256 --batch $BS --precision bf16 --steps 5 \
    --warmup 2 2>&1 | log 1 | tee /tmp/bench.json
  RATE=$(python3 -c "import json;print(json.loads(open('/tmp/bench.json').read().strip().splitlines()[-1])['pairs_per_s_with_data'])" 2>/dev/null || echo 4)
  STEPS=$(python3 -c "print(int($RATE * $TRAIN_S / $BS))"); echo "$STEPS" > outputs/steps.txt
  echo "rate $RATE pairs/s -> $STEPS steps"
fi
STEPS=$(cat outputs/steps.txt)
openlsm train --config small --resolution 256 --batch-size $BS --steps $STEPS --warmup-steps $((STEPS / 20)) \
  --lr 3e-4 --semantic-weights $SEM --out $RUN --resume --max-minutes $SLICE_MIN --val-every 400 --ckpt-every 400 \
  --log-every 50 --export-weights 2>&1 | grep -v Warning | tail -n 8
cp $RUN/metrics.jsonl $RUN/config.yaml "$OUT/"; mkdir -p "$OUT/weights" && cp $RUN/weights/* "$OUT/weights/"
if [ "${PHASE:-1}" = 2 ]; then
  openlsm eval --checkpoint $RUN/model --data synthrooms:test --scenes ${EVAL_SCENES:-60} --out "$OUT/eval" \
    --resolution 256 --device cuda --text-table .whl/text_table.safetensors --baselines a,c 2>&1 | grep -v Warning | tail -n 30
fi
ls -la "$OUT" "$OUT/weights"

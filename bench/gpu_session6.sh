#!/usr/bin/env bash
# Session-6 device calls; results and weights come back through $OUT.
#   PART=sem: MINUTES more of small-extractor training from INIT (carried from outputs/), BATCH_REUSE optimizer
#             steps per rendered batch on random crops (CROP), then the 200-room test split; the weights come back
#             as $OUT/NAME.safetensors.
#   PART=lsm: the full loss from INIT (default: the shipped LSM) with the frozen extractor SEM as teacher, for the
#             rest of the call (LIMIT s), optional FREEZE prefixes; exports the weights.
set -uo pipefail
source bench/gpu_env.sh
if [ "${PART:-sem}" = sem ]; then
  NAME=${NAME:-sem8}
  openlsm train-semantics --out "outputs/$NAME.safetensors" --init "${INIT:-outputs/sem7.safetensors}" \
    --resolution 256 --views 4 --batch-size "${BS:-16}" --steps 1000000 --max-minutes "${MINUTES:-7}" \
    --lr "${LR:-1e-3}" --class-balance 0.5 "${TEXT_TABLE_FLAGS[@]}" --data-workers "${WORKERS:-15}" --device cuda \
    --batch-reuse "${BATCH_REUSE:-3}" --crop-scale "${CROP:-0.6}" --align-weight "${ALIGN:-0}" \
    --log-every 500 --test-scenes 200 2>&1 | grep -v Warning | tee "$OUT/$NAME.log" | tail -n 4
  cp "outputs/$NAME.safetensors" "$OUT/"
else
  left=$(( ${LIMIT:-570} - $(elapsed) - 40 ))
  openlsm train --config small --resolution 256 --batch-size 8 --out outputs/runs/full \
    --max-minutes "$(python3 -c "print(round($left / 60, 2))")" --val-every 0 --ckpt-every 0 --log-every 25 \
    --export-weights --overwrite --precision fp32 --data-workers 14 --loss paper --views 3 --lr "${LR:-1e-4}" \
    --warmup-steps 20 --steps "$(python3 -c "print(int(${FULL_RATE:-6.0} * $left / 8))")" \
    --init "${INIT:-src/openlsm/weights/lsm_small}" --semantic-weights "${SEM:-outputs/sem8.safetensors}" \
    ${FREEZE:+--freeze $FREEZE} 2>&1 | grep -v Warning | tail -n 4
  cp outputs/runs/full/metrics.jsonl "$OUT/full_metrics.jsonl"; cp -r outputs/runs/full/weights "$OUT/weights"
fi
echo "done at $(elapsed) s"; ls -la "$OUT"

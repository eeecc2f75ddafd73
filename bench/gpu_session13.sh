#!/usr/bin/env bash
# Session-13 device calls; results and weights come back through $OUT.
#   PART=sem: MINUTES more of small-extractor training from INIT (default: the extractor inside the shipped LSM, the
#             session-6 `sem11`), LR, the session-6 recipe (batch 16 x 4 views, 3 optimizer steps per rendered
#             batch on random crops, class-balanced loss), then the 200-room test split; the weights come back as
#             $OUT/NAME.safetensors.
set -uo pipefail
source bench/gpu_env.sh
python3 -c "import openlsm.cli.main, tyro, rich, safetensors, imageio, PIL, yaml; print('imports ok')" 2>&1 | tail -n 2
if [ "${PART:-sem}" = sem ]; then
  NAME=${NAME:-sem12}
  openlsm train-semantics --out "outputs/$NAME.safetensors" --init "${INIT:-src/openlsm/weights/lsm_small}" \
    --resolution 256 --views 4 --batch-size 16 --steps 1000000 --max-minutes "${MINUTES:-7}" \
    --lr "${LR:-5e-4}" --class-balance 0.5 "${TEXT_TABLE_FLAGS[@]}" --data-workers 15 --device cuda \
    --batch-reuse 3 --crop-scale 0.6 --log-every 500 --test-scenes 200 2>&1 | grep -v Warning |
    tee "$OUT/$NAME.log" | tail -n 4
  cp "outputs/$NAME.safetensors" "$OUT/"
fi
echo "done at $(elapsed) s"; ls -la "$OUT"

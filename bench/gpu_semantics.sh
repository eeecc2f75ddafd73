#!/usr/bin/env bash
# Device call: train the small semantic extractor on SynthRooms (CUDA), fitting the steps into BUDGET seconds,
# then evaluate mIoU on the test split with training names and held-out synonyms. Needs $TABLE (text table).
set -uo pipefail
source bench/gpu_env.sh
RES=${RES:-256}; VIEWS=${VIEWS:-4}; BS=${BS:-6}; BUDGET=${BUDGET:-360}
common="--text-encoder table --text-table $TABLE --resolution $RES --views $VIEWS --batch-size $BS --device cuda"
t0=$(date +%s.%N)
openlsm train-semantics $common --steps 30 --log-every 10 --val-batches 1 --out /tmp/probe.safetensors | tail -2
t1=$(date +%s.%N)
STEPS=$(python3 -c "print(max(100, int(($BUDGET - 20) / (($t1 - $t0 - 12) / 30))))")
echo "probe: $(python3 -c "print(round($t1 - $t0, 1))") s for 30 steps -> $STEPS steps"
openlsm train-semantics $common --steps $STEPS --log-every 200 --val-batches 8 --test-scenes ${TEST:-200} \
  --out "$OUT/small_extractor.safetensors" | tee "$OUT/semantics.log" | tail -4

#!/usr/bin/env bash
# Session-5 device calls; results and weights come back through $OUT.
#   PART=sem: the small extractor, long run with SynthRooms host parts in worker processes, from INIT (the shipped
#             extractor, carried as outputs/ext2.safetensors), then both on the same 200 test rooms.
#   PART=perf: CUDA-graph tests and LSM forward timings (eager vs graphs), small reconstruct per stage, the torch
#             rasteriser on the GPU.
#   PART=eval: the shipped model against per-scene 3DGS (baseline a) and the 2D extractor (c) on 4 test rooms on the
#             GPU, then MINUTES more of extractor training from SEM (evidence for issue 5; not shipped).
#   PART=lsm: geometry-only phase for GEO_S seconds from the shipped LSM, then the full loss with the new frozen
#             extractor (--semantic-weights SEM) for the rest of the call; exports the weights.
set -uo pipefail
source bench/gpu_env.sh
if [ "${PART:-sem}" = perf ]; then
  python3 -m pytest -q -p no:cacheprovider tests/models/test_cuda_graphs.py 2>&1 | tail -n 3 | tee "$OUT/tests.txt"
  for args in "--presets paper --dtype bf16" "--presets paper --dtype fp32" "--presets small --dtype fp32"; do
    for g in "" "--cuda-graphs"; do
      python3 bench/bench_lsm.py --device cuda $args --iters 10 $g 2>&1 | grep '^{' | tee -a "$OUT/results.jsonl"
    done
  done
  python3 bench/bench_lsm.py --device cuda --presets paper --dtype bf16 --iters 3 --cuda-graphs --profile \
    > "$OUT/lsm_graphs_profile.txt" 2>&1
  echo "reconstruct at $(elapsed) s"
  python3 bench/bench_reconstruct.py --device cuda --checkpoint src/openlsm/weights/lsm_small --repeat 3 \
    --video-frames 0 2>&1 | grep '^{' | tee -a "$OUT/results.jsonl"
  python3 bench/bench_render.py --device cuda --backend torch --sizes 256 512 --repeat 10 --backward 2>&1 |
    grep '^{' | tee -a "$OUT/results.jsonl"
elif [ "${PART:-sem}" = eval ]; then
  openlsm eval --checkpoint src/openlsm/weights/lsm_small --data synthrooms:test --scenes "${SCENES:-4}" \
    --resolution 256 --device cuda "${TEXT_TABLE_FLAGS[@]:2}" --baselines a,c --render-repeats 5 --out outputs/eval_gpu \
    2>&1 | grep -v Warning | tail -n 12
  cp outputs/eval_gpu/metrics.json "$OUT/eval_gpu.json"
  echo "extractor at $(elapsed) s"
  openlsm train-semantics --out outputs/sem6.safetensors --init "${SEM:-outputs/sem5.safetensors}" \
    --resolution 256 --views 4 --batch-size "${BS:-24}" --steps 1000000 --max-minutes "${MINUTES:-4}" \
    --lr "${LR:-1e-3}" --class-balance 0.5 "${TEXT_TABLE_FLAGS[@]}" --data-workers 15 --device cuda \
    --log-every 500 --test-scenes 200 2>&1 | grep -v Warning | tee "$OUT/sem6.log" | tail -n 3
  cp outputs/sem6.safetensors "$OUT/"
elif [ "${PART:-sem}" = sem ]; then
  openlsm train-semantics --out outputs/sem5.safetensors --init "${INIT:-outputs/ext2.safetensors}" \
    --resolution 256 --views 4 --batch-size "${BS:-16}" --steps 1000000 --max-minutes "${MINUTES:-7.2}" \
    --lr "${LR:-2e-3}" --class-balance 0.5 "${TEXT_TABLE_FLAGS[@]}" --data-workers "${WORKERS:-15}" --device cuda \
    --log-every 500 --test-scenes 200 2>&1 | grep -v Warning | tee "$OUT/sem5.log" | tail -n 8
  cp outputs/sem5.safetensors "$OUT/"
  echo "old extractor at $(elapsed) s"
  openlsm train-semantics --evaluate "${INIT:-outputs/ext2.safetensors}" --resolution 256 --views 4 --batch-size 16 \
    "${TEXT_TABLE_FLAGS[@]}" --device cuda --test-scenes 200 2>&1 | grep '^{' | tee "$OUT/old_extractor.json"
else
  train() {  # train OUT_DIR SECONDS BATCH [args incl. --steps]; stops by --max-minutes
    local out=$1 secs=$2 bs=$3; shift 3
    echo "training $out for $secs s at $(elapsed) s"
    openlsm train --config small --resolution 256 --batch-size "$bs" --out "$out" \
      --max-minutes "$(python3 -c "print(round($secs / 60, 2))")" --val-every 0 --ckpt-every 0 --log-every 25 \
      --export-weights --overwrite --precision fp32 --data-workers 14 "$@" 2>&1 | grep -v Warning | tail -n 4
  }
  LIMIT=${LIMIT:-570}
  if [ "${GEO_S:-0}" -gt 0 ]; then
    train outputs/runs/geo "$GEO_S" 32 --loss geometry --views 2 --lr "${GEO_LR:-2e-4}" --warmup-steps 20 \
      --steps "$(python3 -c "print(int(${GEO_RATE:-110} * $GEO_S / 32))")" --init "${INIT:-src/openlsm/weights/lsm_small}"
    cp outputs/runs/geo/metrics.jsonl "$OUT/geo_metrics.jsonl"; INIT=outputs/runs/geo/weights
  fi
  left=$(( LIMIT - $(elapsed) - 40 ))
  train outputs/runs/full "$left" 8 --loss paper --views 3 --lr "${LR:-1e-4}" --warmup-steps 20 \
    --steps "$(python3 -c "print(int(${FULL_RATE:-6.5} * $left / 8))")" --init "${INIT:-src/openlsm/weights/lsm_small}" \
    --semantic-weights "${SEM:-outputs/sem5.safetensors}"
  cp outputs/runs/full/metrics.jsonl "$OUT/full_metrics.jsonl"; cp -r outputs/runs/full/weights "$OUT/weights"
fi
echo "done at $(elapsed) s"; ls -la "$OUT"

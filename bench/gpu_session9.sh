#!/usr/bin/env bash
# Session-9 device calls: one full-loss training run (nothing frozen, teacher SEM) spread over several calls of
# one warm machine, resumed from its checkpoint in outputs/runs/RUN (kept on the machine between calls).
#   PART=first: the training step's time with the host-planned kNN chunks (bench_train, as in session 8; skipped
#               with BENCH=0), then the run from INIT for the rest of the call (LIMIT s); exports the weights.
#   PART=more:  the same run resumed (same flags, --resume) for the rest of the call; exports the weights.
# STEPS is the run's planned length (the cosine schedule spans all calls); RUN names the run's folder.
set -uo pipefail
source bench/gpu_env.sh
RUN=outputs/runs/${RUN:-full9}
if [ "${PART:-first}" = first ]; then
  if [ "${BENCH:-1}" != 0 ]; then
    python3 bench/bench_train.py --device cuda --presets small --size 256 --batch 8 --precision fp32 --loss paper \
      --views 3 --steps 5 --warmup 2 2>&1 | grep '^{' | tee -a "$OUT/train_step.jsonl"
    python3 bench/bench_render.py --device cuda --backend gsplat --sizes 256 512 --repeat 200 2>&1 | grep '^{' |
      tee -a "$OUT/render.jsonl"
  fi
  RESUME=--no-resume
else
  RESUME=--resume
fi
left=$(( ${LIMIT:-570} - $(elapsed) - 45 ))
openlsm train --config small --resolution 256 --batch-size 8 --out "$RUN" $RESUME \
  --max-minutes "$(python3 -c "print(round($left / 60, 2))")" --val-every 0 --ckpt-every 0 --log-every 25 \
  --export-weights --overwrite --precision fp32 --data-workers 14 --loss paper --views 3 --lr "${LR:-5e-5}" \
  --warmup-steps 20 --steps "${STEPS:-2000}" --init "${INIT:-src/openlsm/weights/lsm_small}" \
  --semantic-weights "${SEM:-outputs/sem11.safetensors}" 2>&1 | grep -v Warning | tail -n 4
cp "$RUN/metrics.jsonl" "$OUT/full_metrics.jsonl"; cp -r "$RUN/weights" "$OUT/weights"
echo "done at $(elapsed) s"; ls -la "$OUT"

#!/usr/bin/env bash
# Session-8 device calls; results come back through $OUT.
#   PART=render: gsplat (default fast-math build) vs the PyTorch backend (bench/gpu_check_render.py), gsplat timings
#                by tile size, profiles of one gsplat frame and of the PyTorch backend on the GPU, a profile of one
#                full-loss training step; then gsplat built with NO_FAST_MATH=1 (its own extension folder) and the
#                agreement check again.
#   PART=train:  the near-cut-off pairs behind each backend difference (bench/gpu_agreement_pairs.py), the training
#                step with the kNN chunked as on the CPU and as on the GPU, then the full loss, nothing frozen, from
#                INIT with the extractor SEM as teacher for the rest of the call (LIMIT s); exports the weights.
#   PART=verify: the agreement check and gsplat timings with the committed tile sizes (8 without gradients).
set -uo pipefail
source bench/gpu_env.sh
if [ "${PART:-render}" = render ]; then
  python3 bench/gpu_check_render.py 2>&1 | grep '^{' | tee "$OUT/check_fast_math.json"
  echo "gsplat built and checked at $(elapsed) s"
  for tile in 16 8; do
    python3 bench/bench_render.py --device cuda --backend gsplat --sizes 256 512 --repeat 200 --tile $tile 2>&1 |
      grep '^{' | tee -a "$OUT/render.jsonl"
  done
  python3 bench/bench_render.py --device cuda --backend gsplat --sizes 256 512 --repeat 30 --cameras 8 2>&1 |
    grep '^{' | tee -a "$OUT/render.jsonl"
  python3 bench/bench_render.py --device cuda --backend gsplat --sizes 256 --repeat 50 --profile > "$OUT/profile_gsplat.txt" 2>&1
  python3 bench/bench_render.py --device cuda --backend torch --sizes 256 --repeat 5 --profile > "$OUT/profile_torch.txt" 2>&1
  grep '^{' "$OUT/profile_torch.txt" | tee -a "$OUT/render.jsonl"
  echo "render benchmarks done at $(elapsed) s"
  python3 bench/bench_train.py --device cuda --presets small --size 256 --batch 8 --precision fp32 --loss paper \
    --views 3 --steps 3 --warmup 2 --profile > "$OUT/profile_train.txt" 2>&1
  grep '^{' "$OUT/profile_train.txt"
  echo "train profile done at $(elapsed) s"
  NO_FAST_MATH=1 TORCH_EXTENSIONS_DIR=/tmp/ext_nofastmath python3 bench/gpu_check_render.py 2>&1 | grep '^{' |
    tee "$OUT/check_no_fast_math.json"
elif [ "$PART" = verify ]; then
  python3 bench/gpu_check_render.py 2>&1 | grep '^{' | tee "$OUT/check.json"
  python3 bench/bench_render.py --device cuda --backend gsplat --sizes 256 512 --repeat 200 2>&1 | grep '^{' | tee -a "$OUT/render.jsonl"
  python3 bench/bench_render.py --device cuda --backend gsplat --sizes 256 512 --repeat 30 --cameras 8 2>&1 | grep '^{' | tee -a "$OUT/render.jsonl"
  python3 bench/bench_render.py --device cuda --backend gsplat --sizes 256 --repeat 50 --backward 2>&1 | grep '^{' | tee -a "$OUT/render.jsonl"
else
  python3 bench/gpu_agreement_pairs.py --device cuda 2>&1 | grep '^{' | tee "$OUT/agreement_pairs.jsonl" | head -n 12
  for growth in 1.25 2; do
    python3 bench/bench_train.py --device cuda --presets small --size 256 --batch 8 --precision fp32 --loss paper \
      --views 3 --steps 5 --warmup 2 --knn-growth $growth 2>&1 | grep '^{' | tee -a "$OUT/train_step.jsonl"
  done
  # the full-loss call of session 6 for the rest of this call's time (its own clock starts at 0)
  LIMIT=$(( ${LIMIT:-570} - $(elapsed) )) PART=lsm LR=${LR:-5e-5} FULL_RATE=${FULL_RATE:-7.0} \
    SEM=${SEM:-outputs/sem11.safetensors} bash bench/gpu_session6.sh
fi
echo "done at $(elapsed) s"; ls -la "$OUT"

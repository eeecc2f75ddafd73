#!/usr/bin/env bash
# Session-4 device calls. PART selects what runs; results (JSON lines, logs) land in $OUT.
#   PART=bench : gsplat path check + timings, reconstruct per stage (small shipped, paper random), paper training
#                throughput, SynthRooms with host workers.            (nvidia-h100-x1)
#   PART=ddp   : 2-GPU DDP smoke test of `openlsm train` against one GPU, same global batch. (nvidia-h200-x2)
set -uo pipefail
source bench/gpu_env.sh
run() { echo "== $* ($(elapsed) s)"; timeout "${T:-240}" "$@" 2>&1 | grep -v Warning | tee -a "$OUT/log.txt" | grep '^{' >> "$OUT/results.jsonl"; tail -n 2 "$OUT/results.jsonl"; }
if [ "${PART:-bench}" = bench ]; then
  T=300 run python3 bench/gpu_check_render.py
  run python3 bench/bench_render.py --device cuda --backend gsplat --sizes 256 512 --repeat 200
  run python3 bench/bench_render.py --device cuda --backend gsplat --sizes 256 512 --repeat 200 --gsplat-rasterization
  run python3 bench/bench_render.py --device cuda --backend gsplat --sizes 256 --repeat 200
  run python3 bench/bench_render.py --device cuda --backend gsplat --sizes 256 --repeat 50 --backward
  python3 bench/bench_render.py --device cuda --backend gsplat --sizes 256 --repeat 20 --profile > "$OUT/render_profile.txt" 2>&1
  run python3 bench/bench_render.py --device cuda --backend torch --sizes 256 --repeat 10
  IFS='|' read -ra synth_runs <<< "${SYNTH:-}"  # e.g. SYNTH="--n 1280 --batch 64 --workers 15|--n 256 --batch 64"
  for args in "${synth_runs[@]}"; do run python3 bench/bench_synthrooms.py --device cuda $args; done
  run python3 bench/bench_reconstruct.py --device cuda --checkpoint src/openlsm/weights/lsm_small --repeat 3
  run python3 bench/bench_reconstruct.py --device cuda --preset paper --repeat 3 --video-frames 0
  python3 bench/bench_lsm.py --device cuda --presets paper --dtype bf16 --iters 3 --profile > "$OUT/lsm_profile.txt" 2>&1
  T=300 run python3 bench/bench_train.py --device cuda --presets paper --size 256 --batch 4 --precision bf16 --steps 3 --warmup 2
  T=200 run python3 bench/bench_train.py --device cuda --presets paper --size 256 --batch 4 --precision fp32 --steps 3 --warmup 2
else
  # same global batch (16) and steps on 1 and 2 GPUs, from the shipped weights; pairs/s from the trainer's log
  common="--config small --resolution 256 --batch-size 16 --steps ${STEPS:-40} --warmup-steps 5 --lr 1e-4 --precision fp32
    --log-every 10 --val-every 100000 --ckpt-every 20 --init src/openlsm/weights/lsm_small --overwrite --quiet"
  python3 -c "import torch; print(torch.cuda.device_count(), 'GPUs')" | tee "$OUT/gpus.txt"
  timeout 280 python3 -m openlsm.cli.main train $common --out /tmp/runs/one > "$OUT/one.log" 2>&1; echo "one rc $?" | tee -a "$OUT/gpus.txt"
  timeout 280 torchrun --nproc_per_node 2 -m openlsm.cli.main train $common --out /tmp/runs/two > "$OUT/two.log" 2>&1
  echo "two rc $?" | tee -a "$OUT/gpus.txt"
  for r in one two; do cp /tmp/runs/$r/metrics.jsonl "$OUT/$r.metrics.jsonl" 2>/dev/null; done
  tail -n 3 "$OUT"/one.log "$OUT"/two.log
fi
echo "done at $(elapsed) s"

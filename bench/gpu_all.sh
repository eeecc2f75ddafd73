#!/usr/bin/env bash
# One device call: install carried wheels, build gsplat, check backends agree, time everything. Results in $OUT.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
git log -1 --format=%H > "$OUT/commit.txt" 2>/dev/null || true
run() { echo "== $*"; timeout "${T:-240}" "$@" 2>&1 | grep -v Warning | tee -a "$OUT/results.jsonl" | tail -n 12; }
T=300 run python3 bench/gpu_check_render.py
run python3 bench/bench_render.py --device cuda --backend gsplat --sizes 256 512 --repeat 50
run python3 bench/bench_render.py --device cuda --backend gsplat --sizes 256 512 --repeat 50 --channel-chunk 128
run python3 bench/bench_render.py --device cuda --backend gsplat --sizes 256 512 --repeat 50 --channel-chunk 64
run python3 bench/bench_render.py --device cuda --backend gsplat --sizes 256 --repeat 20 --backward
run python3 bench/bench_render.py --device cuda --backend torch --sizes 256 512 --repeat 10 --backward
"$@"

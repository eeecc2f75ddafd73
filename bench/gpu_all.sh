#!/usr/bin/env bash
# One device call: install carried wheels, build gsplat, check backends agree, time everything. Results in $OUT.
set -uo pipefail
source bench/gpu_env.sh
run() { echo "== $*"; timeout "${T:-240}" "$@" 2>&1 | grep -v Warning | tee -a "$OUT/results.jsonl" | tail -n 12; }
T=300 run python3 bench/gpu_check_render.py
run python3 bench/bench_render.py --device cuda --backend gsplat --sizes 256 512 --repeat 50
run python3 bench/bench_render.py --device cuda --backend gsplat --sizes 256 512 --repeat 50 --channel-chunk 128
run python3 bench/bench_render.py --device cuda --backend gsplat --sizes 256 512 --repeat 50 --channel-chunk 64
run python3 bench/bench_render.py --device cuda --backend gsplat --sizes 256 --repeat 20 --backward
run python3 bench/bench_render.py --device cuda --backend torch --sizes 256 512 --repeat 10 --backward
"$@"

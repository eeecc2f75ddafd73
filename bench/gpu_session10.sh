#!/usr/bin/env bash
# Session-10 device calls: the gsplat inference path (gsplat_kernels: compiled kernels, fused SH, 32-channel passes)
# against the previous render.py (carried as outputs/old_render.py, run from a copy of src/), alternated.
#   PART=check:  GPU tests, the backends' agreement, one-view / eight-view / SH-degree-3 / backward timings (two
#                rounds), then PART=latency.
#   PART=timing: the forward timings again with 50 warm-up calls and 500 timed ones, four rounds.
#   PART=latency: bench/gpu_render_latency.py (inference settings, old render.py, kernels alone; one process).
set -uo pipefail
source bench/gpu_env.sh
python3 -c "from gsplat.cuda._backend import _C" 2>&1 | tail -n 1
rm -rf /tmp/oldsrc && mkdir -p /tmp/oldsrc && cp -r src /tmp/oldsrc/ && cp outputs/old_render.py /tmp/oldsrc/src/openlsm/render/render.py
bench() {  # label, rounds, then bench_render.py flags
  local label=$1 rounds=$2; shift 2
  for round in $(seq "$rounds"); do
    for version in old new; do
      local path=$PWD/src; [ $version = old ] && path=/tmp/oldsrc/src
      PYTHONPATH=/tmp/site:$path python3 bench/bench_render.py --device cuda --backend gsplat "$@" 2>&1 | grep '^{' |
        sed "s/^{/{\"version\": \"$version\", \"label\": \"$label\", /" | tee -a "$OUT/render.jsonl"
    done
  done
}
if [ "${PART:-check}" = check ]; then
  python3 -m pytest -q -p no:cacheprovider tests/render/test_gsplat_gpu.py tests/models/test_cuda_graphs.py 2>&1 |
    tail -n 5 | tee "$OUT/tests.txt"
  python3 bench/gpu_check_render.py 2>&1 | grep '^{' | tee "$OUT/agreement.json"
  bench one_view 2 --sizes 256 512 --repeat 200
  bench eight_views 2 --sizes 256 512 --repeat 30 --cameras 8
  bench sh3 2 --sizes 256 --repeat 200 --sh-degree 3
  bench backward 2 --sizes 256 --repeat 50 --backward
  PART=latency bash "$0"
elif [ "$PART" = timing ]; then  # longer warm-up and more frames, four rounds
  bench one_view 4 --sizes 256 512 --repeat 500 --warmup 50
  bench sh3 4 --sizes 256 --repeat 500 --warmup 50 --sh-degree 3
  bench eight_views 2 --sizes 256 512 --repeat 100 --warmup 20 --cameras 8
else  # PART=latency: the inference settings and the previous render.py in one process, taking turns
  for args in "--size 256" "--size 256 --sh-degree 3" "--size 512"; do
    python3 bench/gpu_render_latency.py $args --rounds 20 --frames 50 --old outputs/old_render.py 2>&1 |
      grep '^{' | tee -a "$OUT/latency.jsonl"
  done
fi
echo "done at $(elapsed) s"

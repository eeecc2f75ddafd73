#!/usr/bin/env bash
# Session-11 device calls: the kNN's capped first pass and the shared RoPE tables, against the code before them
# (carried as outputs/old_src/src from commit f64113b, without weights/examples, which are taken from src/).
#   PART=lsm: kNN and geometry tests (incl. the GPU kNN test), the kNN alone, then forwards alternating old and new
#             (random `paper` bf16 eager and with CUDA graphs, random `small`, the shipped `small` on the armchairs
#             pair), and a profile of the graphed `paper` bf16 forward.
set -uo pipefail
source bench/gpu_env.sh
rm -rf /tmp/old && cp -r outputs/old_src /tmp/old && cp -r src/openlsm/weights src/openlsm/examples /tmp/old/src/openlsm/
lsm() {  # label, then bench_lsm.py flags; runs old then new
  local label=$1; shift
  for version in old new; do
    local path=$PWD/src; [ $version = old ] && path=/tmp/old/src
    PYTHONPATH=/tmp/site:$path timeout 200 python3 bench/bench_lsm.py --device cuda "$@" 2>&1 | grep '^{' |
      sed "s/^{/{\"version\": \"$version\", \"label\": \"$label\", /" | tee -a "$OUT/lsm.jsonl"
  done
}
if [ "${PART:-lsm}" = lsm ]; then
  python3 -m pytest -q -p no:cacheprovider tests/models/test_knn.py tests/models/test_geometry.py \
    tests/models/test_cuda_graphs.py 2>&1 | tail -n 3 | tee "$OUT/tests.txt"
  python3 bench/bench_lsm.py --knn --device cuda --iters 20 2>&1 | grep '^{' | tee "$OUT/knn.jsonl"
  echo "elapsed $(elapsed) s"
  for round in 1 2; do
    lsm shipped_small --checkpoint src/openlsm/weights/lsm_small --iters 10
    lsm small --presets small --iters 10
    lsm paper_bf16_graphs --presets paper --dtype bf16 --iters 10 --cuda-graphs
    echo "elapsed $(elapsed) s"
  done
  lsm paper_bf16_eager --presets paper --dtype bf16 --iters 10
  echo "elapsed $(elapsed) s"
  timeout 150 python3 bench/bench_lsm.py --device cuda --presets paper --dtype bf16 --iters 3 --cuda-graphs --profile \
    > "$OUT/profile_paper_bf16.txt" 2>&1
  echo "elapsed $(elapsed) s"
fi

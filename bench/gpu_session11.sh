#!/usr/bin/env bash
# Session-11 device calls: the kNN's capped first pass on the GPU, the LSM forward with each first pass.
#   PART=knn: kNN tests (incl. the GPU one), the kNN alone, forwards (random `paper` bf16 with CUDA graphs, random
#             `small`, the shipped `small` on the armchairs pair) with grouped and capped first passes, and a
#             profile of the graphed `paper` bf16 forward.
set -uo pipefail
source bench/gpu_env.sh
if [ "${PART:-knn}" = knn ]; then
  python3 -m pytest -q -p no:cacheprovider tests/models/test_knn.py 2>&1 | tail -n 3 | tee "$OUT/tests.txt"
  python3 bench/bench_lsm.py --knn --device cuda --iters 20 2>&1 | grep '^{' | tee "$OUT/knn.jsonl"
  for round in 1 2; do
    for capped in none auto; do
      python3 bench/bench_lsm.py --device cuda --presets paper --dtype bf16 --iters 10 --cuda-graphs \
        --knn-capped $capped 2>&1 | grep '^{' | tee -a "$OUT/lsm.jsonl"
      python3 bench/bench_lsm.py --device cuda --presets small --iters 10 --knn-capped $capped 2>&1 | grep '^{' |
        tee -a "$OUT/lsm.jsonl"
      python3 bench/bench_lsm.py --device cuda --checkpoint src/openlsm/weights/lsm_small --iters 10 \
        --knn-capped $capped 2>&1 | grep '^{' | tee -a "$OUT/lsm.jsonl"
    done
  done
  echo "elapsed $(elapsed) s"
  python3 bench/bench_lsm.py --device cuda --presets paper --dtype bf16 --iters 3 --cuda-graphs --profile \
    > "$OUT/profile_paper_bf16.txt" 2>&1
  echo "elapsed $(elapsed) s"
fi

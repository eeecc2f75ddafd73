#!/usr/bin/env bash
# Session-12 device call: the Triton tile kNN (knn_tiles.py) against the grid search it replaces on a GPU, in the
# same code and process setup, taking turns.
#   PART=knn: kNN tests on the GPU (incl. the tile kernel against all pairs), the kNN alone (grid grouped, grid
#             capped, tiles), then forwards alternating `--knn-method grid` and the default (tiles): the shipped
#             `small` on the armchairs pair, random `small`, random `paper` bf16 with CUDA graphs and eager;
#             a profile of the graphed `paper` bf16 forward.
#             With TUNE=1 also the tile kNN's block sizes (bench/tune_knn_tiles.py) after the kNN alone.
#   PART=tune: the tile kNN's tests and block sizes only.
#   PART=final: tile kNN tests, the kNN alone, block sizes, one round of forwards (grid, tiles).
set -uo pipefail
source bench/gpu_env.sh
lsm() {  # label, then bench_lsm.py flags; runs grid then tiles
  local label=$1; shift
  for method in grid auto; do
    timeout 200 python3 bench/bench_lsm.py --device cuda --knn-method $method "$@" 2>&1 | grep '^{' |
      sed "s/^{/{\"label\": \"$label\", /" | tee -a "$OUT/lsm.jsonl"
  done
}
if [ "${PART:-knn}" = knn ]; then
  python3 -c "import triton; print('triton', triton.__version__)" | tee "$OUT/triton.txt"
  python3 -m pytest -q -p no:cacheprovider tests/models/test_knn.py tests/models/test_knn_tiles.py \
    tests/models/test_gaussian_head.py 2>&1 | tail -n 15 | tee "$OUT/tests.txt"
  python3 bench/bench_lsm.py --knn --device cuda --iters 20 2>&1 | grep '^{' | tee "$OUT/knn.jsonl"
  [ "${TUNE:-0}" = 1 ] && PYTHONPATH=$PYTHONPATH:bench python3 bench/tune_knn_tiles.py --iters 20 2>&1 | tail -n 30 |
    tee "$OUT/tune.jsonl"
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
if [ "${PART:-knn}" = tune ]; then
  python3 -m pytest -q -p no:cacheprovider tests/models/test_knn_tiles.py 2>&1 | tail -n 5 | tee "$OUT/tests.txt"
  PYTHONPATH=$PYTHONPATH:bench python3 bench/tune_knn_tiles.py --iters 20 2>&1 | tail -n 30 | tee "$OUT/tune.jsonl"
  echo "elapsed $(elapsed) s"
fi
if [ "${PART:-knn}" = final ]; then
  python3 -m pytest -q -p no:cacheprovider tests/models/test_knn_tiles.py tests/models/test_knn.py -k "tiles or gpu or auto" \
    2>&1 | tail -n 5 | tee "$OUT/tests.txt"
  python3 bench/bench_lsm.py --knn --device cuda --iters 20 2>&1 | grep '^{' | tee "$OUT/knn.jsonl"
  PYTHONPATH=$PYTHONPATH:bench python3 bench/tune_knn_tiles.py --iters 20 2>&1 | tail -n 44 | tee "$OUT/tune.jsonl"
  echo "elapsed $(elapsed) s"
  lsm shipped_small --checkpoint src/openlsm/weights/lsm_small --iters 10
  lsm paper_bf16_graphs --presets paper --dtype bf16 --iters 10 --cuda-graphs
  echo "elapsed $(elapsed) s"
fi

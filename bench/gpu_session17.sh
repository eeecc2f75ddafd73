#!/usr/bin/env bash
# Session 17 device call: the GPU test subset on this commit, then the LSM forward of the previous code
# (carried as outputs/old_src/src) and this commit taking turns.
#   run(command="bash bench/gpu_session17.sh", carry=[".whl", "outputs/old_src"])
source bench/gpu_env.sh
timeout 330 python3 -m pytest -q -p no:cacheprovider tests/render/test_gsplat_gpu.py tests/models/test_knn.py \
  tests/models/test_knn_tiles.py tests/models/test_cuda_graphs.py tests/render/test_render.py 2>&1 | tail -4
echo "tests done at $(elapsed) s"
for round in 1 2; do
  for v in old new; do
    src=$PWD/src; [ $v = old ] && src=$PWD/outputs/old_src/src
    PYTHONPATH=/tmp/site:$src timeout 100 python3 bench/bench_lsm.py --device cuda --checkpoint src/openlsm/weights/lsm_small \
      --iters 10 2>&1 | grep '^{' | sed "s/^/$v small /" | tee -a "$OUT/lsm.txt"
    PYTHONPATH=/tmp/site:$src timeout 100 python3 bench/bench_lsm.py --device cuda --presets paper --dtype bf16 \
      --cuda-graphs --iters 10 2>&1 | grep '^{' | sed "s/^/$v paper /" | tee -a "$OUT/lsm.txt"
  done
done
echo "done at $(elapsed) s"

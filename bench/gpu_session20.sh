#!/usr/bin/env bash
# Device call prepared in session 20 (no device was lent then): the matrix-free fits (`GsplatViews`, opt-in by
# OPENLSM_MATRIX_FREE=1) tested and timed against the sparse weights, then the
# first GPU run of the `--refine N` flag (alone and before the colour / feature fits) on 40 SynthRooms test rooms
# and 16 validation rooms, and the fits with either operator; metrics.json files come back under $OUT.
#   run(command="bash bench/gpu_session20.sh", carry=[".whl"])
source bench/gpu_env.sh
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/models/test_feature_fit.py tests/render/test_gsplat_gpu.py \
  2>&1 | tail -3
echo "tests done at $(elapsed) s"
for op in 1 0; do
  OPENLSM_MATRIX_FREE=$op timeout 60 python3 bench/bench_feature_fit.py --device cuda --scenes 4 --iters 8 2>&1 \
    | grep '^{' | tee -a "$OUT/feature_fit.txt"
done
echo "bench done at $(elapsed) s"
lsm_eval val16_off synthrooms:val 16
lsm_eval val16_refine synthrooms:val 16 --refine 30
lsm_eval test40_refine synthrooms:test 40 --refine 30
lsm_eval test40_both synthrooms:test 40 --color-fit 8 --feature-fit 8
(export OPENLSM_MATRIX_FREE=1; lsm_eval test40_both_matrix_free synthrooms:test 40 --color-fit 8 --feature-fit 8)
lsm_eval test40_refine_all synthrooms:test 40 --refine 30 --color-fit 8 --feature-fit 8

#!/usr/bin/env bash
# Session 19 device calls: the shipped `small` model evaluated with the colour fit off and on (and with the feature
# fit too), or with the test-time refinement (PART=refine), on 40 SynthRooms test rooms and 16 validation rooms;
# metrics.json files come back under $OUT.
#   run(command="bash bench/gpu_session19.sh", carry=[".whl"])
#   run(command="PART=refine bash bench/gpu_session19.sh", carry=[".whl"])
source bench/gpu_env.sh
if [ "${PART:-fits}" = fits ]; then
  lsm_eval test40_off synthrooms:test 40
  lsm_eval test40_color synthrooms:test 40 --color-fit 8
  lsm_eval test40_both synthrooms:test 40 --color-fit 8 --feature-fit 8
  lsm_eval val16_off synthrooms:val 16
  lsm_eval val16_color synthrooms:val 16 --color-fit 8
  lsm_eval test40_color16 synthrooms:test 40 --color-fit 16
else  # PART=refine: the test-time refinement (30 Adam steps), alone and before the colour fit
  lsm_eval test40_refine synthrooms:test 40 --refine 30
  lsm_eval val16_refine synthrooms:val 16 --refine 30
  lsm_eval test40_refine_color synthrooms:test 40 --refine 30 --color-fit 8
fi

#!/usr/bin/env bash
# Session 19 device calls: the shipped `small` model evaluated with the colour fit off and on (and with the feature
# fit too), or with the test-time refinement (PART=refine), on 40 SynthRooms test rooms and 16 validation rooms;
# metrics.json files come back under $OUT.
#   run(command="bash bench/gpu_session19.sh", carry=[".whl"])
#   run(command="PART=refine bash bench/gpu_session19.sh", carry=[".whl"])
source bench/gpu_env.sh
ev() {  # NAME DATA SCENES [flags...]
  local name=$1 data=$2 scenes=$3; shift 3
  timeout 200 python3 -m openlsm.cli.main eval --checkpoint src/openlsm/weights/lsm_small --data "$data" \
    --scenes "$scenes" --resolution 256 --device cuda --text-table .whl/text_table.safetensors --render-repeats 3 \
    --no-pose --out "$OUT/$name" "$@" 2>&1 | tail -2
  echo "$name done at $(elapsed) s"
}
if [ "${PART:-fits}" = fits ]; then
  ev test40_off synthrooms:test 40
  ev test40_color synthrooms:test 40 --color-fit 8
  ev test40_both synthrooms:test 40 --color-fit 8 --feature-fit 8
  ev val16_off synthrooms:val 16
  ev val16_color synthrooms:val 16 --color-fit 8
  ev test40_color16 synthrooms:test 40 --color-fit 16
else  # PART=refine: the test-time refinement (30 Adam steps), alone and before the colour fit
  ev test40_refine synthrooms:test 40 --refine 30
  ev val16_refine synthrooms:val 16 --refine 30
  ev test40_refine_color synthrooms:test 40 --refine 30 --color-fit 8
fi

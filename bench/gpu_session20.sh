#!/usr/bin/env bash
# Session 20 device call: the first GPU run of the `--refine N` flag (test-time refinement of the shipped `small`
# model's Gaussians on the two input views), alone, with more steps and before the colour / feature fits, on 40
# SynthRooms test rooms and 16 validation rooms; one reference without fits on the same machine. metrics.json
# files come back under $OUT.
#   run(command="bash bench/gpu_session20.sh", carry=[".whl"])
source bench/gpu_env.sh
ev() {  # NAME DATA SCENES [flags...]
  local name=$1 data=$2 scenes=$3; shift 3
  timeout 200 python3 -m openlsm.cli.main eval --checkpoint src/openlsm/weights/lsm_small --data "$data" \
    --scenes "$scenes" --resolution 256 --device cuda --text-table .whl/text_table.safetensors --render-repeats 3 \
    --no-pose --out "$OUT/$name" "$@" 2>&1 | tail -2
  echo "$name done at $(elapsed) s"
}
ev val16_off synthrooms:val 16
ev val16_refine synthrooms:val 16 --refine 30
ev val16_refine100 synthrooms:val 16 --refine 100
ev test40_refine synthrooms:test 40 --refine 30
ev test40_refine_color synthrooms:test 40 --refine 30 --color-fit 8
ev test40_refine_all synthrooms:test 40 --refine 30 --color-fit 8 --feature-fit 8

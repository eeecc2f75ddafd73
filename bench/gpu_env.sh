#!/usr/bin/env bash
# Source on the device machine: install the carried wheels (.whl/) into /tmp/site and point Python at them.
# Also defines `elapsed` (seconds since T0, the call's start), TEXT_TABLE_FLAGS (flags for the carried MiniLM
# text table) and `lsm_eval` (an evaluation of the shipped model, below).
T0=$(date +%s)
elapsed() { echo $(( $(date +%s) - T0 )); }
TEXT_TABLE_FLAGS=(--text-encoder table --text-table .whl/text_table.safetensors)
# gsplat, plyfile, einops always; the other core dependencies only where the machine's Python lacks them (device
# images differ). .whl/ holds pure wheels and per-Python binary ones; pip picks the matching file by name.
need=(gsplat plyfile einops)
for pair in tyro:tyro docstring_parser:docstring-parser typeguard:typeguard shtab:shtab rich:rich \
            markdown_it:markdown-it-py mdurl:mdurl pygments:pygments imageio:imageio PIL:pillow yaml:pyyaml \
            safetensors:safetensors typing_extensions:typing-extensions; do
  python3 -c "import ${pair%%:*}" 2>/dev/null || need+=("${pair#*:}")
done
echo "installing from .whl: ${need[*]}"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  --find-links .whl "${need[@]}"
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0
export OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
git log -1 --format=%H > "$OUT/commit.txt" 2>/dev/null || true
openlsm() { python3 -m openlsm.cli.main "$@"; }
# The shipped `small` model evaluated on CUDA at 256² without pose recovery; metrics.json under $OUT/NAME.
lsm_eval() {  # NAME DATA SCENES [flags...]
  local name=$1 data=$2 scenes=$3; shift 3
  timeout 200 python3 -m openlsm.cli.main eval --checkpoint src/openlsm/weights/lsm_small --data "$data" \
    --scenes "$scenes" --resolution 256 --device cuda --text-table .whl/text_table.safetensors --render-repeats 3 \
    --no-pose --out "$OUT/$name" "$@" 2>&1 | tail -2
  echo "$name done at $(elapsed) s"
}

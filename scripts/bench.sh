#!/usr/bin/env bash
# Side-by-side benchmark: clip_search through SQL against open_clip on PyTorch (the reference) and Python
# onnxruntime on the same ONNX files, in one run: same photos, same texts, same ViT-B-32 weights (random, seed 0),
# same thread count. Measures image throughput (one image per call over a table, and the batch function), text
# query latency (short queries and 77-token texts), first-call load time and resident memory per backend, the
# int8 variant's speed and its cosine against fp32, and pgvector HNSW recall and latency on 100k vectors.
# Prints one table with ratios against open_clip. A few minutes (the first run also builds, exports and converts).
# The part "weights" compares clip.shared_weights on and off in the same run, fp32 and int8: the private memory a
# backend adds, the summed PSS of 1, 4 and 16 concurrent backends (fewer where the memory available does not allow
# them), single-image and short-text speed in interleaved rounds, and first calls warm and cold (bench/bench.py
# says how each is measured); its prepared weights live in .deps/bench/weights-cache, which only it uses. The part
# "models" registers the fp32 model and its int8 variant and measures backends that use both against backends that
# use one: the private memory a backend adds and the summed PSS of 1, 4 and 16 of them.
#
#   scripts/bench.sh                 1 thread per inference everywhere
#   scripts/bench.sh --threads 2     2 threads (clip.intra_op_threads, torch.set_num_threads, intra_op_num_threads;
#                                    the HNSW build gets one parallel worker)
#   --wait-idle        before measuring, wait (up to 20 minutes) for a 1-minute load average below 0.7
#   --report FILE      append the run, with the machine described, to FILE (e.g. BENCHMARKS.md)
#   --quick            fewer repetitions, a 20k-vector HNSW part, at most 4 concurrent backends in the weights
#                      part: a smoke run, not for quoting
#   --skip peers|int8|hnsw|weights|models ...   leave parts out
#   --families         also time one base model of each other family beside ViT-B-32 (random weights, the real
#                      architectures, exported offline by tools/family_models.py: the first run takes half an hour)
#   --immich           also time the models a user pulls from Immich's hub exports (IMMICH_MODELS below): each
#                      architecture with random weights in Immich's layout (tools/immich_models.py full), installed
#                      by clip-fetch --from into .deps/bench/immich, then the same architecture exported by
#                      tools/export_model.py; with the files' size (the first run exports for about 10 minutes)
# Sets up and uses the private 'demo' cluster as scripts/demo.sh does, with a database of its own, clip_bench.
# A part that fails (the int8 conversion, a peer, a SQL session, the HNSW or weights part) is reported and the
# others go on.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
export CARGO_BUILD_JOBS=2

threads=1 wait_idle=0 report="" skip_int8=0 families=0 immich=0 extra=()
command_line="scripts/bench.sh${*:+ $*}"
while (($#)); do
  case "$1" in
    --threads) threads=${2:?}; shift 2 ;;
    --wait-idle) wait_idle=1; shift ;;
    --report) report=${2:?}; shift 2 ;;
    --families) families=1; shift ;;
    --immich) immich=1; shift ;;
    --quick) extra+=(--rounds 1 --copies 1 --hnsw-rows 20000 --hnsw-queries 30 --weights-rounds 2
                     --weights-first-calls 1 --weights-backends 1 4); shift ;;
    --skip) shift; skip=(); while (($#)) && [[ $1 != --* ]]; do skip+=("$1"); [[ $1 == int8 ]] && skip_int8=1; shift; done
            extra+=(--skip "${skip[@]}") ;;
    *) die "unknown option $1 (see the comment at the top of $0)" ;;
  esac
done

# The demo's set-up (build, release install, the random-weights ViT-B-32, the photos, the 'demo' cluster), always
# with the random-weights model: the reference is rebuilt from its seed. Then its int8 variant (converted again
# when the fp32 model or the exporter's recipe is newer); without it, the int8 part is reported as failed. The peers
# run in the Python environment.
scripts/setup.sh --python
CLIP_MODEL_DIR="" prepare_demo demo random
model_dir=$DEMO_MODEL_DIR
int8_dir=$model_dir-int8
if ((!skip_int8)); then
  if [[ ! -f "$int8_dir/manifest.json" || "$int8_dir/manifest.json" -ot "$model_dir/manifest.json" ||
        "$int8_dir/manifest.json" -ot tools/export_model.py ]]; then
    log "converting it to int8 in $int8_dir"
    rm -f "$int8_dir/manifest.json"
    "$VENV/bin/python" tools/export_model.py --from-dir "$model_dir" --precision int8 --out "$int8_dir" 2>&1 |
      grep -v -i warn >&2 || true
  fi
  extra+=(--int8-dir "$int8_dir")
fi
# Prints the directory of open_clip architecture MODEL exported with random weights (seed 0) by
# tools/family_models.py, which exports it the first time.
random_export() {
  local dir
  dir=$(random_model_dir "$1")
  if [[ ! -f "$dir/manifest.json" ]]; then
    log "exporting $1 with random weights (seed 0) to $dir"
    "$VENV/bin/python" tools/family_models.py export "$1" "$dir" 2>&1 | grep -v -i warn >&2
  fi
  echo "$dir"
}
if ((families)); then
  family_dirs=()
  for model in ViT-B-16-SigLIP ViT-B-16-SigLIP2 MobileCLIP-S1 xlm-roberta-base-ViT-B-32 nllb-clip-base; do
    family_dirs+=("$(random_export "$model")")
  done
  extra+=(--family-dirs "${family_dirs[@]}")
fi
# Immich's exports a user would pull (the recommended model first), as NAME:ARCHITECTURE.
IMMICH_MODELS=("$RECOMMENDED_MODEL:ViT-B-32" ViT-B-16-SigLIP2__webli:ViT-B-16-SigLIP2
               nllb-clip-base-siglip__mrl:nllb-clip-base-siglip MobileCLIP2-S2__dfndr2b:MobileCLIP2-S2)
if ((immich)); then
  cargo build -p clip_fetch --quiet
  # Installed under their hub names, apart from MODELS_DIR, where the recommended name means real weights.
  immich_models="$DEPS/bench/immich"
  immich_dirs=()
  for entry in "${IMMICH_MODELS[@]}"; do
    name=${entry%%:*} model=${entry#*:}
    layout="$(random_model_dir "$model")-immich"
    if [[ ! -d $layout ]]; then
      log "exporting $model with random weights (seed 0) in Immich's layout to $layout"
      rm -rf "$layout.new"
      "$VENV/bin/python" tools/immich_models.py full "$model" "$layout.new" 2>&1 | grep -v -i warn >&2
      mv "$layout.new" "$layout"  # complete or absent
    fi
    # Installed again at every run: the files measured are what this checkout's clip-fetch installs.
    target/debug/clip-fetch --models "$immich_models" --from "$layout" --force --quiet "$name" >/dev/null
    immich_dirs+=("$immich_models/$name" "$(random_export "$model")")
  done
  extra+=(--immich-dirs "${immich_dirs[@]}")
fi
mkdir -p "$DEPS/bench"
export PATH="$PG_BIN:$PATH"

if ((wait_idle)); then
  for ((i = 0; i < 40; i++)); do
    load=$(cut -d' ' -f1 /proc/loadavg)
    awk -v l="$load" 'BEGIN { exit !(l < 0.7) }' && break
    log "1-minute load average $load: waiting for it to fall below 0.7 ($((i / 2)) of 20 minutes)"
    sleep 30
  done
fi

log "benchmark: $threads thread(s), load average $(cut -d' ' -f1-3 /proc/loadavg)"
"$VENV/bin/python" bench/bench.py --model-dir "$model_dir" --photos "$DEMO_PHOTOS" \
  --checkpoint "$DEPS/bench/ViT-B-32-seed0.pt" --threads "$threads" --json "$DEPS/bench/last-run.json" \
  --weights-cache "$DEPS/bench/weights-cache" \
  ${report:+--report "$report"} --command "$command_line" "${extra[@]}"

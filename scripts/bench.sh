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
# says how each is measured); its prepared weights live in .deps/bench/weights-cache, which only it uses.
#
#   scripts/bench.sh                 1 thread per inference everywhere
#   scripts/bench.sh --threads 2     2 threads (clip.intra_op_threads, torch.set_num_threads, intra_op_num_threads;
#                                    the HNSW build gets one parallel worker)
#   --wait-idle        before measuring, wait (up to 20 minutes) for a 1-minute load average below 0.7
#   --report FILE      append the run, with the machine described, to FILE (e.g. BENCHMARKS.md)
#   --quick            fewer repetitions, a 20k-vector HNSW part, at most 4 concurrent backends in the weights
#                      part: a smoke run, not for quoting
#   --skip peers|int8|hnsw|weights ...   leave parts out
#   --families         also time one base model of each other family beside ViT-B-32 (random weights, the real
#                      architectures, exported offline by tools/family_models.py: the first run takes half an hour)
# Sets up and uses the private 'demo' cluster as scripts/demo.sh does, with a database of its own, clip_bench.
# A part that fails (the int8 conversion, a peer, a SQL session, the HNSW or weights part) is reported and the
# others go on.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
export CARGO_BUILD_JOBS=2

threads=1 wait_idle=0 report="" skip_int8=0 families=0 extra=()
command_line="scripts/bench.sh${*:+ $*}"
while (($#)); do
  case "$1" in
    --threads) threads=${2:?}; shift 2 ;;
    --wait-idle) wait_idle=1; shift ;;
    --report) report=${2:?}; shift 2 ;;
    --families) families=1; shift ;;
    --quick) extra+=(--rounds 1 --copies 1 --hnsw-rows 20000 --hnsw-queries 30 --weights-rounds 2
                     --weights-first-calls 1 --weights-backends 1 4); shift ;;
    --skip) shift; skip=(); while (($#)) && [[ $1 != --* ]]; do skip+=("$1"); [[ $1 == int8 ]] && skip_int8=1; shift; done
            extra+=(--skip "${skip[@]}") ;;
    *) die "unknown option $1 (see the comment at the top of $0)" ;;
  esac
done

# The demo's set-up (build, release install, the random-weights ViT-B-32, the photos, the 'demo' cluster), always
# with the random-weights model: the reference is rebuilt from its seed. Then its int8 variant (converted again
# when the fp32 model or the exporter's recipe is newer); without it, the int8 part is reported as failed.
CLIP_MODEL_DIR="" prepare_demo
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
if ((families)); then
  family_dirs=()
  for model in ViT-B-16-SigLIP ViT-B-16-SigLIP2 MobileCLIP-S1 xlm-roberta-base-ViT-B-32 nllb-clip-base; do
    dir=$(random_model_dir "$model")
    if [[ ! -f "$dir/manifest.json" ]]; then
      log "exporting $model with random weights (seed 0) to $dir"
      "$VENV/bin/python" tools/family_models.py export "$model" "$dir" 2>&1 | grep -v -i warn >&2
    fi
    family_dirs+=("$dir")
  done
  extra+=(--family-dirs "${family_dirs[@]}")
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

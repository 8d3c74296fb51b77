#!/usr/bin/env bash
# clip_backfill on the GPU (clip.execution_provider = cuda) against the CPU, on the same photos and in one run:
# images/s of each, and the cosine of the GPU's embeddings against the CPU's, photo by photo. The model in
# CLIP_MODEL_DIR, else the benchmarks' (ViT-B-32, random weights; fp32 either way: the exporter writes no fp16
# graph), the demo's 16 real photos repeated, batches of 64, a release build, ONNX Runtime's GPU build and CUDA's
# libraries from their PyPI wheels (scripts/setup.sh --gpu, about 2 GB), a cluster of its own ('gpu'). The CPU
# runs with as many inference threads as the machine has cores.
# Where CUDA cannot be used (no GPU, no driver), the GPU row says why and measures the CPU fallback.
#   bench/gpu.sh [PHOTOS]     (default 2000)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
count=${1:-2000}
prepare_demo demo random >/dev/null   # release build, the model (CLIP_MODEL_DIR, else ViT-B-32's export), the photos
scripts/setup.sh --gpu
install_onnxruntime_gpu
[[ $(id -u) -ne 0 ]] || chmod o+rx "$DEPS" "$DEMO_PHOTOS"
threads=$(( $(nproc) > 64 ? 64 : $(nproc) ))  # clip.max_intra_op_threads' ceiling

db=clip_gpu
cluster_env gpu
q() { "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@"; }
trap 'scripts/cluster.sh stop gpu' EXIT
start_preloaded_cluster gpu "$db" "clip.model_dir = '$DEMO_MODEL_DIR'" \
  "clip.onnxruntime_library = '$(ort_gpu_installed_library)'" "clip.worker_databases = ''" \
  "clip.max_batch_size = 64" "clip.batch_size = 64" "clip.max_intra_op_threads = $threads" \
  "clip.intra_op_threads = $threads"
q <<SQL
SET client_min_messages = warning;
CREATE EXTENSION clip_search CASCADE;
CREATE TABLE photos (id int PRIMARY KEY, image bytea NOT NULL, cpu vector, gpu vector);
CREATE TEMP TABLE demo AS
SELECT row_number() OVER (ORDER BY name) - 1 AS n, pg_read_binary_file('$DEMO_PHOTOS/' || name) AS image
FROM pg_ls_dir('$DEMO_PHOTOS') AS name;
INSERT INTO photos (id, image)
SELECT i, demo.image FROM generate_series(0, $count - 1) i JOIN demo ON demo.n = i % (SELECT count(*) FROM demo);
SQL

# One backfill of COLUMN on PROVIDER, its seconds on stdout and its warnings in $DEPS/bench/gpu-PROVIDER.log. Loading
# the model (and, on the GPU, creating the CUDA context and choosing the kernels for a batch of 64) is left out of
# the time: a batch of 64 photos is embedded first, in the same session, and thrown away.
backfill() {
  local provider=$1 column=$2 times
  mkdir -p "$DEPS/bench"
  times=$(q -c "SET clip.execution_provider = $provider" -c "SET client_min_messages = warning" \
    -c "SELECT cardinality(clip_search_internal.embed_images_bulk(array_agg(image), NULL)) FROM photos WHERE id < 64" \
    -c "SELECT extract(epoch FROM clock_timestamp())" \
    -c "CALL clip_backfill('photos', 'image', '$column', batch_size => 64)" \
    -c "SELECT extract(epoch FROM clock_timestamp())" 2>"$DEPS/bench/gpu-$provider.log") ||
    { cat "$DEPS/bench/gpu-$provider.log" >&2; die "gpu: clip_backfill on $provider failed"; }
  awk 'NF { t[++n] = $1 } END { print t[n] - t[n - 1] }' <<<"$times"
}
log "gpu: clip_backfill of $count photos on the CPU, $threads threads"
cpu_seconds=$(backfill cpu cpu)
log "gpu: clip_backfill of $count photos with clip.execution_provider = cuda"
gpu_seconds=$(backfill cuda gpu)
fallback=$(sed -n 's/.*CUDA cannot be used, so this runs on the CPU: //p' "$DEPS/bench/gpu-cuda.log" | head -1)
read -r mean lowest < <(q -F ' ' -c "SELECT round(avg(1 - (cpu <=> gpu))::numeric, 7), round(min(1 - (cpu <=> gpu))::numeric, 7) FROM photos")

gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true)
rate() { awk -v n="$count" -v s="$1" 'BEGIN { printf "%.1f", n / s }'; }
echo
echo "bench/gpu.sh $count, $(date -u '+%Y-%m-%d %H:%M UTC'), $threads cores ($(lscpu | sed -n 's/^Model name: *//p')),\
 GPU: ${gpu_name:-none found}:"
echo
echo "| clip.execution_provider | ran on | images | seconds | images/s |"
echo "| --- | --- | --- | --- | --- |"
printf '| cpu | %d threads | %d | %.1f | %s |\n' "$threads" "$count" "$cpu_seconds" "$(rate "$cpu_seconds")"
if [[ -n $fallback ]]; then ran_on="the CPU (CUDA cannot be used)"; else ran_on=${gpu_name:-the GPU}; fi
printf '| cuda | %s | %d | %.1f | %s |\n' "$ran_on" "$count" "$gpu_seconds" "$(rate "$gpu_seconds")"
echo
echo "Cosine of the embeddings made with clip.execution_provider = cuda against the CPU's, per photo: $mean mean,\
 $lowest lowest. fp32 only: the exporter writes fp32 graphs."
[[ -z $fallback ]] || echo "CUDA could not be used: $fallback"

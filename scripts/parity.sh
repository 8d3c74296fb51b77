#!/usr/bin/env bash
# Full-size parity: exports an open_clip model (default ViT-B-32; one of each other family: ViT-B-16-SigLIP,
# ViT-B-16-SigLIP2, MobileCLIP-S1, xlm-roberta-base-ViT-B-32, nllb-clip-base) with random weights (seed 0) together
# with open_clip's own embeddings of tests/fixtures/family_texts.json and of real photos (the test fixtures in many
# formats plus scikit-image's full-size photos), then embeds the same inputs through SQL and prints min/mean cosine
# against open_clip. No hub is reachable here: Hugging Face tokenizers are stand-ins of the same kinds and Hugging
# Face text towers are built from their known configs (tools/family_models.py export).
# Needs torch (installed by scripts/setup.sh --python); takes a few minutes per model. Not part of the test suite.
#   scripts/parity.sh [MODEL]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
export CARGO_BUILD_JOBS=2

scripts/setup.sh --python
scripts/install.sh
photos="$DEPS/parity-photos"
rm -rf "$photos" && mkdir -p "$photos"
cp tests/fixtures/images/*.* "$photos/"
skimage_data=$("$VENV/bin/python" -c "import os, skimage; print(os.path.dirname(skimage.__file__) + '/data')")
for f in astronaut.png chelsea.png coffee.png rocket.jpg hubble_deep_field.jpg motorcycle_left.png retina.jpg; do
  cp "$skimage_data/$f" "$photos/"
done
model=${1:-ViT-B-32}
# Not the demo's and the benchmark's folder (random_model_dir): the demo cluster may have that model loaded.
model_dir="$MODELS_DIR/$model-parity"
log "exporting $model (random weights, seed 0) with open_clip reference embeddings"
"$VENV/bin/python" tools/family_models.py export "$model" "$model_dir" \
  --reference-texts tests/fixtures/family_texts.json --reference-images "$photos" 2>&1 | grep -v -i warn >&2

scripts/cluster.sh start demo
cluster_env demo
scripts/cluster.sh psql demo -v ref="$model_dir/reference.json" -v photos="$photos" -v model="$model_dir" <<'SQL'
\pset footer off
SET clip.model_dir = :'model';
CREATE EXTENSION IF NOT EXISTS clip_search CASCADE;
CREATE TEMP TABLE ref AS SELECT pg_read_file(:'ref')::jsonb AS j;
CREATE TEMP TABLE scores AS
SELECT 'text' AS kind, t->>'text' AS input,
       1 - (clip_embed_text(t->>'text') <=> (t->'embedding')::text::vector) AS cosine
FROM ref, jsonb_array_elements(j->'texts') AS t
UNION ALL
SELECT 'image', i->>'file',
       1 - (clip_embed_image(pg_read_binary_file(:'photos' || '/' || (i->>'file'))) <=> (i->'embedding')::text::vector)
FROM ref, jsonb_array_elements(j->'images') AS i;
SELECT kind, count(*) AS inputs, round(min(cosine)::numeric, 6) AS min_cosine, round(avg(cosine)::numeric, 6) AS mean_cosine
FROM scores GROUP BY kind ORDER BY kind;
\echo The five lowest:
SELECT kind, input, round(cosine::numeric, 6) AS cosine FROM scores ORDER BY cosine LIMIT 5;
SQL

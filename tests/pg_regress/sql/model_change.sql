-- A model change within one session: after SET clip.model_dir the backend drops its loaded model and embeds
-- with the new one, and back. The second model is the fixture with other image normalisation constants in its
-- manifest, so its image embeddings differ and its text embeddings do not.
\set abs_srcdir `printf %s "$PG_ABS_SRCDIR"`
\set abs_builddir `printf %s "$PG_ABS_BUILDDIR"`
\set setup :abs_srcdir '/include/setup.psql'
\i :setup
\set model_a :abs_srcdir '/../fixtures/tiny-model'
\set model_b :abs_builddir '/tiny-model-other-normalisation'
\setenv MODEL_A :model_a
\setenv MODEL_B :model_b
\! rm -rf "$MODEL_B" && cp -r "$MODEL_A" "$MODEL_B" && python3 -c 'import json, sys; m = json.load(open(sys.argv[1])); m["image"]["mean"] = [0.5, 0.5, 0.5]; json.dump(m, open(sys.argv[1], "w"))' "$MODEL_B/manifest.json" && chmod -R a+rX "$MODEL_B"
\set image :images 'chelsea_rgb_451x300.jpg'
SET clip.model_dir = :'model_a';
CREATE TEMP TABLE with_a AS
SELECT clip_embed_text('a cat') AS text_embedding, clip_embed_image(pg_read_binary_file(:'image')) AS image_embedding;
SET clip.model_dir = :'model_b';
-- The towers of the first model are gone; the new one loads them again when needed.
SELECT clip_info()->'loaded' AS loaded_after_change, clip_info()->'image_mean' AS image_mean;
SELECT clip_embed_text('a cat') = text_embedding AS same_text_embedding,
       clip_embed_image(pg_read_binary_file(:'image')) <> image_embedding AS image_embedding_changed
FROM with_a;
SET clip.model_dir = :'model_a';
SELECT clip_info()->'image_mean' AS image_mean,
       clip_embed_image(pg_read_binary_file(:'image')) = image_embedding AS image_embedding_back
FROM with_a;
RESET clip.model_dir;
\! rm -rf "$MODEL_B"

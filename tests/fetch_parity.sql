-- One installed model against open_clip's reference (tests/fetch.sh): psql variables dir (the model directory), ref
-- (its reference.json) and images (the fixture images' folder, ending in /). Prints one line:
--   ids differ N, texts LOWEST_COSINE, images LOWEST_COSINE, batch differs N
SET clip.model_dir = :'dir';
CREATE TEMP TABLE reference AS SELECT pg_read_file(:'ref')::jsonb AS r;
CREATE TEMP TABLE text_case AS
  SELECT c->>'text' AS text, NULL::text AS language, c->'ids' AS ids, (c->>'embedding')::vector AS expected
  FROM reference, jsonb_array_elements(r->'texts') c
  UNION ALL
  SELECT c->>'text', l.key, c->'ids', (c->>'embedding')::vector
  FROM reference, jsonb_each(coalesce(r->'languages', '{}')) l, jsonb_array_elements(l.value) c;
CREATE TEMP TABLE text_spec AS SELECT (pg_read_file(:'dir' || '/manifest.json')::jsonb)->'text' AS t;

WITH ids AS (
  -- clip_tokenize gives the ids before padding; open_clip's reference pads them to the context.
  SELECT to_jsonb(tokens || array_fill((t->>'pad_id')::int, ARRAY[(t->>'context_length')::int - cardinality(tokens)])) AS got, ids
  FROM text_case, text_spec, LATERAL (SELECT clip_tokenize(text) AS tokens) s
  WHERE language IS NULL
), texts AS (
  SELECT 1 - (CASE WHEN language IS NULL THEN clip_embed_text(text) ELSE clip_embed_text(text, language) END
              <=> expected) AS cosine
  FROM text_case
), images AS (
  SELECT 1 - (clip_embed_image(pg_read_binary_file(:'images' || (c->>'file'))) <=> (c->>'embedding')::vector) AS cosine
  FROM reference, jsonb_array_elements(r->'images') c
), batch AS (
  -- A batch through a graph of a batch of one gives each text's own embedding.
  SELECT array_agg(text ORDER BY text) AS texts FROM (SELECT text FROM text_case WHERE language IS NULL LIMIT 8) s
), batch_rows AS (
  SELECT e, t FROM batch, unnest(clip_embed_texts(texts), texts) AS u(e, t)
)
SELECT format('ids differ %s, texts %s, images %s, batch differs %s',
              (SELECT count(*) FROM ids WHERE got <> ids),
              (SELECT round(min(cosine)::numeric, 7) FROM texts),
              (SELECT round(min(cosine)::numeric, 7) FROM images),
              (SELECT count(*) FROM batch_rows WHERE e <> clip_embed_text(t)));

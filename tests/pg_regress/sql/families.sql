-- Model families besides OpenAI-vocabulary CLIP (tests/fixtures/families, tiny models with random weights and
-- stand-in tokenizers, from tools/family_models.py): through SQL, each one's embeddings match open_clip's
-- (texts at cosine >= 0.9999, images >= 0.999), clip_info() says how it reads texts and scores, clip_classify
-- gives open_clip's probabilities (a sigmoid per label for SigLIP), and NLLB takes the text's language.
\set abs_srcdir `printf %s "$PG_ABS_SRCDIR"`
\set setup :abs_srcdir '/include/setup.psql'
\i :setup
\set families :abs_srcdir '/../fixtures/families/'
CREATE TEMP TABLE family (name text PRIMARY KEY, reference jsonb);
INSERT INTO family
SELECT f, pg_read_file(:'families' || f || '/reference.json')::jsonb FROM unnest(ARRAY['siglip', 'siglip2', 'mobileclip', 'xlm-roberta', 'nllb']) AS f;
CREATE TEMP TABLE result (family text, kind text, input text, cosine float8);
CREATE FUNCTION pg_temp.check_family(f text, dir text, images text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('clip.model_dir', dir || f, false);
  INSERT INTO result
  SELECT f, 'text', t->>'text', 1 - (clip_embed_text(t->>'text') <=> (t->'embedding')::text::vector)
  FROM family, jsonb_array_elements(reference->'texts') AS t WHERE name = f;
  INSERT INTO result
  SELECT f, 'image', i->>'file',
         1 - (clip_embed_image(pg_read_binary_file(images || (i->>'file'))) <=> (i->'embedding')::text::vector)
  FROM family, jsonb_array_elements(reference->'images') AS i WHERE name = f;
  -- clip_classify of each image with the reference's labels (the texts themselves, template '{}') against
  -- open_clip's probabilities, relative to their size (sigmoid ones of random weights are tiny).
  INSERT INTO result
  SELECT f, 'classify', i.value->>'file',
         (SELECT max(abs(c.probability - (reference->'classify'->'probabilities'->(i.ordinality::int - 1)->>(l.ordinality::int - 1))::float8)
                     / (reference->'classify'->'probabilities'->(i.ordinality::int - 1)->>(l.ordinality::int - 1))::float8)
          FROM jsonb_array_elements_text(reference->'classify'->'labels') WITH ORDINALITY AS l
          JOIN clip_classify(pg_read_binary_file(images || (i.value->>'file')),
                             ARRAY(SELECT jsonb_array_elements_text(reference->'classify'->'labels')), '{}') AS c
            ON c.label = l.value)
  FROM family, jsonb_array_elements(reference->'images') WITH ORDINALITY AS i WHERE name = f;
END $$;
SELECT pg_temp.check_family(name, :'families', :'images') FROM family ORDER BY name;
-- Texts and images at open_clip's embeddings; classification within 1% of open_clip's probabilities.
SELECT family, kind, count(*) AS inputs,
       CASE WHEN kind = 'classify' THEN max(cosine) <= 0.01
            ELSE min(cosine) >= CASE kind WHEN 'text' THEN 0.9999 ELSE 0.999 END END AS matches_open_clip
FROM result GROUP BY family, kind ORDER BY family, kind;
-- The worst inputs, if any missed.
SELECT family, kind, input, cosine FROM result
WHERE cosine < CASE kind WHEN 'text' THEN 0.9999 WHEN 'image' THEN 0.999 ELSE -1 END
   OR (kind = 'classify' AND cosine > 0.01)
ORDER BY family, kind, input LIMIT 5;

-- What clip_info() says of each: how texts are read, how images are resized, how pairs are scored.
SELECT name, i->>'model' AS model, i->'embed_dim' AS dims, i->>'tokenizer' AS tokenizer, i->>'text_clean' AS clean,
       i->>'text_padding' AS padding, i->'context_length' AS context, i->>'image_resize_mode' AS resize,
       i->>'image_interpolation' AS interpolation, i->>'scoring' AS scoring, i->'logit_bias' AS bias
FROM family, LATERAL (SELECT set_config('clip.model_dir', :'families' || name, false)) AS s,
     LATERAL (SELECT clip_info() AS i) AS info
ORDER BY name;

-- SigLIP's probabilities are each label's own: they need not sum to 1, and a label's does not depend on the others.
\set siglip :families 'siglip'
SET clip.model_dir = :'siglip';
SELECT round(sum(probability)::numeric, 3) <> 1 AS not_a_softmax
FROM clip_classify(pg_read_binary_file(:'images' || 'chelsea_rgb_451x300.jpg'), ARRAY['a cat', 'a dog', 'a car']);
SELECT (SELECT probability FROM clip_classify(pg_read_binary_file(:'images' || 'chelsea_rgb_451x300.jpg'), ARRAY['a cat', 'a dog']) WHERE label = 'a cat')
     = (SELECT probability FROM clip_classify(pg_read_binary_file(:'images' || 'chelsea_rgb_451x300.jpg'), ARRAY['a cat']) WHERE label = 'a cat')
  AS independent_of_other_labels;
-- The tokenizer's ids before padding: the stand-in Unigram's pieces and its end token.
SELECT clip_tokenize('Hello, World!') AS ids;
-- A model without languages refuses one.
SELECT pg_temp.error_of($$SELECT clip_embed_text('a cat', 'fra_Latn')$$);

-- NLLB: a text's language is a code token; the one-argument form is the model's default (English), and texts
-- marked as French match open_clip's French ones.
\set nllb :families 'nllb'
SET clip.model_dir = :'nllb';
SELECT clip_info()->'languages'->>'default' AS default_language,
       jsonb_array_length(clip_info()->'languages'->'codes') AS codes;
SELECT count(*) AS texts,
       min(1 - (clip_embed_text(t->>'text', 'fra_Latn') <=> (t->'embedding')::text::vector)) >= 0.9999 AS french_matches_open_clip,
       bool_and(clip_embed_text(t->>'text', 'eng_Latn') = clip_embed_text(t->>'text')) AS english_is_the_default,
       bool_and(clip_embed_text(t->>'text', 'fra_Latn') <> clip_embed_text(t->>'text')) AS french_differs
FROM family, jsonb_array_elements(reference->'languages'->'fra_Latn') AS t WHERE name = 'nllb';
SELECT pg_temp.error_of($$SELECT clip_embed_text('a cat', 'xx_Latn')$$);
RESET clip.model_dir;

-- Several models in one database: the registry, the model argument of every function, clip.default_model, the
-- refusals (an unknown model, an ordinary role registering, other files under a name that an index uses), and the
-- one-argument forms, which keep using clip.model_dir.
\set abs_srcdir `printf %s "$PG_ABS_SRCDIR"`
\set setup :abs_srcdir '/include/setup.psql'
\i :setup
\set tiny :abs_srcdir '/../fixtures/tiny-model'
\set siglip2 :abs_srcdir '/../fixtures/families/siglip2'
\set mobileclip :abs_srcdir '/../fixtures/families/mobileclip'

SELECT clip_register_model('tiny', :'tiny');
SELECT clip_register_model('siglip2', :'siglip2');
-- The same files again: nothing changes.
SELECT clip_register_model('tiny', :'tiny');
SELECT name, architecture, weights, embed_dim, is_default, directory = :'tiny' AS in_tiny,
       length(manifest_sha256) AS sha256_length
FROM clip_models ORDER BY name;

-- Every function takes the model by name, and gives what that model gives as clip.model_dir.
SELECT vector_dims(clip_embed_text('a dog', model => 'siglip2')) AS siglip2_dims,
       vector_dims(clip_embed_text('a dog', model => 'tiny')) AS tiny_dims,
       clip_embed_text('a dog', model => 'tiny') = clip_embed_text('a dog') AS tiny_is_model_dir;
CREATE TEMP TABLE by_name AS
SELECT clip_embed_text('a red car', model => 'siglip2') AS text,
       clip_embed_image(pg_read_binary_file(:'images' || 'chelsea_rgb_200x133.png'), model => 'siglip2') AS image,
       clip_embed_texts(ARRAY['a red car', NULL], model => 'siglip2') AS texts,
       clip_embed_images(ARRAY[pg_read_binary_file(:'images' || 'chelsea_rgb_200x133.png')], model => 'siglip2') AS images,
       clip_similarity('a red car', pg_read_binary_file(:'images' || 'chelsea_rgb_200x133.png'), model => 'siglip2') AS similarity,
       clip_tokenize('a red car', model => 'siglip2') AS tokens,
       clip_info(model => 'siglip2') AS info,
       (SELECT jsonb_agg(jsonb_build_array(label, probability) ORDER BY label)
        FROM clip_classify(pg_read_binary_file(:'images' || 'chelsea_rgb_200x133.png'), ARRAY['red', 'blue'], model => 'siglip2',
                           template => '{}')) AS classes;
SELECT set_config('clip.model_dir', :'siglip2', false) IS NOT NULL AS switched;
SELECT b.text = clip_embed_text('a red car') AS text_same,
       b.image = clip_embed_image(pg_read_binary_file(:'images' || 'chelsea_rgb_200x133.png')) AS image_same,
       b.texts[1] = b.text AND b.texts[2] IS NULL AS texts_same,
       b.images[1] = b.image AS images_same,
       abs(b.similarity - clip_similarity('a red car', pg_read_binary_file(:'images' || 'chelsea_rgb_200x133.png'))) < 1e-12 AS similarity_same,
       b.tokens = clip_tokenize('a red car') AS tokens_same,
       b.classes = (SELECT jsonb_agg(jsonb_build_array(label, probability) ORDER BY label)
                    FROM clip_classify(pg_read_binary_file(:'images' || 'chelsea_rgb_200x133.png'), ARRAY['red', 'blue'], '{}'))
           AS classes_same,
       b.info->>'model' AS info_model, b.info->>'registered_as' AS registered_as,
       b.info->>'manifest_sha256' = (SELECT manifest_sha256 FROM clip_models WHERE name = 'siglip2') AS info_sha256
FROM by_name b;
RESET clip.model_dir;
SELECT count(*) AS labels
FROM clip_classify(pg_read_binary_file(:'images' || 'chelsea_rgb_200x133.png'), ARRAY['red', 'blue'], model => 'siglip2');
-- A positional second text is still the language of clip_embed_text(text, text).
SELECT pg_temp.error_of($$SELECT clip_embed_text('a dog', 'siglip2')$$);
-- A NULL model gives NULL, as any NULL argument does.
SELECT clip_embed_text('a dog', model => NULL) IS NULL AS null_model;

-- One backend uses both models in turn, and keeps at most clip.max_loaded_models of them loaded.
SELECT clip_embed_text('a cat', model => 'tiny') = clip_embed_text('a cat', model => 'tiny') AS tiny_again,
       clip_embed_text('a cat', model => 'siglip2') = clip_embed_text('a cat', model => 'siglip2') AS siglip2_again;
SELECT (clip_info(model => 'tiny')->'loaded'->>'text')::boolean AS tiny_kept,
       (clip_info(model => 'siglip2')->'loaded'->>'text')::boolean AS siglip2_kept;
SET clip.max_loaded_models = 1;
SELECT vector_dims(clip_embed_text('a cat', model => 'tiny')) AS tiny_dims;
SELECT (clip_info(model => 'siglip2')->'loaded'->>'text')::boolean AS siglip2_still_loaded;
RESET clip.max_loaded_models;

-- clip.default_model picks the model of the one-argument forms.
SET clip.default_model = 'siglip2';
SELECT vector_dims(clip_embed_text('a dog')) AS default_dims, clip_info()->>'registered_as' AS registered_as;
SELECT name, is_default FROM clip_models ORDER BY name;
SET clip.default_model = 'nowhere';
SELECT pg_temp.error_of($$SELECT clip_embed_text('a dog')$$);
RESET clip.default_model;

-- Unknown models and bad registrations are refused.
SELECT pg_temp.error_of($$SELECT clip_embed_image(pg_read_binary_file('$$ || :'images' || $$chelsea_rgb_200x133.png'), model => 'nowhere')$$);
SELECT pg_temp.error_of($$SELECT clip_info(model => 'nowhere')$$);
SELECT pg_temp.error_of($$SELECT clip_register_model('bad name', '/tmp')$$);
SELECT pg_temp.error_of($$SELECT clip_register_model('relative', 'tests/fixtures/tiny-model')$$);
SELECT regexp_replace(pg_temp.error_of($$SELECT clip_register_model('missing', '/nonexistent/model')$$), '/nonexistent/model.*', '/nonexistent/model...') AS missing;

-- Ordinary roles use the registered models, and can register, replace or remove none.
CREATE ROLE clip_models_user;
SET ROLE clip_models_user;
SELECT vector_dims(clip_embed_text('a dog', model => 'siglip2')) AS user_dims;
SELECT count(*) AS models_seen FROM clip_models;
SELECT pg_temp.error_of(format('SELECT clip_register_model(%L, %L)', 'mine', :'tiny'));
SELECT pg_temp.error_of($$SELECT clip_unregister_model('tiny')$$);
SELECT pg_temp.error_of(format('SELECT clip_search_internal.read_manifest(%L)', :'tiny'));
SELECT pg_temp.error_of($$INSERT INTO clip_search_internal.models VALUES ('mine', '/tmp', 'x', 'x', 'x', 1)$$);
SELECT pg_temp.error_of($$UPDATE clip_search_internal.models SET directory = '/tmp'$$);
SELECT pg_temp.error_of($$SET clip.default_model = 'siglip2'$$);
SELECT pg_temp.error_of($$SET clip.max_loaded_models = 64$$);
SELECT pg_temp.error_of($$SELECT * FROM clip_clean_weights_cache()$$);
RESET ROLE;
DROP ROLE clip_models_user;

-- A name's weights never change under an index: other files under the name are refused, naming the index, unless
-- the caller asks to replace them, which warns.
CREATE TABLE model_notes (id int PRIMARY KEY, body text);
INSERT INTO model_notes VALUES (1, 'a red car'), (2, 'a blue boat');
SELECT clip_register_model('notes-model', :'tiny');
CREATE INDEX model_notes_embedding ON model_notes USING hnsw ((clip_embed_text(body, model => 'notes-model')::vector(32)) vector_cosine_ops);
SELECT pg_temp.error_of(format('SELECT clip_register_model(%L, %L)', 'notes-model', :'mobileclip'));
SELECT clip_register_model('notes-model', :'siglip2');
SELECT clip_register_model('notes-model', :'mobileclip', replace => true);
SELECT architecture FROM clip_models WHERE name = 'notes-model';
SELECT pg_temp.error_of($$SELECT clip_unregister_model('notes-model')$$);
DROP INDEX model_notes_embedding;
SELECT clip_unregister_model('notes-model');
SELECT pg_temp.error_of($$SELECT clip_unregister_model('notes-model')$$);
SELECT count(*) AS listed FROM clip_models WHERE name = 'notes-model';
-- An unregistered name keeps its files: other files need replace => true, its own files take it back.
SELECT pg_temp.error_of(format('SELECT clip_register_model(%L, %L)', 'notes-model', :'siglip2'));
SELECT clip_register_model('notes-model', :'mobileclip');
SELECT clip_unregister_model('notes-model');

-- A generated column that names a model is one of its users too.
CREATE TABLE model_captions (body text, embedding vector GENERATED ALWAYS AS (clip_embed_text(body, model => 'siglip2')) STORED);
INSERT INTO model_captions (body) VALUES ('a red car');
SELECT vector_dims(embedding) AS generated_dims FROM model_captions;
SELECT clip_search_internal.model_users('siglip2') AS users;
DROP TABLE model_captions, model_notes;

-- What uses a model, as PostgreSQL records it: a model argument that is not a constant may name any model, and a
-- call without one uses the default model.
CREATE TABLE model_uses (body text, m name);
CREATE INDEX model_uses_column ON model_uses ((clip_embed_text(body, m)));
CREATE INDEX model_uses_cast ON model_uses ((clip_embed_text(body, 'siglip2'::varchar::name)));
CREATE INDEX model_uses_default ON model_uses ((clip_embed_text(body))) WHERE m <> 'zzz'::name;
CREATE MATERIALIZED VIEW model_uses_view AS SELECT clip_embed_text(body, model => 'siglip2') AS e FROM model_uses;
CREATE POLICY model_uses_policy ON model_uses USING (clip_embed_text(body, model => 'siglip2') IS NOT NULL);
SELECT clip_search_internal.model_users('siglip2') AS siglip2_users;
SET clip.default_model = 'tiny';
SELECT clip_search_internal.model_users('tiny') AS tiny_users;
RESET clip.default_model;
DROP MATERIALIZED VIEW model_uses_view;
DROP TABLE model_uses;

-- Triggers, clip_backfill and watches embed with a registered model too, and what they fill counts as its users.
CREATE TABLE model_rows (id int PRIMARY KEY, body text, by_trigger vector(32), by_backfill vector(32), by_watch vector(32));
CREATE TRIGGER model_rows_embed BEFORE INSERT OR UPDATE OF body ON model_rows
    FOR EACH ROW EXECUTE FUNCTION clip_embed_trigger('body', 'by_trigger', 'siglip2');
INSERT INTO model_rows (id, body) VALUES (1, 'a red car'), (2, 'a blue boat');
SELECT pg_temp.error_of($$SELECT clip_watch('model_rows', 'body', 'by_watch', model => 'notes-model')$$) AS unregistered;
SET client_min_messages = error;
CALL clip_backfill('model_rows', 'body', 'by_backfill', model => 'siglip2');
SELECT clip_watch('model_rows', 'body', 'by_watch', model => 'siglip2');
RESET client_min_messages;
SELECT b.done, b.error FROM clip_search_internal.watches w
CROSS JOIN LATERAL clip_search_internal.watch_batch(w.relation, w.source_attnum, w.target_attnum, 8) b
WHERE w.relation = 'model_rows'::regclass;
SELECT id, by_trigger = clip_embed_text(body, model => 'siglip2') AS trigger_by_model,
       by_backfill = by_trigger AS backfill_by_model, by_watch = by_trigger AS watch_by_model,
       by_trigger <> clip_embed_text(body) AS not_the_default
FROM model_rows ORDER BY id;
SELECT relation, target_column, rows_pending, model FROM clip_watch_status WHERE relation = 'model_rows'::regclass;
SELECT clip_search_internal.model_users('siglip2') AS users;
CALL clip_backfill('model_rows', 'body', 'by_backfill', model => 'nowhere');
SELECT pg_temp.error_of($$SELECT clip_watch('model_rows', 'body', 'by_watch', model => 'nowhere')$$);
INSERT INTO model_rows (id, body) VALUES (3, 'a green tree') \; UPDATE model_rows SET body = 'a grey cat' WHERE id = 1;
SELECT id, by_trigger = clip_embed_text(body, model => 'siglip2') AS trigger_by_model FROM model_rows ORDER BY id;
-- A trigger's model argument that no model can have is refused.
CREATE TRIGGER model_rows_bad BEFORE INSERT ON model_rows
    FOR EACH ROW EXECUTE FUNCTION clip_embed_trigger('body', 'by_trigger', 'not a name');
SELECT pg_temp.error_of($$INSERT INTO model_rows (id, body) VALUES (4, 'a bird')$$);
SELECT clip_unwatch('model_rows');
DROP TABLE model_rows;

-- The cache of prepared weights keeps what this database's models use and what a process maps, and nothing else:
-- unregistering a model removes its towers once no backend maps them, as clip_clean_weights_cache() does.
SET clip.weights_cache = '/tmp/clip_regress_weights';
SET clip.max_loaded_models = 1;
SELECT clip_register_model('scratch', :'mobileclip');
SELECT vector_dims(clip_embed_text('a cat', model => 'tiny')) AS tiny_dims;
SELECT vector_dims(clip_embed_text('a cat', model => 'scratch')) AS scratch_dims;
SELECT tower, action FROM clip_clean_weights_cache() ORDER BY 1, 2;
SELECT clip_unregister_model('scratch');
SELECT tower, action FROM clip_clean_weights_cache() ORDER BY 1, 2;
-- Using another model closes it (clip.max_loaded_models = 1): nothing maps its tower any more.
SELECT vector_dims(clip_embed_text('a cat', model => 'tiny')) AS tiny_dims;
SELECT tower, action FROM clip_clean_weights_cache() ORDER BY 1, 2;
SELECT tower, action FROM clip_clean_weights_cache() ORDER BY 1, 2;
RESET clip.max_loaded_models;
RESET clip.weights_cache;

SELECT clip_unregister_model('siglip2');
SELECT clip_unregister_model('tiny');
SELECT count(*) AS models_left FROM clip_models;

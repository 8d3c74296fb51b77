-- Descriptions of the extension's public objects, shown by psql's \df+ and \dv+ and by obj_description(). The
-- upgrade scripts repeat them (tests/pg_regress/sql/upgrade.sql compares an upgraded extension with a fresh
-- install, comments included).
COMMENT ON FUNCTION @extschema@.clip_embed_text(text) IS
    'The L2-normalised CLIP embedding of a text, as a vector of the model''s dimension';
COMMENT ON FUNCTION @extschema@.clip_embed_text(text, text) IS
    'The embedding of a text in a language, for models that take a language code (clip_info()->''languages'')';
COMMENT ON FUNCTION @extschema@.clip_embed_image(bytea) IS
    'The L2-normalised CLIP embedding of an image (JPEG, PNG, WebP, GIF, BMP or TIFF)';
COMMENT ON FUNCTION @extschema@.clip_embed_texts(text[]) IS
    'Embeddings of an array of texts, in batches of clip.batch_size, in input order; NULL gives NULL';
COMMENT ON FUNCTION @extschema@.clip_embed_images(bytea[]) IS
    'Embeddings of an array of images, in batches of clip.batch_size, in input order; NULL gives NULL';
COMMENT ON FUNCTION @extschema@.clip_similarity(text, bytea) IS
    'Cosine similarity of a text and an image under the model: 1 - (text <=> image) of their embeddings';
COMMENT ON FUNCTION @extschema@.clip_similarity(vector, vector) IS
    'Cosine similarity of two vectors: 1 - (a <=> b), NaN when either is the zero vector';
COMMENT ON FUNCTION @extschema@.clip_classify(bytea, text[], text) IS
    'Zero-shot classification of an image among labels put into a template, most probable label first';
COMMENT ON FUNCTION @extschema@.clip_blend(vector[], real[]) IS
    'One query vector from several: the normalised weighted sum of the normalised vectors';
COMMENT ON FUNCTION @extschema@.clip_blend(vector, vector, real) IS
    'One query vector from two: (1 - weight) of a and weight of b, normalised';
COMMENT ON FUNCTION @extschema@.clip_tokenize(text) IS
    'A text''s token ids as the model''s tokenizer gives them, start and end tokens included, not padded';
COMMENT ON FUNCTION @extschema@.clip_info() IS
    'The model, ONNX Runtime, the settings in force and this backend''s memory, as jsonb';
COMMENT ON FUNCTION @extschema@.clip_embed_trigger() IS
    'Trigger function: fills a vector column from a text or bytea column; arguments: source column, target column, optionally a registered model';
COMMENT ON PROCEDURE @extschema@.clip_backfill(regclass, text, text, integer, text, text) IS
    'Embeds the rows whose target is NULL, committing each batch; resumable; CALL it in autocommit mode';
COMMENT ON FUNCTION @extschema@.clip_watch(regclass, text, text, text) IS
    'Has the background worker keep a vector column embedded from a text or bytea column';
COMMENT ON FUNCTION @extschema@.clip_unwatch(regclass) IS
    'Stops watching a table''s columns (but a migration''s new column); the embeddings stay';
COMMENT ON FUNCTION @extschema@.clip_migrate(regclass, text, text, text) IS
    'Starts moving a vector column to another model: a new column filled by the background worker while queries use the old one';
COMMENT ON FUNCTION @extschema@.clip_migrate_switch(regclass, boolean) IS
    'Gives a migration''s new embeddings the old column''s name, in one transaction; keeps the old column as <name>_old, or drops it';
COMMENT ON FUNCTION @extschema@.clip_migrate_cancel(regclass) IS
    'Ends a migration and drops its new column, leaving the table as it was';
COMMENT ON FUNCTION @extschema@.clip_column_model(regclass, text) IS
    'The model whose embeddings a column holds: its watch''s, or else the default model';
COMMENT ON VIEW @extschema@.clip_migrations IS
    'Progress of each migration the current role may read, the time left, and whether it can switch now';
COMMENT ON VIEW @extschema@.clip_watch_status IS
    'Progress of each watch the current role may read, the time left at the last batch''s rate, and whether the background worker runs';
COMMENT ON TABLE @extschema@.clip_backfill_failures IS
    'Rows clip_backfill or a watch could not embed, with the error, until their source changes';
COMMENT ON FUNCTION @extschema@.clip_embed_text(text, name, text) IS
    'The embedding of a text by a registered model (clip_models), in a language for models that take one';
COMMENT ON FUNCTION @extschema@.clip_embed_image(bytea, name) IS
    'The embedding of an image by a registered model (clip_models)';
COMMENT ON FUNCTION @extschema@.clip_embed_texts(text[], name) IS
    'Embeddings of an array of texts by a registered model, in batches of clip.batch_size; NULL gives NULL';
COMMENT ON FUNCTION @extschema@.clip_embed_images(bytea[], name) IS
    'Embeddings of an array of images by a registered model, in batches of clip.batch_size; NULL gives NULL';
COMMENT ON FUNCTION @extschema@.clip_similarity(text, bytea, name) IS
    'Cosine similarity of a text and an image under a registered model';
COMMENT ON FUNCTION @extschema@.clip_classify(bytea, text[], name, text) IS
    'Zero-shot classification of an image under a registered model, most probable label first';
COMMENT ON FUNCTION @extschema@.clip_tokenize(text, name) IS
    'A text''s token ids as a registered model''s tokenizer gives them, not padded';
COMMENT ON FUNCTION @extschema@.clip_info(name) IS
    'A registered model, ONNX Runtime, the settings in force and this backend''s memory, as jsonb';
COMMENT ON FUNCTION @extschema@.clip_register_model(text, text, boolean) IS
    'Registers a model directory under a name (superuser); other files under a name need replace => true';
COMMENT ON FUNCTION @extschema@.clip_unregister_model(text) IS
    'Removes a model''s name (superuser), unless an index, generated column or watch embeds with it';
COMMENT ON VIEW @extschema@.clip_models IS
    'The registered models, and which one the functions use without a model argument';
COMMENT ON FUNCTION @extschema@.clip_clean_weights_cache() IS
    'Removes the prepared weights that no model of this database uses and no process maps (superuser)';

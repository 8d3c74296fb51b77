\set r random(1, 1000)
SELECT id FROM load_photos ORDER BY embedding <=> clip_embed_text('a photo of thing number ' || :r) LIMIT 5;

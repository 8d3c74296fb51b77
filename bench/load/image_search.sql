\set r random(1, 16)
SELECT id FROM load_photos ORDER BY embedding <=> (SELECT clip_embed_image(image) FROM load_sources WHERE id = :r) LIMIT 5;

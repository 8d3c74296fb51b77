\set r random(1, 16)
INSERT INTO load_photos (source_id, image) SELECT id, image FROM load_sources WHERE id = :r;

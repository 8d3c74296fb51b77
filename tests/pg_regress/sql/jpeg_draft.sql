-- clip.jpeg_draft: a superuser's setting (it changes what the immutable functions return). With it on, a JPEG of
-- at least twice the model's input size on each side (224 for the tiny model) is decoded at a reduced scale, as
-- Pillow's draft() does: its embedding is close to the exact one, not equal; smaller JPEGs and other formats are
-- decoded whole. The single and the array functions agree.
\set abs_srcdir `printf %s "$PG_ABS_SRCDIR"`
\set setup :abs_srcdir '/include/setup.psql'
\i :setup
\set big :images 'rocket_rgb_1280x854.jpg'
\set small :images 'chelsea_rgb_451x300.jpg'
CREATE TEMP TABLE exact AS
SELECT clip_embed_image(pg_read_binary_file(:'big')) AS big, clip_embed_image(pg_read_binary_file(:'small')) AS small;

CREATE ROLE clip_regress_draft;
SET ROLE clip_regress_draft;
SELECT pg_temp.error_of($$SET clip.jpeg_draft = on$$);
RESET ROLE;
DROP ROLE clip_regress_draft;

SET clip.jpeg_draft = on;
SELECT draft.big <> exact.big AS big_differs, 1 - (draft.big <=> exact.big) > 0.95 AS big_is_close,
       draft.small = exact.small AS small_is_the_same, draft.big = draft.big_in_array AS array_agrees
FROM exact, (SELECT clip_embed_image(pg_read_binary_file(:'big')) AS big,
                    clip_embed_image(pg_read_binary_file(:'small')) AS small,
                    (clip_embed_images(ARRAY[pg_read_binary_file(:'big')]))[1] AS big_in_array) draft;
RESET clip.jpeg_draft;
SELECT clip_embed_image(pg_read_binary_file(:'big')) = big AS exact_again FROM exact;

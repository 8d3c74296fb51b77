-- A fresh backend whose ONNX Runtime library is missing gets a clear error, not a crash.
\set abs_srcdir `printf %s "$PG_ABS_SRCDIR"`
\set setup :abs_srcdir '/include/setup.psql'
\i :setup
SET clip.onnxruntime_library = '/nonexistent/libonnxruntime.so.1.31.1';
SELECT clip_embed_text('x');
SELECT 'still connected' AS status;

-- A fresh backend whose ONNX Runtime library is missing gets a clear error, not a crash.
\ir ../include/setup.psql
SET clip.onnxruntime_library = '/nonexistent/libonnxruntime.so.1.31.1';
SELECT clip_embed_text('x');
SELECT 'still connected' AS status;

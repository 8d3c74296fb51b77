-- A fresh backend whose ONNX Runtime library is missing gets a clear error, not a crash.
CREATE EXTENSION IF NOT EXISTS clip_search CASCADE;
SET clip.onnxruntime_library = '/nonexistent/libonnxruntime.so.1.31.1';
SELECT clip_embed_text('x');
SELECT 'still connected' AS status;

-- A fresh backend whose ONNX Runtime library is missing gets a clear error, not a crash.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS clip_search CASCADE;
RESET client_min_messages;
SET clip.onnxruntime_library = '/nonexistent/libonnxruntime.so.1.31.1';
SELECT clip_embed_text('x');
SELECT 'still connected' AS status;

//! The CLIP model core of clip_search: tokenizer, image decoding and preprocessing, ONNX Runtime sessions.
//! Plain Rust with no PostgreSQL in it, so all of it is tested with `cargo test -p clip_core`.

pub mod error;
pub mod graph;
pub mod hf_tokenizer;
pub mod immich;
pub mod interrupt;
pub mod manifest;
pub mod memory;
pub mod model;
pub mod prepared;
pub mod preprocess;
pub mod runtime;
pub mod tokenizer;

pub use error::ClipError;
pub use hf_tokenizer::HfTokenizer;
pub use model::{cosine, label_probabilities, ClipModel, ImageBatch, ModelSettings, Weights};
pub use tokenizer::ClipTokenizer;

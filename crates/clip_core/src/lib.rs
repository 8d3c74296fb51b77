//! The CLIP model core of clip_search: tokenizer, image decoding and preprocessing, ONNX Runtime sessions.
//! Plain Rust with no PostgreSQL in it, so all of it is tested with `cargo test -p clip_core`.

pub mod error;
pub mod manifest;
pub mod model;
pub mod preprocess;
pub mod runtime;
pub mod tokenizer;

pub use error::ClipError;
pub use model::{cosine, ClipModel, ModelSettings};

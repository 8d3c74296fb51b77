//! The SQL functions. Thin wrappers: convert types, call the model core, map errors to SQLSTATEs.
//!
//! The embedding functions are IMMUTABLE so that `ORDER BY embedding <=> clip_embed_text('...')` is evaluated
//! once and served by an HNSW index, and so that generated columns can use them. They are immutable for a given
//! model: changing clip.model_dir means re-embedding stored vectors (clip_info() tells which model made them).
use clip_core::preprocess::{decode, DecodeLimits, DecodedImage};
use clip_core::{cosine, ClipError};
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::json;

use crate::errors::{raise, OrRaise};
use crate::guc;
use crate::model_cache::with_model;
use crate::vector::Vector;

fn decode_image(function: &'static str, bytes: &[u8]) -> DecodedImage {
    decode(bytes, &DecodeLimits { max_pixels: guc::max_image_pixels() }).or_raise(function)
}

fn one(mut rows: Vec<Vec<f32>>) -> Vector {
    Vector(rows.pop().expect("one input gives one row"))
}

/// The L2-normalised CLIP embedding of a text. Texts longer than the model's context (77 tokens for CLIP) are
/// truncated as open_clip truncates them.
#[pg_extern(immutable, parallel_safe)]
fn clip_embed_text(input: &str) -> Vector {
    check_for_interrupts!();
    one(with_model(|m| m.embed_texts(&[input])).or_raise("clip_embed_text"))
}

/// The L2-normalised CLIP embedding of an image (JPEG, PNG, WebP, GIF, BMP or TIFF).
#[pg_extern(immutable, parallel_safe)]
fn clip_embed_image(image: &[u8]) -> Vector {
    let decoded = decode_image("clip_embed_image", image);
    check_for_interrupts!();
    one(with_model(|m| m.embed_images(std::slice::from_ref(&decoded))).or_raise("clip_embed_image"))
}

/// The token ids the model sees for a text, start and end tokens included.
#[pg_extern(immutable, parallel_safe)]
fn clip_tokenize(input: &str) -> Vec<i32> {
    with_model(|m| Ok(m.tokenizer()?.encode(input))).or_raise("clip_tokenize").into_iter().map(|id| id as i32).collect()
}

/// Cosine similarity of a text and an image under the loaded model.
#[pg_extern(immutable, parallel_safe, name = "clip_similarity")]
fn clip_similarity_text_image(text: &str, image: &[u8]) -> f32 {
    const F: &str = "clip_similarity";
    let decoded = decode_image(F, image);
    check_for_interrupts!();
    let (t, i) = with_model(|m| {
        let t = m.embed_texts(&[text])?;
        Ok::<_, ClipError>((t, m.embed_images(std::slice::from_ref(&decoded))?))
    })
    .or_raise(F);
    cosine(&t[0], &i[0])
}

/// Cosine similarity of two vectors (1 - the `<=>` distance).
#[pg_extern(immutable, parallel_safe, name = "clip_similarity")]
fn clip_similarity_vectors(a: Vector, b: Vector) -> f32 {
    if a.0.len() != b.0.len() {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
            format!("clip_similarity: different vector dimensions {} and {}", a.0.len(), b.0.len())
        );
    }
    cosine(&a.0, &b.0)
}

/// What produced this backend's vectors: model, dimensions, preprocessing, file checksums, ONNX Runtime version
/// and thread setting.
#[pg_extern(stable, parallel_safe)]
fn clip_info() -> JsonB {
    let info = with_model(|m| {
        let version = clip_core::runtime::load(&m.settings().onnxruntime_library)?;
        let man = m.manifest();
        let (text_loaded, image_loaded) = m.loaded_towers();
        let s = m.settings();
        Ok::<_, ClipError>(json!({
            "model": man.name,
            "weights": man.weights,
            "model_dir": s.model_dir,
            "embed_dim": man.embed_dim,
            "context_length": man.context_length,
            "image_size": man.image.size,
            "image_mean": man.image.mean,
            "image_std": man.image.std,
            "logit_scale": man.logit_scale,
            "files": {
                "text": {"path": man.files.text.path, "sha256": man.files.text.sha256},
                "image": {"path": man.files.image.path, "sha256": man.files.image.sha256},
                "tokenizer": {"path": man.files.tokenizer.path, "sha256": man.files.tokenizer.sha256},
            },
            "loaded": {"text": text_loaded, "image": image_loaded},
            "onnxruntime_version": version,
            "onnxruntime_library": s.onnxruntime_library,
            "intra_op_threads": s.intra_threads,
            "max_image_pixels": guc::max_image_pixels(),
            "extension_version": env!("CARGO_PKG_VERSION"),
        }))
    })
    .unwrap_or_else(|e| raise("clip_info", e));
    JsonB(info)
}

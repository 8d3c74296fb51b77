//! Comparing embeddings: similarity, zero-shot classification, and blending query vectors.
use clip_core::model::normalised;
use clip_core::{label_probabilities, ClipError};
use pgrx::prelude::*;

use crate::embed::{decode_for_model, embed_one_image, embed_one_text, embed_texts_in_batches};
use crate::errors::error;
use crate::model_cache::with_model;
use crate::registry::ModelName;
use crate::vector::Vector;

fn data_error(message: String) -> ! {
    error(PgSqlErrorCode::ERRCODE_DATA_EXCEPTION, message)
}

fn invalid_parameter(message: String) -> ! {
    error(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, message)
}

/// Cosine similarity of a text and an image under the loaded model: `1 - (text <=> image)` of their embeddings.
// C symbols of their own: installs not yet updated declare the older ones, which return `real` (below).
#[pg_extern(immutable, parallel_safe, name = "clip_similarity")]
fn clip_similarity_text_image_float8(text: &str, image: &[u8]) -> f64 {
    similarity_text_image(None, text, image)
}

/// Cosine similarity of a text and an image under the registered model `model`.
#[pg_extern(immutable, parallel_safe, name = "clip_similarity")]
fn clip_similarity_text_image_by(text: &str, image: &[u8], model: ModelName) -> f64 {
    similarity_text_image(Some(&model), text, image)
}

fn similarity_text_image(model: Option<&ModelName>, text: &str, image: &[u8]) -> f64 {
    const F: &str = "clip_similarity";
    let (choice, image) = decode_for_model(F, model, image);
    let image = embed_one_image(F, &choice, &image);
    cosine_similarity(&embed_one_text(F, &choice, text, None).0, &image.0)
}

/// Cosine similarity of two vectors: `1 - (a <=> b)`, NaN when either is the zero vector, as pgvector's `<=>`.
#[pg_extern(immutable, parallel_safe, name = "clip_similarity")]
fn clip_similarity_vectors_float8(a: Vector, b: Vector) -> f64 {
    if a.0.len() != b.0.len() {
        data_error(format!("clip_similarity: different vector dimensions {} and {}", a.0.len(), b.0.len()));
    }
    cosine_similarity(&a.0, &b.0)
}

/// The C symbols that installs of versions before 0.5.0 declare as clip_similarity returning `real`, so that such an
/// install keeps working between a new library and its ALTER EXTENSION UPDATE.
#[pg_extern(immutable, parallel_safe, sql = false)]
fn clip_similarity_text_image(text: &str, image: &[u8]) -> f32 {
    clip_similarity_text_image_float8(text, image) as f32
}

#[pg_extern(immutable, parallel_safe, sql = false)]
fn clip_similarity_vectors(a: Vector, b: Vector) -> f32 {
    clip_similarity_vectors_float8(a, b) as f32
}

/// The cosine similarity as pgvector's cosine distance computes it (`vector_cosine_distance`): float sums, a double
/// quotient clamped to [-1, 1], NaN for a zero vector. It equals `1 - (a <=> b)` to within float rounding (pgvector
/// is compiled to add the products in another order).
fn cosine_similarity(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut norm_a, mut norm_b) = (0f32, 0f32, 0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        norm_a += x * x;
        norm_b += y * y;
    }
    let similarity = dot as f64 / (norm_a as f64 * norm_b as f64).sqrt();
    if similarity.is_nan() { similarity } else { similarity.clamp(-1.0, 1.0) }
}

/// Zero-shot classification as open_clip does it: each label is put into `template` ("{}" marks where), and the
/// probabilities are the softmax of the model's logit scale times the cosine of image and label texts; a sigmoid
/// model (SigLIP) gives each label its own sigmoid of that logit plus the model's bias, which need not sum to 1.
/// Rows come out most probable first.
#[pg_extern(immutable, parallel_safe)]
fn clip_classify(
    image: &[u8],
    labels: Vec<Option<String>>,
    template: default!(&str, "'a photo of a {}'"),
) -> TableIterator<'static, (name!(label, String), name!(probability, f32))> {
    classify(None, image, labels, template)
}

/// Zero-shot classification under the registered model `model`.
#[pg_extern(immutable, parallel_safe, name = "clip_classify")]
fn clip_classify_by(
    image: &[u8],
    labels: Vec<Option<String>>,
    model: ModelName,
    template: default!(&str, "'a photo of a {}'"),
) -> TableIterator<'static, (name!(label, String), name!(probability, f32))> {
    classify(Some(&model), image, labels, template)
}

fn classify(
    model: Option<&ModelName>,
    image: &[u8],
    labels: Vec<Option<String>>,
    template: &str,
) -> TableIterator<'static, (name!(label, String), name!(probability, f32))> {
    const F: &str = "clip_classify";
    let labels: Vec<String> = labels
        .into_iter()
        .map(|l| l.unwrap_or_else(|| invalid_parameter(format!("{F}: labels must not contain NULL"))))
        .collect();
    if labels.is_empty() {
        invalid_parameter(format!("{F}: labels must not be empty"));
    }
    if !template.contains("{}") {
        invalid_parameter(format!("{F}: template {template:?} has no {{}} to put the label in"));
    }
    let prompts: Vec<String> = labels.iter().map(|l| template.replace("{}", l)).collect();
    let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let (choice, decoded) = decode_for_model(F, model, image);
    let image_embedding = embed_one_image(F, &choice, &decoded).0;
    let label_embeddings = embed_texts_in_batches(F, &choice, &prompts);
    let probabilities = with_model(F, &choice, |m| {
        Ok::<_, ClipError>(label_probabilities(m.manifest(), &image_embedding, &label_embeddings))
    });
    let mut rows: Vec<(String, f32)> = labels.into_iter().zip(probabilities).collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    TableIterator::new(rows)
}

/// One query vector from several: the normalised weighted sum of the normalised inputs. "Photos like this one,
/// but at night" is `clip_blend(ARRAY[photo.embedding, clip_embed_text('at night')], ARRAY[0.7, 0.3])`.
/// A negative weight steers away from a vector.
#[pg_extern(immutable, parallel_safe, name = "clip_blend")]
fn clip_blend_many(vectors: Vec<Option<Vector>>, weights: Vec<Option<f32>>) -> Vector {
    const F: &str = "clip_blend";
    if vectors.is_empty() || vectors.len() != weights.len() {
        invalid_parameter(format!("{F}: {} vectors and {} weights; give one weight per vector", vectors.len(), weights.len()));
    }
    let dim = vectors[0].as_ref().map_or(0, |v| v.0.len());
    // Only the weights' ratios matter: above 1 they are scaled down, since weights near f32's limit would
    // overflow the sum to infinity (and the result to NaN).
    let largest = weights.iter().flatten().fold(1f32, |m, w| if w.is_finite() { m.max(w.abs()) } else { m });
    let mut sum = vec![0f32; dim];
    for (index, (vector, weight)) in vectors.iter().zip(&weights).enumerate() {
        let (Some(vector), Some(weight)) = (vector, weight) else {
            invalid_parameter(format!("{F}: element {} is NULL", index + 1));
        };
        if vector.0.len() != dim {
            data_error(format!("{F}: different vector dimensions {dim} and {}", vector.0.len()));
        }
        if !weight.is_finite() {
            invalid_parameter(format!("{F}: weight {} is not finite", index + 1));
        }
        let weight = weight / largest;
        for (s, x) in sum.iter_mut().zip(normalised(&vector.0)) {
            *s += weight * x;
        }
    }
    let blended = normalised(&sum);
    if blended.iter().all(|x| *x == 0.0) {
        data_error(format!("{F}: the weighted sum is the zero vector"));
    }
    Vector(blended)
}

/// Two query vectors: `(1 - weight)` of `a` and `weight` of `b`.
#[pg_extern(immutable, parallel_safe, name = "clip_blend")]
fn clip_blend_two(a: Vector, b: Vector, weight: default!(f32, 0.5)) -> Vector {
    clip_blend_many(vec![Some(a), Some(b)], vec![Some(1.0 - weight), Some(weight)])
}

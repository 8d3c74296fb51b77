//! Embedding functions: one text or image, or an array of them in batched inferences.
//!
//! They are IMMUTABLE so that `ORDER BY embedding <=> clip_embed_text('...')` is evaluated once and served by an
//! HNSW index, and so that generated columns can use them. They are immutable for a given model: each takes a
//! registered model's name as `model => 'name'`, whose files never change under it (src/registry.rs); without
//! one they use clip.default_model, or the model in clip.model_dir, settings only a superuser changes.
use clip_core::preprocess::{decode, decode_reduced, DecodeLimits, DecodedImage};
use pgrx::prelude::*;

use crate::errors::{raise_element, OrRaise};
use crate::guc;
use crate::model_cache::{choose, choose_bulk, with_model, ModelChoice};
use crate::registry::ModelName;
use crate::vector::Vector;

fn decode_limits() -> DecodeLimits {
    DecodeLimits { max_pixels: guc::max_image_pixels() }
}

/// Decodes an image for `model` and says which model that is. With clip.jpeg_draft off, a bad image fails before
/// the model is looked up or loaded; with it on, a JPEG's reduced scale follows the model's input size, so the model
/// comes first.
pub fn decode_for_model(function: &'static str, model: Option<&ModelName>, bytes: &[u8]) -> (ModelChoice, DecodedImage) {
    if !guc::jpeg_draft() {
        let decoded = decode(bytes, &decode_limits()).or_raise(function);
        return (choose(function, model), decoded);
    }
    let choice = choose(function, model);
    let side = with_model(function, &choice, |m| Ok(m.preprocess_config().image_size));
    let decoded = decode_reduced(bytes, &decode_limits(), side).or_raise(function);
    (choice, decoded)
}

/// One text's embedding; `language` is a code for models that take one (NLLB), `None` for the model's default.
pub fn embed_one_text(function: &'static str, choice: &ModelChoice, text: &str, language: Option<&str>) -> Vector {
    check_for_interrupts!();
    let mut rows = with_model(function, choice, |m| m.embed_texts_in(&[text], language));
    Vector(rows.pop().expect("one text gives one row"))
}

pub fn embed_one_image(function: &'static str, choice: &ModelChoice, image: &DecodedImage) -> Vector {
    check_for_interrupts!();
    let mut rows = with_model(function, choice, |m| m.embed_images(std::slice::from_ref(image)));
    Vector(rows.pop().expect("one image gives one row"))
}

fn embed_encoded_image(function: &'static str, model: Option<&ModelName>, image: &[u8]) -> Vector {
    let (choice, decoded) = decode_for_model(function, model, image);
    embed_one_image(function, &choice, &decoded)
}

/// The L2-normalised CLIP embedding of a text. Texts longer than the model's context (77 tokens for CLIP) are
/// truncated as open_clip truncates them.
#[pg_extern(immutable, parallel_safe)]
pub fn clip_embed_text(input: &str) -> Vector {
    embed_one_text("clip_embed_text", &choose("clip_embed_text", None), input, None)
}

/// The embedding of a text in `language`, for models that mark a text's language with a code token (NLLB-CLIP:
/// 'eng_Latn', 'fra_Latn', 'zho_Hans', ...; `clip_info()->'languages'` lists them). The one-argument form uses the
/// model's default language; a model without languages refuses one.
#[pg_extern(immutable, parallel_safe, name = "clip_embed_text")]
pub fn clip_embed_text_in(input: &str, language: &str) -> Vector {
    embed_one_text("clip_embed_text", &choose("clip_embed_text", None), input, Some(language))
}

/// The embedding of a text by the registered model `model`, in `language` for a model that takes one (NULL: the
/// model's default). Not STRICT, for that NULL: a NULL text or model gives NULL.
#[pg_extern(immutable, parallel_safe, name = "clip_embed_text")]
pub fn clip_embed_text_by(
    input: Option<&str>,
    model: Option<ModelName>,
    language: default!(Option<&str>, "NULL"),
) -> Option<Vector> {
    Some(embed_one_text("clip_embed_text", &choose("clip_embed_text", Some(&model?)), input?, language))
}

/// The L2-normalised CLIP embedding of an image (JPEG, PNG, WebP, GIF, BMP or TIFF).
#[pg_extern(immutable, parallel_safe)]
pub fn clip_embed_image(image: &[u8]) -> Vector {
    embed_encoded_image("clip_embed_image", None, image)
}

/// The embedding of an image by the registered model `model`.
#[pg_extern(immutable, parallel_safe, name = "clip_embed_image")]
pub fn clip_embed_image_by(image: &[u8], model: ModelName) -> Vector {
    embed_encoded_image("clip_embed_image", Some(&model), image)
}

const TEXTS: &str = "clip_embed_texts";
const IMAGES: &str = "clip_embed_images";

/// Embeds an array of texts in batches of clip.batch_size, in input order; NULL elements give NULL.
#[pg_extern(immutable, parallel_safe)]
pub fn clip_embed_texts(inputs: Array<'_, &str>) -> Vec<Option<Vector>> {
    embed_texts_array(&choose(TEXTS, None), inputs)
}

/// Embeds an array of texts by the registered model `model`.
#[pg_extern(immutable, parallel_safe, name = "clip_embed_texts")]
pub fn clip_embed_texts_by(inputs: Array<'_, &str>, model: ModelName) -> Vec<Option<Vector>> {
    embed_texts_array(&choose(TEXTS, Some(&model)), inputs)
}

/// clip_search_internal.embed_texts_bulk(inputs, model), declared in sql/auto_embed.sql: clip_embed_texts for the
/// batches of the workers and clip_backfill, run on clip.execution_provider; `model` NULL is the default model.
#[pg_extern(sql = false)]
fn embed_texts_bulk(inputs: Option<Array<'_, &str>>, model: Option<ModelName>) -> Option<Vec<Option<Vector>>> {
    let inputs = inputs?;
    Some(embed_texts_array(&choose_bulk(TEXTS, model.as_ref()), inputs))
}

fn embed_texts_array(choice: &ModelChoice, inputs: Array<'_, &str>) -> Vec<Option<Vector>> {
    let inputs: Vec<Option<&str>> = inputs.iter().collect();
    let present: Vec<&str> = inputs.iter().flatten().copied().collect();
    place(&inputs, embed_texts_in_batches(TEXTS, choice, &present))
}

/// Embeds texts in batches of clip.batch_size (so within the superuser's ceiling). The model core checks for
/// interrupts between the texts and inside the tokenizing of a long one, and has a running inference terminated.
pub fn embed_texts_in_batches(function: &'static str, choice: &ModelChoice, texts: &[&str]) -> Vec<Vec<f32>> {
    let mut embedded = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(guc::batch_size()) {
        embedded.extend(with_model(function, choice, |m| m.embed_texts(chunk)));
    }
    embedded
}

/// Embeds an array of images in batches of clip.batch_size, in input order; NULL elements give NULL. A bad
/// element fails the call with an error that names its (1-based) index, also given as the DETAIL `element N`.
#[pg_extern(immutable, parallel_safe)]
pub fn clip_embed_images(inputs: Array<'_, &[u8]>) -> Vec<Option<Vector>> {
    embed_images_array(&choose(IMAGES, None), inputs)
}

/// Embeds an array of images by the registered model `model`.
#[pg_extern(immutable, parallel_safe, name = "clip_embed_images")]
pub fn clip_embed_images_by(inputs: Array<'_, &[u8]>, model: ModelName) -> Vec<Option<Vector>> {
    embed_images_array(&choose(IMAGES, Some(&model)), inputs)
}

/// clip_search_internal.embed_images_bulk(inputs, model), declared in sql/auto_embed.sql: clip_embed_images for
/// the batches of the workers and clip_backfill, run on clip.execution_provider; `model` NULL is the default model.
#[pg_extern(sql = false)]
fn embed_images_bulk(inputs: Option<Array<'_, &[u8]>>, model: Option<ModelName>) -> Option<Vec<Option<Vector>>> {
    let inputs = inputs?;
    Some(embed_images_array(&choose_bulk(IMAGES, model.as_ref()), inputs))
}

fn embed_images_array(choice: &ModelChoice, inputs: Array<'_, &[u8]>) -> Vec<Option<Vector>> {
    let inputs: Vec<Option<&[u8]>> = inputs.iter().collect();
    let present: Vec<(usize, &[u8])> =
        inputs.iter().enumerate().filter_map(|(i, bytes)| bytes.map(|b| (i + 1, b))).collect();
    let (limits, jpeg_draft) = (decode_limits(), guc::jpeg_draft());
    let mut embedded = Vec::with_capacity(present.len());
    for chunk in present.chunks(guc::batch_size()) {
        // Each image is decoded, preprocessed into the batch's tensor and freed at once: memory holds as many
        // decoded images as there are threads decoding them, clip.intra_op_threads, however large the batch.
        let (mut batch, threads) =
            with_model(IMAGES, choice, |m| Ok((m.image_batch(chunk.len()), m.settings().intra_threads)));
        let images: Vec<&[u8]> = chunk.iter().map(|&(_, bytes)| bytes).collect();
        if let Err((position, e)) = batch.push_encoded(&images, &limits, jpeg_draft, threads) {
            raise_element(IMAGES, chunk[position].0, e.into());
        }
        check_for_interrupts!();
        embedded.extend(with_model(IMAGES, choice, |m| m.embed_image_batch(batch)));
    }
    place(&inputs, embedded)
}

/// Puts the embeddings of the non-NULL inputs back at their positions.
fn place<T>(inputs: &[Option<T>], embedded: Vec<Vec<f32>>) -> Vec<Option<Vector>> {
    let mut embedded = embedded.into_iter();
    inputs.iter().map(|input| input.as_ref().map(|_| Vector(embedded.next().expect("one row per input")))).collect()
}

/// A text's token ids, start and end tokens included, truncated to the model's context length as the text tower's
/// input is, but not padded (the tower's input is padded to the context length, or to a batch's longest text).
#[pg_extern(immutable, parallel_safe)]
fn clip_tokenize(input: &str) -> Vec<i32> {
    tokenize(None, input)
}

/// A text's token ids under the registered model `model`.
#[pg_extern(immutable, parallel_safe, name = "clip_tokenize")]
fn clip_tokenize_by(input: &str, model: ModelName) -> Vec<i32> {
    tokenize(Some(&model), input)
}

fn tokenize(model: Option<&ModelName>, input: &str) -> Vec<i32> {
    const F: &str = "clip_tokenize";
    let ids = with_model(F, &choose(F, model), |m| m.tokenizer()?.encode(input, None));
    ids.into_iter().map(|id| id as i32).collect()
}

//! The model core end to end with the real ONNX Runtime library and the tiny fixture model: parity with
//! open_clip's reference embeddings, batching, lazy towers, and broken model directories.
use std::path::{Path, PathBuf};

use clip_core::preprocess::{decode, DecodeLimits};
use clip_core::{cosine, runtime, ClipError, ClipModel, ModelSettings};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The library scripts/setup.sh downloads; CLIP_ONNXRUNTIME_LIBRARY overrides it.
fn onnxruntime_library() -> PathBuf {
    std::env::var_os("CLIP_ONNXRUNTIME_LIBRARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".deps/onnxruntime/libonnxruntime.so.1.31.1"))
}

fn settings(model_dir: PathBuf) -> ModelSettings {
    ModelSettings { model_dir, onnxruntime_library: onnxruntime_library(), intra_threads: 1 }
}

fn tiny_model() -> ClipModel {
    ClipModel::open(settings(repo().join("tests/fixtures/tiny-model"))).expect("tiny model opens")
}

fn reference() -> serde_json::Value {
    let text = std::fs::read_to_string(repo().join("tests/fixtures/tiny-model/reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

#[test]
fn batched_text_embeddings_match_open_clip() {
    let reference = reference();
    let cases = reference["texts"].as_array().unwrap();
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    let mut model = tiny_model();
    // One batch of texts of different lengths: padding must not change any embedding.
    let batch = model.embed_texts(&texts).unwrap();
    for (case, got) in cases.iter().zip(&batch) {
        let similarity = cosine(got, &floats(&case["embedding"]));
        assert!(similarity >= 0.9999, "{:?}: {similarity}", case["text"]);
    }
    let single = model.embed_texts(&[texts[0]]).unwrap();
    assert!(cosine(&single[0], &batch[0]) > 0.99999);
}

#[test]
fn batched_image_embeddings_match_open_clip() {
    let reference = reference();
    let cases = reference["images"].as_array().unwrap();
    let images: Vec<_> = cases
        .iter()
        .map(|c| {
            let bytes = std::fs::read(repo().join("tests/fixtures/images").join(c["file"].as_str().unwrap())).unwrap();
            decode(&bytes, &DecodeLimits { max_pixels: 50_000_000 }).unwrap()
        })
        .collect();
    let mut model = tiny_model();
    assert_eq!(model.loaded_towers(), (false, false), "nothing loads before it is needed");
    let batch = model.embed_images(&images).unwrap();
    assert_eq!(model.loaded_towers(), (false, true), "embedding images loads the image tower only");
    for (case, got) in cases.iter().zip(&batch) {
        let similarity = cosine(got, &floats(&case["embedding"]));
        assert!(similarity >= 0.9999, "{:?}: {similarity}", case["file"]);
    }
}

#[test]
fn runtime_reports_the_library_version() {
    tiny_model().embed_texts(&["x"]).unwrap();
    assert_eq!(runtime::load(&onnxruntime_library()).unwrap(), "1.31.1");
}

fn copy_of_tiny_model(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("clip_core_test_{name}_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(repo().join("tests/fixtures/tiny-model")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    dir
}

#[test]
fn a_model_file_that_differs_from_its_checksum_is_refused() {
    let dir = copy_of_tiny_model("checksum");
    let mut bytes = std::fs::read(dir.join("text.onnx")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(dir.join("text.onnx"), bytes).unwrap();
    let err = ClipModel::open(settings(dir.clone())).unwrap().embed_texts(&["x"]).unwrap_err();
    assert!(matches!(err, ClipError::ModelInvalid { .. }), "{err}");
    assert!(err.to_string().contains("text.onnx has sha256"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_missing_or_broken_model_directory_is_a_clear_error() {
    let err = ClipModel::open(settings(PathBuf::new())).err().unwrap();
    assert!(matches!(err, ClipError::ModelNotConfigured), "{err}");

    let err = ClipModel::open(settings(PathBuf::from("/nonexistent/model"))).err().unwrap();
    assert!(matches!(err, ClipError::ModelMissing { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/model/manifest.json"), "{err}");

    let dir = copy_of_tiny_model("manifest");
    std::fs::write(dir.join("manifest.json"), "{ not json").unwrap();
    let err = ClipModel::open(settings(dir.clone())).err().unwrap();
    assert!(matches!(err, ClipError::ModelInvalid { .. }), "{err}");

    let manifest = std::fs::read_to_string(repo().join("tests/fixtures/tiny-model/manifest.json")).unwrap();
    std::fs::write(dir.join("manifest.json"), manifest.replace("\"text.onnx\"", "\"../text.onnx\"")).unwrap();
    let err = ClipModel::open(settings(dir.clone())).err().unwrap();
    assert!(err.to_string().contains("plain name"), "{err}");

    std::fs::write(dir.join("manifest.json"), &manifest).unwrap();
    std::fs::remove_file(dir.join("image.onnx")).unwrap();
    let mut model = ClipModel::open(settings(dir.clone())).unwrap();
    assert!(model.embed_texts(&["text still works"]).is_ok(), "the text tower does not need image.onnx");
    let pixel = std::fs::read(repo().join("tests/fixtures/images/tiny_rgb_1x1.png")).unwrap();
    let err = model.embed_images(&[decode(&pixel, &DecodeLimits { max_pixels: 10 }).unwrap()]).unwrap_err();
    assert!(matches!(err, ClipError::ModelMissing { .. }), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#![allow(dead_code)] // each test file uses a part of it
//! What the core's integration tests share: the fixture paths, the ONNX Runtime library and open_clip's reference
//! embeddings of the fixture texts and images.
use std::path::{Path, PathBuf};

use clip_core::preprocess::{decode, DecodeLimits};
use clip_core::runtime::Provider;
use clip_core::{ClipModel, ModelSettings, Weights};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The library scripts/setup.sh downloads, at the version versions.env names; CLIP_ONNXRUNTIME_LIBRARY overrides it.
pub fn onnxruntime_library() -> PathBuf {
    if let Some(path) = std::env::var_os("CLIP_ONNXRUNTIME_LIBRARY") {
        return PathBuf::from(path);
    }
    let versions = std::fs::read_to_string(repo().join("versions.env")).unwrap();
    let version =
        versions.lines().find_map(|line| line.strip_prefix("ORT_VERSION=")).expect("ORT_VERSION in versions.env");
    repo().join(format!(".deps/onnxruntime/libonnxruntime.so.{}", version.trim()))
}

/// One inference thread, weights in this process's memory.
pub fn settings(model_dir: PathBuf) -> ModelSettings {
    ModelSettings {
        model_dir,
        onnxruntime_library: onnxruntime_library(),
        intra_threads: 1,
        weights: Weights::Heap,
        provider: Provider::Cpu,
    }
}

/// open_clip's embeddings of the fixture texts and images by the fp32 tiny model (tests/fixtures/tiny-model).
pub fn reference() -> serde_json::Value {
    let text = std::fs::read_to_string(repo().join("tests/fixtures/tiny-model/reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

pub fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

/// A copy of the fixture model directory `tests/fixtures/<fixture>` to damage, in a temporary directory.
pub fn copy_of_fixture(fixture: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("clip_core_test_{name}_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(repo().join("tests/fixtures").join(fixture)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    dir
}

/// A fresh, empty cache of prepared weights.
pub fn empty_cache(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("clip_core_test_cache_{name}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

pub fn shared(model_dir: PathBuf, cache: &Path) -> ModelSettings {
    ModelSettings { weights: Weights::Shared { cache: cache.to_path_buf() }, ..settings(model_dir) }
}

/// Two texts and two images, in one batch each.
pub fn embed_both(model: &mut ClipModel) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let image = std::fs::read(repo().join("tests/fixtures/images/chelsea_rgb_451x300.jpg")).unwrap();
    let image = decode(&image, &DecodeLimits::default()).unwrap();
    let texts = model.embed_texts(&["a photo of a cat", "two dogs"]).unwrap();
    (texts, model.embed_images(&[image.clone(), image]).unwrap())
}

//! Towers whose weights are in a data file beside the graph (`<tower>.onnx.data`, the manifest's `data`): how models
//! over the 2 GB one ONNX file can hold are stored. A test binary of its own: one test changes the working
//! directory, which every thread of a process shares.
use std::path::Path;

use clip_core::{ClipError, ClipModel};

mod common;
use common::{copy_of_fixture, embed_both, empty_cache, repo, settings, shared};

#[test]
fn towers_with_their_weights_in_data_files_load_in_both_modes_and_only_from_verified_files() {
    // The tiny model exported again with --external-data: the same weights, in text.onnx.data and image.onnx.data.
    let external = repo().join("tests/fixtures/tiny-model-external");
    let inline = embed_both(&mut ClipModel::open(settings(repo().join("tests/fixtures/tiny-model"))).unwrap());
    assert_eq!(inline, embed_both(&mut ClipModel::open(settings(external.clone())).unwrap()), "from the heap");
    let cache = empty_cache("external");
    assert_eq!(inline, embed_both(&mut ClipModel::open(shared(external.clone(), &cache)).unwrap()), "prepared");
    std::fs::remove_dir_all(cache).unwrap();

    // The data file is checked against its own sha256.
    let dir = copy_of_fixture("tiny-model-external", "external");
    let mut bytes = std::fs::read(dir.join("text.onnx.data")).unwrap();
    bytes[100] ^= 1;
    std::fs::write(dir.join("text.onnx.data"), bytes).unwrap();
    let cache = empty_cache("external_damaged");
    for settings in [settings(dir.clone()), shared(dir.clone(), &cache)] {
        let err = ClipModel::open(settings).unwrap().embed_texts(&["x"]).unwrap_err();
        assert!(matches!(err, ClipError::ModelInvalid { .. }), "{err}");
        assert!(err.to_string().contains("text.onnx.data has sha256"), "{err}");
    }

    // A manifest whose data file is not the one the graph names: the graph's own name is not looked for on disk,
    // and a tower prepared from the right manifest is not reused for it.
    std::fs::copy(external.join("text.onnx.data"), dir.join("text.onnx.data")).unwrap();
    assert!(ClipModel::open(shared(dir.clone(), &cache)).unwrap().embed_texts(&["x"]).is_ok(), "intact again");
    std::fs::copy(external.join("text.onnx.data"), dir.join("weights.bin")).unwrap();
    let manifest = std::fs::read_to_string(external.join("manifest.json")).unwrap();
    std::fs::write(dir.join("manifest.json"), manifest.replace("\"text.onnx.data\"", "\"weights.bin\"")).unwrap();
    let refused = |cache: &Path| {
        for settings in [settings(dir.clone()), shared(dir.clone(), cache)] {
            let err = ClipModel::open(settings).unwrap().embed_texts(&["x"]).unwrap_err();
            assert!(matches!(err, ClipError::ModelInvalid { .. }), "{err}");
            assert!(err.to_string().contains("text.onnx.data not found"), "{err}");
        }
    };
    refused(&cache);
    // Nor, where the manifest gives no data file, in the working directory (a backend's is the data directory).
    let mut without: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    without["files"]["text"].as_object_mut().unwrap().remove("data");
    std::fs::write(dir.join("manifest.json"), without.to_string()).unwrap();
    let cwd = std::env::current_dir().unwrap();
    std::env::set_current_dir(&dir).unwrap();
    refused(&cache);
    std::env::set_current_dir(cwd).unwrap();
    let _ = std::fs::remove_dir_all(cache);
    std::fs::remove_dir_all(dir).unwrap();
}

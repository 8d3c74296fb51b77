//! Models in the layout of Immich's ONNX exports (tests/fixtures/immich, from tools/immich_models.py: tiny models of
//! each family with random weights, exported as Immich's exporter does): given a manifest by
//! `clip_core::immich::write_manifest`, their graphs (a batch of one, int32 ids, a fixed width) are fed
//! the extension's own tokens and pixels, and give open_clip's embeddings under the same weights.
use std::path::{Path, PathBuf};

use clip_core::immich::{self, Origin};
use clip_core::preprocess::{decode, DecodeLimits};
use clip_core::{cosine, ClipModel};

mod common;
use common::{floats, repo, settings};

const FAMILIES: [&str; 6] = ["clip", "clip-legacy", "siglip2", "mobileclip", "xlm-roberta", "nllb"];

/// A copy of a fixture's model folder, with its manifest written.
fn installed(family: &str, test: &str) -> (PathBuf, serde_json::Value) {
    let from = repo().join("tests/fixtures/immich").join(family);
    let dir = std::env::temp_dir().join(format!("clip_core_immich_{test}_{family}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_tree(&from.join("model"), &dir);
    immich::write_manifest(&dir, &Origin { name: family, source: "tests/fixtures/immich" }).unwrap();
    let reference = std::fs::read_to_string(from.join("reference.json")).unwrap();
    (dir, serde_json::from_str(&reference).unwrap())
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

fn ids(case: &serde_json::Value) -> Vec<i64> {
    case["ids"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect()
}

#[test]
fn token_ids_and_embeddings_equal_open_clip() {
    let limits = DecodeLimits { max_pixels: 50_000_000 };
    for family in FAMILIES {
        let (dir, reference) = installed(family, "parity");
        let mut model = ClipModel::open(settings(dir.clone())).unwrap();
        let spec = model.manifest().text.clone();
        let mut cases: Vec<(Option<&str>, &serde_json::Value)> =
            reference["texts"].as_array().unwrap().iter().map(|c| (None, c)).collect();
        if let Some(languages) = reference["languages"].as_object() {
            for (code, texts) in languages {
                cases.extend(texts.as_array().unwrap().iter().map(|c| (Some(code.as_str()), c)));
            }
        }
        let mut lowest = 1f32;
        for (language, case) in &cases {
            let text = case["text"].as_str().unwrap();
            let mut got = model.tokenizer().unwrap().encode(text, *language).unwrap();
            got.resize(spec.context_length, spec.pad_id);
            assert_eq!(got, ids(case), "{family}: {text:?} ({language:?})");
            let embedding = model.embed_texts_in(&[text], *language).unwrap().pop().unwrap();
            lowest = lowest.min(cosine(&embedding, &floats(&case["embedding"])));
        }
        assert!(lowest >= 0.9999, "{family}: texts at cosine {lowest}");
        // A batch runs one text at a time through a graph of a batch of one, with the same results.
        let texts: Vec<&str> = reference["texts"].as_array().unwrap().iter().map(|c| c["text"].as_str().unwrap()).collect();
        let batch = model.embed_texts(&texts).unwrap();
        for (text, row) in texts.iter().zip(&batch) {
            assert_eq!(row, &model.embed_texts(&[text]).unwrap()[0], "{family}: {text:?} in a batch");
        }
        let images = reference["images"].as_array().unwrap();
        let decoded: Vec<_> = images
            .iter()
            .map(|c| {
                let path = repo().join("tests/fixtures/images").join(c["file"].as_str().unwrap());
                decode(&std::fs::read(path).unwrap(), &limits).unwrap()
            })
            .collect();
        let mut lowest_image = 1f32;
        for (case, got) in images.iter().zip(model.embed_images(&decoded).unwrap()) {
            lowest_image = lowest_image.min(cosine(&got, &floats(&case["embedding"])));
        }
        assert!(lowest_image >= 0.999, "{family}: images at cosine {lowest_image}");
        eprintln!("{family}: {} texts, lowest cosine {lowest}; {} images, lowest {lowest_image}", cases.len(), images.len());
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn the_manifest_says_where_the_model_came_from() {
    let (dir, _) = installed("clip", "origin");
    let model = ClipModel::open(settings(dir.clone())).unwrap();
    assert_eq!(model.manifest().source.as_deref(), Some("tests/fixtures/immich"));
    assert_eq!(model.manifest().files.image.graph.path, immich::IMAGE_GRAPH);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn refuses_graphs_it_does_not_know() {
    let from = repo().join("tests/fixtures/immich/clip/model");
    let dir = std::env::temp_dir().join(format!("clip_core_immich_refuse_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_tree(&from, &dir);
    // The text tower where the image tower should be: int32 ids are not pixels.
    std::fs::copy(from.join(immich::TEXT_GRAPH), dir.join(immich::IMAGE_GRAPH)).unwrap();
    let err = immich::write_manifest(&dir, &Origin { name: "clip", source: "here" }).unwrap_err();
    assert!(err.contains("visual/model.onnx") && err.contains("not float32 pixels"), "{err}");
    // A truncated graph.
    copy_tree(&from, &dir);
    let graph = std::fs::read(from.join(immich::TEXT_GRAPH)).unwrap();
    std::fs::write(dir.join(immich::TEXT_GRAPH), &graph[..graph.len() / 3]).unwrap();
    let err = immich::write_manifest(&dir, &Origin { name: "clip", source: "here" }).unwrap_err();
    assert!(err.contains("textual/model.onnx") && err.contains("truncated"), "{err}");
    // A folder without the layout's files.
    std::fs::remove_file(dir.join(immich::PREPROCESS_FILE)).unwrap();
    let err = immich::write_manifest(&dir, &Origin { name: "clip", source: "here" }).unwrap_err();
    assert!(err.contains("preprocess_cfg.json"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

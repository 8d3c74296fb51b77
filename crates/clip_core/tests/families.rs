//! The model families besides OpenAI-vocabulary CLIP (tests/fixtures/families, from tools/family_models.py):
//! each tiny model's token ids equal open_clip's, and its text and image embeddings match open_clip's.
use clip_core::preprocess::{decode, DecodeLimits};
use clip_core::{cosine, label_probabilities, tokenizer, ClipError, ClipModel};

mod common;
use common::{copy_of_fixture, empty_cache, floats, repo, settings, shared};

const FAMILIES: [&str; 5] = ["siglip", "siglip2", "mobileclip", "xlm-roberta", "nllb"];

fn family(name: &str) -> (ClipModel, serde_json::Value) {
    let dir = repo().join("tests/fixtures/families").join(name);
    let reference = std::fs::read_to_string(dir.join("reference.json")).unwrap();
    (ClipModel::open(settings(dir)).expect("the fixture opens"), serde_json::from_str(&reference).unwrap())
}

#[test]
fn token_ids_equal_open_clip() {
    for name in FAMILIES {
        let (mut model, reference) = family(name);
        let spec = model.manifest().text.clone();
        let tokenizer = model.tokenizer().unwrap();
        for case in reference["texts"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let mut ids = tokenizer.encode(text, None).unwrap();
            // open_clip pads every text to the context (the extension does so where the tower needs it).
            ids.resize(spec.context_length, spec.pad_id);
            let expected: Vec<i64> = case["ids"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
            assert_eq!(ids, expected, "{name}: {text:?}");
        }
    }
}

#[test]
fn embeddings_match_open_clip() {
    let limits = DecodeLimits { max_pixels: 50_000_000 };
    for name in FAMILIES {
        let (mut model, reference) = family(name);
        let cases = reference["texts"].as_array().unwrap();
        let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
        for (case, got) in cases.iter().zip(model.embed_texts(&texts).unwrap()) {
            let similarity = cosine(&got, &floats(&case["embedding"]));
            assert!(similarity >= 0.9999, "{name}: {:?}: {similarity}", case["text"]);
        }
        let cases = reference["images"].as_array().unwrap();
        let images: Vec<_> = cases
            .iter()
            .map(|c| {
                let path = repo().join("tests/fixtures/images").join(c["file"].as_str().unwrap());
                decode(&std::fs::read(path).unwrap(), &limits).unwrap()
            })
            .collect();
        // Every format's pixels are Pillow's (JPEG through libjpeg-turbo as Pillow sets it up), lossy WebP's within
        // a level or two: what is left is the arithmetic of ONNX Runtime against PyTorch's.
        let mut lowest_jpeg = f32::INFINITY;
        for (case, got) in cases.iter().zip(model.embed_images(&images).unwrap()) {
            let file = case["file"].as_str().unwrap();
            let similarity = cosine(&got, &floats(&case["embedding"]));
            if file.ends_with(".jpg") {
                lowest_jpeg = lowest_jpeg.min(similarity);
            }
            assert!(similarity >= 0.99999, "{name}: {file}: {similarity}");
        }
        println!("{name}: lowest cosine of a JPEG against open_clip: {lowest_jpeg:.7}");
    }
}

#[test]
fn label_probabilities_follow_open_clip_logits() {
    let limits = DecodeLimits { max_pixels: 50_000_000 };
    for name in FAMILIES {
        let (mut model, reference) = family(name);
        let classify = &reference["classify"];
        let labels: Vec<&str> = classify["labels"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
        let label_embeddings = model.embed_texts(&labels).unwrap();
        let rows = classify["probabilities"].as_array().unwrap();
        assert_eq!(rows.len(), reference["images"].as_array().unwrap().len());
        for (image, expected) in reference["images"].as_array().unwrap().iter().zip(rows) {
            let path = repo().join("tests/fixtures/images").join(image["file"].as_str().unwrap());
            let decoded = decode(&std::fs::read(path).unwrap(), &limits).unwrap();
            let embedding = model.embed_images(&[decoded]).unwrap().pop().unwrap();
            let got = label_probabilities(model.manifest(), &embedding, &label_embeddings);
            for (g, e) in got.iter().zip(floats(expected)) {
                // Sigmoid probabilities of random weights are tiny (logit bias -10): compare relatively.
                assert!((g - e).abs() <= 0.01 * e.abs().max(*g), "{name}: {:?}: {got:?} vs {expected}", image["file"]);
            }
        }
        let sums: f32 = label_probabilities(model.manifest(), &label_embeddings[0], &label_embeddings).iter().sum();
        assert_eq!(model.manifest().logit_bias.is_some(), (sums - 1.0).abs() > 1e-3, "{name}: sigmoid or softmax");
    }
}

#[test]
fn a_manifest_of_an_unknown_format_or_with_a_foreign_pad_id_is_refused() {
    let dir = copy_of_fixture("families/siglip", "family_manifest");
    let manifest = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
    for (from, to, says) in [
        ("\"format_version\": 2", "\"format_version\": 3", "format_version 3"),
        ("\"pad_id\": 1", "\"pad_id\": 1000", "pad_id 1000"),
        ("\"context_length\": 64", "\"context_length\": 100000", "context_length (2..1024)"),
        ("\"resize_mode\": \"squash\"", "\"resize_mode\": \"longest\"", "unknown variant `longest`"),
        ("\"clean\": \"canonicalize\"", "\"clean\": \"none\"", "unknown variant `none`"),
    ] {
        assert!(manifest.contains(from), "{from}");
        std::fs::write(dir.join("manifest.json"), manifest.replace(from, to)).unwrap();
        let err = ClipModel::open(settings(dir.clone())).err().expect(to);
        assert!(matches!(err, ClipError::ModelInvalid { .. }) && err.to_string().contains(says), "{err}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn shared_weights_give_the_same_embeddings() {
    // The tiny towers have no initializer large enough for the prepared data file: it is written empty.
    let cache = empty_cache("families");
    let pixel = std::fs::read(repo().join("tests/fixtures/images/chelsea_rgb_451x300.jpg")).unwrap();
    let image = decode(&pixel, &DecodeLimits { max_pixels: 50_000_000 }).unwrap();
    for name in FAMILIES {
        let (mut heap, _) = family(name);
        let dir = repo().join("tests/fixtures/families").join(name);
        let mut prepared = ClipModel::open(shared(dir, &cache)).unwrap();
        assert_eq!(prepared.embed_texts(&["a cat"]).unwrap(), heap.embed_texts(&["a cat"]).unwrap(), "{name}");
        let (a, b) = (prepared.embed_images(std::slice::from_ref(&image)), heap.embed_images(std::slice::from_ref(&image)));
        assert_eq!(a.unwrap(), b.unwrap(), "{name}");
    }
    std::fs::remove_dir_all(cache).unwrap();
}

#[test]
fn a_language_template_without_one_text_and_one_code_is_refused() {
    let dir = copy_of_fixture("families/nllb", "template");
    let manifest = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
    for template in [r#"["{language}", "$A", "$A", "</s>"]"#, r#"["$A", "</s>"]"#] {
        let mut m: serde_json::Value = serde_json::from_str(&manifest).unwrap();
        m["text"]["languages"]["template"] = serde_json::from_str(template).unwrap();
        std::fs::write(dir.join("manifest.json"), m.to_string()).unwrap();
        let err = ClipModel::open(settings(dir.clone())).unwrap().embed_texts(&["x"]).unwrap_err();
        assert!(matches!(err, ClipError::ModelInvalid { .. }), "{err}");
        assert!(err.to_string().contains("one $A and one {language}"), "{template}: {err}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_language_code_marks_the_text_as_nllb_does() {
    let (mut model, reference) = family("nllb");
    let spec = model.manifest().text.clone();
    let cases = reference["languages"]["fra_Latn"].as_array().unwrap();
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    let tokenizer = model.tokenizer().unwrap();
    for case in cases {
        let mut ids = tokenizer.encode(case["text"].as_str().unwrap(), Some("fra_Latn")).unwrap();
        ids.resize(spec.context_length, spec.pad_id);
        let expected: Vec<i64> = case["ids"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        assert_eq!(ids, expected, "{:?}", case["text"]);
    }
    let french = model.embed_texts_in(&texts, Some("fra_Latn")).unwrap();
    for (case, got) in cases.iter().zip(&french) {
        assert!(cosine(got, &floats(&case["embedding"])) >= 0.9999, "{:?}", case["text"]);
    }
    // The default is the tokenizer's own (English), and another language gives another embedding.
    assert_eq!(model.embed_texts_in(&texts, Some("eng_Latn")).unwrap(), model.embed_texts(&texts).unwrap());
    assert!(cosine(&french[0], &model.embed_texts(&texts[..1]).unwrap()[0]) < 0.9999);

    let err = model.embed_texts_in(&["a cat"], Some("xx_Latn")).unwrap_err();
    assert!(matches!(err, ClipError::Language(_)) && err.to_string().contains("xx_Latn"), "{err}");
    let (mut siglip, _) = family("siglip");
    let err = siglip.embed_texts_in(&["a cat"], Some("fra_Latn")).unwrap_err();
    assert!(matches!(err, ClipError::Language(_)), "{err}");
}

#[test]
fn cutting_a_long_text_before_the_tokenizer_changes_no_id() {
    // The cleaned text is cut past the context before the tokenizers crate sees it (a MiB took it 1-1.5 s and
    // 200 MB): the ids equal those of the whole text, for words, one long word, a script without spaces and a run
    // of unknown characters before words.
    for name in FAMILIES.into_iter().filter(|f| *f != "mobileclip") {
        let (mut model, _) = family(name);
        let spec = model.manifest().text.clone();
        let path = repo().join("tests/fixtures/families").join(name).join("tokenizer.json");
        let mut whole = tokenizers::Tokenizer::from_file(path).unwrap();
        let truncation = tokenizers::TruncationParams { max_length: spec.context_length, ..Default::default() };
        whole.with_truncation(Some(truncation)).unwrap();
        let tokenizer = model.tokenizer().unwrap();
        let cut = spec.context_length * 64;
        // A run of characters the vocabulary lacks can be one token (Unigram fuses unknown characters): the cut
        // then moves further, so the words after the run still count.
        let unknown = format!("{}{}", "\u{13000}".repeat(cut + 500), " a photo of a cat".repeat(30));
        for unit in ["a photo of a cat on the sofa ", "abcd", "猫がソファの上で寝ている", unknown.as_str()] {
            let text = unit.repeat((3 * cut / unit.chars().count()).max(1));
            let expected: Vec<i64> =
                whole.encode(tokenizer::clean(&text, spec.clean), true).unwrap().get_ids().iter().map(|&id| i64::from(id)).collect();
            assert_eq!(tokenizer.encode(&text, None).unwrap(), expected, "{name}: {unit:?}");
            let mebibyte = unit.repeat((1 << 20) / unit.len());
            assert_eq!(tokenizer.encode(&mebibyte, None).unwrap(), expected, "{name}: {unit:?}");
        }
    }
}

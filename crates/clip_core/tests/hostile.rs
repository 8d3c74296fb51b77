//! The hostile-input corpus (tests/fixtures/hostile, written by tools/make_hostile_corpus.py): every file gives
//! the outcome expected.json names, and none panics, in decoding or in preprocessing (decoding without the guard
//! that turns a decoder panic into an error, so that such a panic fails the test).
use std::path::Path;

use clip_core::preprocess::{decode_unguarded, preprocess, DecodeLimits, ImageError, PreprocessConfig};

#[test]
fn every_hostile_file_gives_its_expected_outcome() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/hostile");
    let expected: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    assert!(expected.len() >= 30);
    let limits = DecodeLimits::default();
    for (name, want) in &expected {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        let got = match decode_unguarded(&bytes, &limits) {
            Ok(image) => {
                assert_eq!(preprocess(&image, &PreprocessConfig::openai(224)).len(), 3 * 224 * 224);
                "ok"
            }
            Err(ImageError::Empty) => "empty",
            Err(ImageError::NotAnImage) => "not_an_image",
            Err(ImageError::Corrupt(_)) => "corrupt",
            Err(ImageError::TooLarge { .. }) => "too_large",
            Err(ImageError::Unsupported(_)) => "unsupported",
        };
        let want = want.as_str().unwrap();
        assert!(want == got || want == "ok_or_error", "{name}: expected {want}, got {got}");
    }
}

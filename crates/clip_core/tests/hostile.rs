//! The hostile-input corpus (tests/fixtures/hostile, written by tools/make_hostile_corpus.py): every file gives
//! the outcome expected.json names, and none panics, in decoding or in preprocessing (decoding without the guard
//! that turns a decoder panic into an error, so that such a panic fails the test). JPEGs go through both paths:
//! the exact decoding and the reduced one of clip.jpeg_draft.
use std::path::Path;

use clip_core::preprocess::{decode_unguarded, preprocess, DecodeLimits, ImageError, PreprocessConfig};

/// The side the reduced path is asked for: small, so that every JPEG of the corpus of 32 pixels a side or more is
/// decoded at a reduced scale (1/2, 1/4 or 1/8).
const REDUCED_MIN_SIDE: u32 = 16;

#[test]
fn every_hostile_file_gives_its_expected_outcome() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/hostile");
    let expected: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    assert!(expected.len() >= 30);
    let limits = DecodeLimits::default();
    for (name, want) in &expected {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        for min_side in [None, Some(REDUCED_MIN_SIDE)] {
            let got = match decode_unguarded(&bytes, &limits, min_side) {
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
            let path = if min_side.is_some() { "reduced" } else { "exact" };
            assert!(want == got || want == "ok_or_error", "{name} ({path}): expected {want}, got {got}");
        }
    }
}

//! Arbitrary bytes through image decoding and preprocessing, as clip_embed_image sees them: any outcome but a
//! panic, a hang or an allocation beyond the pixel limit is a finding.
#![no_main]

use clip_core::preprocess::{decode_unguarded, preprocess, DecodeLimits, PreprocessConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A small limit keeps each input fast; the limit logic is the same at any size. A JPEG goes through the exact
    // decoding and the reduced one of clip.jpeg_draft, asked for a side small enough that most JPEGs are reduced.
    for min_side in [None, Some(16)] {
        if let Ok(image) = decode_unguarded(data, &DecodeLimits { max_pixels: 4_000_000 }, min_side) {
            let tensor = preprocess(&image, &PreprocessConfig::openai(224));
            assert_eq!(tensor.len(), 3 * 224 * 224);
            assert!(tensor.iter().all(|v| v.is_finite()));
        }
    }
});

//! Decoding and resizing of large JPEGs to a model's input, exact and with a reduced DCT scale (`decode_reduced`,
//! clip.jpeg_draft): the median milliseconds of each over the files, and how far the draft's 224x224 crops are from
//! the exact ones. bench/ingest.sh runs it beside Pillow on the same files.
//!
//!   cargo run --release -p clip_core --example decode_timing -- ROUNDS FILE...
//!
//! Prints one JSON object.
use std::time::Instant;

use clip_core::preprocess::{decode, decode_reduced, resized_crop_rgb, DecodeLimits, PreprocessConfig};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rounds: usize = args
        .first()
        .and_then(|r| r.parse().ok())
        .expect("usage: ROUNDS FILE...");
    let files: Vec<Vec<u8>> = args[1..]
        .iter()
        .map(|f| std::fs::read(f).unwrap_or_else(|e| panic!("{f}: {e}")))
        .collect();
    assert!(!files.is_empty(), "no files");
    let cfg = PreprocessConfig::openai(224);
    let limits = DecodeLimits::default();
    let (mut exact_ms, mut draft_ms) = (Vec::new(), Vec::new());
    let (mut max_diff, mut sum_diff, mut samples) = (0u8, 0u64, 0u64);
    let (mut size, mut draft_size) = ((0, 0), (0, 0));
    for _ in 0..rounds {
        for bytes in &files {
            let started = Instant::now();
            let image = decode(bytes, &limits).expect("a JPEG");
            let exact = resized_crop_rgb(&image, &cfg);
            exact_ms.push(started.elapsed().as_secs_f64() * 1e3);
            size = (image.width(), image.height());
            drop(image);
            let started = Instant::now();
            let reduced = decode_reduced(bytes, &limits, cfg.image_size).expect("a JPEG");
            let draft = resized_crop_rgb(&reduced, &cfg);
            draft_ms.push(started.elapsed().as_secs_f64() * 1e3);
            draft_size = (reduced.width(), reduced.height());
            for (a, b) in exact.iter().zip(&draft) {
                let d = a.abs_diff(*b);
                max_diff = max_diff.max(d);
                sum_diff += u64::from(d);
                samples += 1;
            }
        }
    }
    println!(
        "{{\"files\": {}, \"rounds\": {rounds}, \"size\": \"{}x{}\", \"draft_size\": \"{}x{}\", \
         \"exact_ms\": {:.1}, \"draft_ms\": {:.1}, \"crop_max_diff\": {max_diff}, \"crop_mean_diff\": {:.3}}}",
        files.len(),
        size.0,
        size.1,
        draft_size.0,
        draft_size.1,
        median(exact_ms),
        median(draft_ms),
        sum_diff as f64 / samples as f64
    );
}

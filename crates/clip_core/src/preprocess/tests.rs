//! Tests of decoding and preprocessing against open_clip's reference crops, written by
//! `tools/make_fixture_images.py` into `tests/fixtures/images/`.

use std::path::PathBuf;

use super::*;

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/images")
}

fn read_fixture(name: &str) -> Vec<u8> {
    let path = fixtures_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn read_reference_png(rel: &str, size: u32) -> Vec<u8> {
    let img = image::load_from_memory_with_format(&read_fixture(rel), image::ImageFormat::Png)
        .unwrap_or_else(|e| panic!("{rel}: {e}"));
    assert_eq!((img.width(), img.height()), (size, size), "{rel}");
    img.into_rgb8().into_raw()
}

fn summary() -> serde_json::Value {
    serde_json::from_slice(&read_fixture("reference/summary.json")).expect("summary.json")
}

fn diff_stats(a: &[u8], b: &[u8]) -> (u8, f64) {
    assert_eq!(a.len(), b.len());
    let mut max = 0u8;
    let mut sum = 0u64;
    for (&x, &y) in a.iter().zip(b) {
        let d = x.abs_diff(y);
        max = max.max(d);
        sum += u64::from(d);
    }
    (max, sum as f64 / a.len() as f64)
}

fn mode_name(m: PilMode) -> &'static str {
    m.as_str()
}

/// Every fixture against open_clip: lossless formats and JPEG byte for byte, lossy WebP within a
/// few levels.
#[test]
fn preprocess_fixtures_match_open_clip() {
    let summary = summary();
    let fixtures = summary["fixtures"].as_array().expect("fixtures");
    assert!(fixtures.len() >= 15);
    let cfg = PreprocessConfig::openai(224);
    let mut failures = Vec::new();
    println!(
        "{:46} {:5} {:5} {:>7} {:>4} {:>8} {:>11}",
        "fixture", "fmt", "mode", "compare", "max", "mean", "tensor mean"
    );
    for f in fixtures {
        let name = f["file"].as_str().unwrap();
        let img = decode(&read_fixture(name), &DecodeLimits::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let pil_mode = f["pil_mode"].as_str().unwrap();
        if mode_name(img.mode()) != pil_mode {
            failures.push(format!(
                "{name}: mode {:?}, Pillow says {pil_mode}",
                img.mode()
            ));
        }
        let (ref_key, mean_key) = if f.get("expected").is_some() {
            ("expected", "expected_tensor_mean")
        } else {
            ("reference", "tensor_mean")
        };
        if let (Some(w), Some(h)) = (f.get("expected_width"), f.get("expected_height")) {
            assert_eq!(
                (u64::from(img.width()), u64::from(img.height())),
                (w.as_u64().unwrap(), h.as_u64().unwrap()),
                "{name}: size after orientation"
            );
        }
        let reference = read_reference_png(f[ref_key].as_str().unwrap(), 224);
        let crop = resized_crop_rgb(&img, &PreprocessConfig::openai(224));
        let (max, mean) = diff_stats(&crop, &reference);
        let tensor = preprocess(&img, &cfg);
        let tmean = tensor.iter().map(|&v| f64::from(v)).sum::<f64>() / tensor.len() as f64;
        let ref_tmean = f[mean_key].as_f64().unwrap();
        let compare = f["compare"].as_str().unwrap();
        if f.get("expected").is_some() {
            // What open_clip itself gives (it decodes differently on purpose here).
            let actual = read_reference_png(f["reference"].as_str().unwrap(), 224);
            let (amax, amean) = diff_stats(&crop, &actual);
            println!("  ({name}: vs open_clip's own crop: max {amax}, mean {amean:.4})");
        }
        println!(
            "{name:46} {:5} {:5} {compare:>7} {max:>4} {mean:>8.4} {:>+11.6}",
            img.format(),
            mode_name(img.mode()),
            tmean - ref_tmean
        );
        match compare {
            "exact" => {
                if max != 0 {
                    failures.push(format!("{name}: not exact (max {max}, mean {mean:.4})"));
                }
                if (tmean - ref_tmean).abs() > 1e-5 {
                    failures.push(format!("{name}: tensor mean {tmean} vs {ref_tmean}"));
                }
            }
            _ => {
                if max > 4 || mean >= 1.0 {
                    failures.push(format!("{name}: max {max}, mean {mean:.4} (approx)"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The resize modes and filters of the other model families (squash for SigLIP, bilinear at 256 px for MobileCLIP)
/// against open_clip's transforms, byte for byte, on the fixtures compared exactly.
#[test]
fn other_resize_modes_and_filters_match_open_clip() {
    let configs = [
        ("squash_bicubic_224", ResizeMode::Squash, Interpolation::Bicubic, 224),
        ("shortest_bilinear_256", ResizeMode::Shortest, Interpolation::Bilinear, 256),
    ];
    let summary = summary();
    let mut compared = 0;
    for f in summary["fixtures"].as_array().expect("fixtures") {
        let Some(others) = f.get("other_transforms") else { continue };
        let name = f["file"].as_str().unwrap();
        let img = decode(&read_fixture(name), &DecodeLimits::default()).unwrap();
        for (key, resize_mode, interpolation, image_size) in configs {
            let cfg = PreprocessConfig { image_size, resize_mode, interpolation, ..PreprocessConfig::openai(image_size) };
            let reference = read_reference_png(others[key].as_str().unwrap(), image_size);
            let (max, mean) = diff_stats(&resized_crop_rgb(&img, &cfg), &reference);
            assert_eq!(max, 0, "{name} {key}: max {max}, mean {mean:.4}");
            compared += 1;
        }
    }
    assert!(compared >= 30, "{compared} crops compared");
}

#[test]
fn preprocess_tensor_is_normalised_crop() {
    let img = decode(
        &read_fixture("chelsea_rgb_200x133.png"),
        &DecodeLimits::default(),
    )
    .unwrap();
    let cfg = PreprocessConfig::openai(224);
    let crop = resized_crop_rgb(&img, &PreprocessConfig::openai(224));
    let t = preprocess(&img, &cfg);
    assert_eq!(t.len(), 3 * 224 * 224);
    for c in 0..3 {
        for i in [0usize, 1, 777, 224 * 224 - 1] {
            let v = crop[i * 3 + c];
            let expected = (f32::from(v) / 255.0 - cfg.mean[c]) / cfg.std[c];
            assert_eq!(t[c * 224 * 224 + i], expected);
        }
    }
    let mut out = vec![f32::NAN; cfg.tensor_len()];
    preprocess_into(&img, &cfg, &mut out);
    assert_eq!(out, t);
}

#[test]
fn preprocess_other_sizes_and_tiny_images() {
    let img = decode(&read_fixture("tiny_rgb_1x1.png"), &DecodeLimits::default()).unwrap();
    assert_eq!((img.width(), img.height()), (1, 1));
    let crop = resized_crop_rgb(&img, &PreprocessConfig::openai(224));
    assert!(crop.chunks_exact(3).all(|p| p == [200, 30, 90]));
    assert_eq!(resized_crop_rgb(&img, &PreprocessConfig::openai(336)).len(), 336 * 336 * 3);
    assert!(resized_crop_rgb(&img, &PreprocessConfig::openai(0)).is_empty());

    // A 10000x10 strip (within the pixel limit) is upscaled to 224 rows; only the centre window of
    // the 224000-pixel-wide resize is computed.
    let (w, h) = (10000u32, 10u32);
    let data: Vec<u8> = (0..w * h)
        .flat_map(|i| {
            let (x, y) = (i % w, i / w);
            [(x % 256) as u8, (y * 25) as u8, ((x / 40) % 256) as u8]
        })
        .collect();
    let strip = DecodedImage::from_rgb8(w, h, data).unwrap();
    let crop = resized_crop_rgb(&strip, &PreprocessConfig::openai(224));
    assert_eq!(crop.len(), 224 * 224 * 3);
    let t = preprocess(&strip, &PreprocessConfig::openai(384));
    assert_eq!(t.len(), 3 * 384 * 384);
    assert!(t.iter().all(|v| v.is_finite()));

    assert!(DecodedImage::from_rgb8(2, 2, vec![0; 11]).is_none());
    assert!(DecodedImage::from_rgb8(0, 2, vec![]).is_none());
}

#[test]
fn preprocess_applies_exif_orientation() {
    let img = decode(
        &read_fixture("coffee_exif_orientation6_300x200.jpg"),
        &DecodeLimits::default(),
    )
    .unwrap();
    assert_eq!((img.width(), img.height()), (200, 300));
}

// ---------------------------------------------------------------------------------------------
// Errors

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(tag: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(tag);
    out.extend_from_slice(payload);
    let mut crc_input = tag.to_vec();
    crc_input.extend_from_slice(payload);
    out.extend_from_slice(&crc32(&crc_input).to_be_bytes());
    out
}

/// A PNG whose header declares `width`x`height` RGBA pixels, with a tiny (invalid) IDAT.
fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(png_chunk(b"IHDR", &ihdr));
    out.extend(png_chunk(
        b"IDAT",
        &[0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    ));
    out.extend(png_chunk(b"IEND", b""));
    out
}

/// A JPEG whose frame header declares `width`x`height`, followed by nothing.
fn jpeg_declaring(width: u16, height: u16) -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x11, 0x08];
    out.extend_from_slice(&height.to_be_bytes());
    out.extend_from_slice(&width.to_be_bytes());
    out.extend_from_slice(&[3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
    out
}

#[test]
fn preprocess_rejects_empty_and_unknown_data() {
    let limits = DecodeLimits::default();
    assert!(matches!(decode(&[], &limits), Err(ImageError::Empty)));
    // Deterministic pseudo-random bytes.
    let mut x = 0x1234_5678u32;
    let random: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect();
    assert!(matches!(
        decode(&random, &limits),
        Err(ImageError::NotAnImage)
    ));
    assert!(matches!(
        decode(b"hello world", &limits),
        Err(ImageError::NotAnImage)
    ));
    assert!(matches!(decode(&[0], &limits), Err(ImageError::NotAnImage)));
}

#[test]
fn preprocess_reports_unsupported_formats() {
    let limits = DecodeLimits::default();
    let cases: &[(&[u8], &str)] = &[
        (b"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"10\" height=\"10\"/>", "SVG"),
        (
            b"\xEF\xBB\xBF<?xml version=\"1.0\"?>\n<!DOCTYPE svg PUBLIC \"-//W3C//DTD SVG 1.1//EN\" \"x\">\n<svg/>",
            "SVG",
        ),
        (b"%PDF-1.7\n%\xE2\xE3\xCF\xD3\n1 0 obj\n", "PDF"),
        (b"\0\0\0\x18ftypheic\0\0\0\0mif1heic", "HEIC"),
        (b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf", "AVIF"),
        (b"\0\0\x01\0\x01\0\x10\x10\0\0\x01\0 \0", "ICO"),
    ];
    for (bytes, name) in cases {
        match decode(bytes, &limits) {
            Err(ImageError::Unsupported(msg)) => {
                assert!(msg.contains(name), "{name}: {msg}")
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn preprocess_rejects_huge_declared_sizes_before_decoding() {
    let limits = DecodeLimits::default();
    match decode(&png_declaring(100_000, 100_000), &limits) {
        Err(ImageError::TooLarge {
            width: 100_000,
            height: 100_000,
            max_pixels,
        }) => assert_eq!(max_pixels, limits.max_pixels),
        other => panic!("{other:?}"),
    }
    match decode(&jpeg_declaring(65_000, 60_000), &limits) {
        Err(ImageError::TooLarge {
            width: 65_000,
            height: 60_000,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    // A GIF logical screen of 65535x65535.
    let mut gif = b"GIF89a".to_vec();
    gif.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0x3B]);
    assert!(matches!(
        decode(&gif, &limits),
        Err(ImageError::TooLarge { .. })
    ));
    // A BMP header of 50000x50000.
    let mut bmp = b"BM".to_vec();
    bmp.extend_from_slice(&[0; 12]);
    bmp.extend_from_slice(&40u32.to_le_bytes());
    bmp.extend_from_slice(&50_000i32.to_le_bytes());
    bmp.extend_from_slice(&50_000i32.to_le_bytes());
    bmp.extend_from_slice(&[1, 0, 24, 0]);
    bmp.extend_from_slice(&[0; 24]);
    assert!(matches!(
        decode(&bmp, &limits),
        Err(ImageError::TooLarge { .. })
    ));

    // A WebP (VP8X) canvas of 20000x20000.
    let mut webp = b"RIFF\x16\0\0\0WEBPVP8X\x0a\0\0\0\0\0\0\0".to_vec();
    webp.extend_from_slice(&(20_000u32 - 1).to_le_bytes()[..3]);
    webp.extend_from_slice(&(20_000u32 - 1).to_le_bytes()[..3]);
    assert!(matches!(
        decode(&webp, &limits),
        Err(ImageError::TooLarge {
            width: 20_000,
            height: 20_000,
            ..
        })
    ));
    // A TIFF of 100000x100000 (one IFD, no pixel data).
    let mut tiff = b"II*\0\x08\0\0\0".to_vec();
    let entries: [(u16, u16, u32); 9] = [
        (256, 4, 100_000), // ImageWidth, LONG
        (257, 4, 100_000), // ImageLength
        (258, 3, 8),       // BitsPerSample, SHORT
        (259, 3, 1),       // Compression: none
        (262, 3, 1),       // PhotometricInterpretation: BlackIsZero
        (273, 4, 8),       // StripOffsets
        (277, 3, 1),       // SamplesPerPixel
        (278, 4, 100_000), // RowsPerStrip
        (279, 4, 1),       // StripByteCounts
    ];
    tiff.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    for (tag, typ, value) in entries {
        tiff.extend_from_slice(&tag.to_le_bytes());
        tiff.extend_from_slice(&typ.to_le_bytes());
        tiff.extend_from_slice(&1u32.to_le_bytes());
        tiff.extend_from_slice(&value.to_le_bytes());
    }
    tiff.extend_from_slice(&0u32.to_le_bytes());
    match decode(&tiff, &limits) {
        Err(ImageError::TooLarge {
            width: 100_000,
            height: 100_000,
            ..
        }) => {}
        other => panic!("tiff: {other:?}"),
    }

    // Real files against a small limit.
    let small = DecodeLimits { max_pixels: 10_000 };
    for name in [
        "chelsea_rgb_451x300.jpg",
        "moon_l_512x512.png",
        "coffee_lossy_300x200.webp",
        "chelsea_p_transparent_240x160.gif",
        "chelsea_rgb_150x100.bmp",
        "astronaut_rgb_lzw_128x128.tiff",
    ] {
        match decode(&read_fixture(name), &small) {
            Err(ImageError::TooLarge { .. }) => {}
            other => panic!("{name}: {other:?}"),
        }
    }
    // Exactly at the limit is accepted.
    let img = decode(
        &read_fixture("chelsea_rgb_150x100.bmp"),
        &DecodeLimits { max_pixels: 15_000 },
    )
    .unwrap();
    assert_eq!((img.width(), img.height()), (150, 100));
}

#[test]
fn preprocess_rejects_truncated_and_damaged_files_without_panicking() {
    let limits = DecodeLimits::default();
    for name in [
        "chelsea_rgb_200x133.png",
        "chelsea_p_trns_451x300.png",
        "chelsea_rgb_451x300.jpg",
        "rocket_rgb_progressive_640x427.jpg",
        "chelsea_p_transparent_240x160.gif",
        "chelsea_rgb_150x100.bmp",
        "astronaut_rgb_lzw_128x128.tiff",
        "coffee_lossy_300x200.webp",
        "astronaut_lossless_posterized_300x250.webp",
    ] {
        let bytes = read_fixture(name);
        for cut in [bytes.len() / 2, bytes.len() * 9 / 10, 40, 20, 8] {
            match decode(&bytes[..cut], &limits) {
                Err(ImageError::Corrupt(_) | ImageError::NotAnImage) => {}
                other => panic!("{name} cut at {cut}: {other:?}"),
            }
        }
    }
    // Corrupted (not truncated) data must not panic either; any outcome but a panic is fine.
    for name in [
        "chelsea_rgb_200x133.png",
        "chelsea_rgb_451x300.jpg",
        "chelsea_p_transparent_240x160.gif",
        "coffee_lossy_300x200.webp",
        "astronaut_rgb_lzw_128x128.tiff",
        "coins_p_200x158.bmp",
    ] {
        let mut bytes = read_fixture(name);
        let n = bytes.len();
        for i in (n / 10..n).step_by(n / 7) {
            bytes[i] ^= 0x5A;
        }
        let _ = decode(&bytes, &limits).map(|img| resized_crop_rgb(&img, &PreprocessConfig::openai(224)));
    }
}

#[test]
fn preprocess_large_jpeg() {
    use image::ImageEncoder;
    let (w, h) = (4000u32, 3000u32);
    let mut rgb = vec![0u8; (w * h * 3) as usize];
    for (i, p) in rgb.chunks_exact_mut(3).enumerate() {
        let (x, y) = (i as u32 % w, i as u32 / w);
        p.copy_from_slice(&[(x / 16) as u8, (y / 12) as u8, ((x ^ y) & 0xFF) as u8]);
    }
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85)
        .write_image(&rgb, w, h, image::ExtendedColorType::Rgb8)
        .unwrap();
    let img = decode(&jpeg, &DecodeLimits::default()).unwrap();
    assert_eq!((img.width(), img.height()), (w, h));
    let t = preprocess(&img, &PreprocessConfig::openai(224));
    assert_eq!(t.len(), 3 * 224 * 224);
}

/// Mutation fuzzing of every fixture (random byte changes and truncations): decoding and
/// preprocessing must return, never panic. `cargo test -p clip_core preprocess_fuzz -- --ignored`
#[test]
#[ignore = "slow; run on demand"]
fn preprocess_fuzz_fixtures() {
    let summary = summary();
    let limits = DecodeLimits {
        max_pixels: 4_000_000,
    };
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let iterations: usize = std::env::var("FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    for f in summary["fixtures"].as_array().unwrap() {
        let name = f["file"].as_str().unwrap();
        let original = read_fixture(name);
        let (mut ok, mut err) = (0, 0);
        for _ in 0..iterations {
            let mut bytes = original.clone();
            let n = bytes.len();
            match next() % 3 {
                0 => {
                    for _ in 0..1 + next() % 8 {
                        let i = (next() % n as u64) as usize;
                        bytes[i] = next() as u8;
                    }
                }
                1 => {
                    // Mostly in the header.
                    for _ in 0..1 + next() % 4 {
                        let i = (next() % (n.min(200) as u64)) as usize;
                        bytes[i] = next() as u8;
                    }
                }
                _ => bytes.truncate((next() % n as u64) as usize),
            }
            match decode(&bytes, &limits) {
                Ok(img) => {
                    ok += 1;
                    let _ = resized_crop_rgb(&img, &PreprocessConfig::openai(224));
                }
                Err(_) => err += 1,
            }
        }
        println!("{name:46} ok {ok:4} err {err:4}");
    }
}

/// A PNG written here, to make the cases no fixture has: samples of `color_type` (PNG's numbering) at
/// `bit_depth` bits, big-endian, unfiltered; Adam7-interlaced when `interlaced`; `trns` is a tRNS chunk.
fn png_of(
    (width, height): (usize, usize),
    color_type: u8,
    bit_depth: u8,
    interlaced: bool,
    trns: Option<&[u8]>,
    samples: &[u8],
) -> Vec<u8> {
    use std::io::Write;
    let channels = match color_type {
        0 => 1,
        2 => 3,
        4 => 2,
        _ => 4,
    };
    let pixel = channels * usize::from(bit_depth) / 8;
    assert_eq!(samples.len(), width * height * pixel);
    // Adam7's passes as (x0, y0, dx, dy); one pass of every pixel when not interlaced.
    let passes: &[(usize, usize, usize, usize)] = if interlaced {
        &[(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    } else {
        &[(0, 0, 1, 1)]
    };
    let mut raw = Vec::new();
    for &(x0, y0, dx, dy) in passes {
        if x0 >= width {
            continue; // a pass without columns has no rows either
        }
        for y in (y0..height).step_by(dy) {
            raw.push(0); // filter: none
            for x in (x0..width).step_by(dx) {
                raw.extend_from_slice(&samples[(y * width + x) * pixel..][..pixel]);
            }
        }
    }
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    zlib.write_all(&raw).unwrap();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&(width as u32).to_be_bytes());
    ihdr.extend_from_slice(&(height as u32).to_be_bytes());
    ihdr.extend_from_slice(&[bit_depth, color_type, 0, 0, u8::from(interlaced)]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8; 4], data: &[u8]| {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        png.extend_from_slice(kind);
        png.extend_from_slice(data);
        png.extend_from_slice(&crc.sum().to_be_bytes());
    };
    chunk(b"IHDR", &ihdr);
    if let Some(trns) = trns {
        chunk(b"tRNS", trns);
    }
    chunk(b"IDAT", &zlib.finish().unwrap());
    chunk(b"IEND", &[]);
    png
}

/// 16-bit PNGs of every colour type decode to the high byte of each sample, as Pillow reads RGB, RGBA and
/// grey+alpha ones (and as the module docs say of grey): interlaced or not, with a tRNS colour key (which leaves
/// the mode without alpha) or not.
#[test]
fn sixteen_bit_pngs_decode_to_the_high_byte_of_each_sample() {
    let (width, height) = (13, 11);
    let mut state = 0x2545_f491_u32;
    let mut next_byte = || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        (state >> 24) as u8
    };
    // (PNG colour type, channels, Pillow's mode, channels kept)
    let cases = [(0, 1, PilMode::I16, 1), (2, 3, PilMode::Rgb, 3), (4, 2, PilMode::Rgba, 2), (6, 4, PilMode::Rgba, 4)];
    for (color_type, channels, mode, kept) in cases {
        let samples: Vec<u8> = (0..width * height * channels * 2).map(|_| next_byte()).collect();
        let high: Vec<u8> = samples.chunks(2).map(|s| s[0]).collect();
        // A colour key equal to the first pixel, so that the decoder's tRNS expansion meets it.
        let key = (color_type == 0 || color_type == 2).then(|| samples[..channels * 2].to_vec());
        for trns in [None, key.as_deref()] {
            for interlaced in [false, true] {
                let png = png_of((width, height), color_type, 16, interlaced, trns, &samples);
                let img = decode(&png, &DecodeLimits::default()).unwrap();
                let case = format!("colour type {color_type}, tRNS {}, interlaced {interlaced}", trns.is_some());
                assert_eq!((img.mode(), img.layout.channels()), (mode, kept), "{case}");
                assert_eq!(img.data, high, "{case}");
            }
        }
    }
}

thread_local! {
    /// How many times this test thread's interrupt check ran ([`count_check`]).
    static CHECKS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// An interrupt check that counts its runs and lets the work go on.
fn count_check() {
    CHECKS.set(CHECKS.get() + 1);
}

/// An interrupt check that stops the work, as PostgreSQL's error does.
fn stop_check() {
    panic!("stopped");
}

/// Decoding a PNG runs the interrupt check between its rows, and a check that unwinds stops it.
#[test]
fn png_decoding_runs_the_interrupt_check_between_rows() {
    let (width, height) = (64, 48);
    let png = png_of((width, height), 2, 8, false, None, &vec![90; width * height * 3]);
    crate::interrupt::set_check(count_check);
    decode(&png, &DecodeLimits::default()).unwrap();
    crate::interrupt::set_check(stop_check);
    // decode's guard turns a decoder's panic into an error, but lets the check's unwind through.
    let stopped = std::panic::catch_unwind(|| decode(&png, &DecodeLimits::default()));
    crate::interrupt::set_check(|| {});
    assert!(CHECKS.get() >= height, "{} checks for {height} rows", CHECKS.get());
    assert_eq!(stopped.unwrap_err().downcast_ref::<&str>(), Some(&"stopped"));
}

/// A pending interrupt stops libjpeg between rows and runs the check; a check that lets the work go on gets the
/// image decoded again, as it would have been.
#[test]
fn jpeg_decoding_stops_at_a_pending_interrupt() {
    let jpeg = read_fixture("rocket_rgb_progressive_640x427.jpg");
    let plain = decode(&jpeg, &DecodeLimits::default()).unwrap();
    crate::interrupt::set_pending(|| true);
    crate::interrupt::set_check(stop_check);
    let stopped = std::panic::catch_unwind(|| decode(&jpeg, &DecodeLimits::default()));
    assert_eq!(stopped.unwrap_err().downcast_ref::<&str>(), Some(&"stopped"));
    crate::interrupt::set_check(count_check);
    let again = decode(&jpeg, &DecodeLimits::default()).unwrap();
    crate::interrupt::set_check(|| {});
    assert_eq!(CHECKS.get(), 1);
    assert_eq!(again.data, plain.data);
}

/// A progressive JPEG whose last scan is repeated past the limit of scans is refused, not decoded for long.
#[test]
fn a_jpeg_of_too_many_scans_is_refused() {
    let jpeg = read_fixture("rocket_rgb_progressive_640x427.jpg");
    let last_scan = jpeg.windows(2).rposition(|w| w == [0xFF, 0xDA]).unwrap();
    let body = &jpeg[..jpeg.len() - 2];
    let mut many = body.to_vec();
    for _ in 0..1000 {
        many.extend_from_slice(&body[last_scan..]);
    }
    many.extend_from_slice(&[0xFF, 0xD9]);
    match decode(&many, &DecodeLimits::default()) {
        Err(ImageError::Corrupt(m)) => assert!(m.contains("more than 1000 scans"), "{m}"),
        other => panic!("{other:?}"),
    }
    // 500 repeats are decoded (libjpeg-turbo warns of the progression, as for Pillow).
    let mut some = body.to_vec();
    for _ in 0..500 {
        some.extend_from_slice(&body[last_scan..]);
    }
    some.extend_from_slice(&[0xFF, 0xD9]);
    decode(&some, &DecodeLimits::default()).unwrap();
}

/// `decode_reduced` decodes a JPEG at the smallest scale that keeps both sides at the size asked for, and other
/// formats whole.
#[test]
fn a_reduced_jpeg_keeps_both_sides_at_the_size_asked_for() {
    let limits = DecodeLimits::default();
    let rocket = read_fixture("rocket_rgb_progressive_640x427.jpg");
    // Pillow's rule: 427 // 53 = 8, 427 // 54 = 7.
    for (min_side, size) in [(100, (160, 107)), (53, (80, 54)), (54, (160, 107)), (213, (320, 214)), (214, (640, 427))] {
        let img = decode_reduced(&rocket, &limits, min_side).unwrap();
        assert_eq!((img.width(), img.height()), size, "{min_side}");
    }
    // Orientation is applied after the reduction; CMYK stays CMYK.
    let turned = decode_reduced(&read_fixture("coffee_exif_orientation6_300x200.jpg"), &limits, 50).unwrap();
    assert_eq!((turned.width(), turned.height()), (50, 75));
    let cmyk = decode_reduced(&read_fixture("coffee_cmyk_240x160.jpg"), &limits, 40).unwrap();
    assert_eq!((cmyk.width(), cmyk.height(), cmyk.mode()), (60, 40, PilMode::Cmyk));
    let png = decode_reduced(&read_fixture("moon_l_512x512.png"), &limits, 16).unwrap();
    assert_eq!((png.width(), png.height()), (512, 512));
}

/// JPEGs of 12-bit samples and lossless JPEGs are refused as unsupported before libjpeg sees them.
#[test]
fn twelve_bit_and_lossless_jpegs_are_unsupported() {
    let jpeg = read_fixture("chelsea_rgb_451x300.jpg");
    let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    let mut twelve_bit = jpeg.clone();
    twelve_bit[sof + 4] = 12;
    let mut lossless = jpeg.clone();
    lossless[sof + 1] = 0xC3;
    for (name, bytes, says) in [("12-bit", twelve_bit, "12-bit samples"), ("lossless", lossless, "lossless JPEG")] {
        match decode(&bytes, &DecodeLimits::default()) {
            Err(ImageError::Unsupported(m)) => assert!(m.contains(says), "{name}: {m}"),
            other => panic!("{name}: {other:?}"),
        }
    }
}

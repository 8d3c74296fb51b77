//! Decoding untrusted bytes into a [`DecodedImage`], with the pixel limit checked from the header
//! before any pixel buffer is allocated, and the Pillow mode of the file worked out from the
//! header (palette, bit depth, alpha) so that preprocessing can follow Pillow.

use std::io::Cursor;
use std::ops::Range;

use image::{ColorType, DynamicImage, ImageDecoder, ImageFormat, ImageReader, ImageResult};

use super::{DecodeLimits, DecodedImage, ImageError, Layout, PilMode};
use crate::interrupt;

/// Decodes the first frame, applies the EXIF orientation (a deliberate difference from open_clip,
/// which ignores it), and remembers how Pillow would see the image (its mode: L, LA, RGB, RGBA,
/// P, ...) so that preprocessing can follow Pillow.
///
/// Supported: JPEG (8-bit grey, RGB, CMYK), PNG (1-16 bits, grey, grey+alpha, RGB, RGBA, palette
/// with and without transparency), WebP, GIF (first frame), BMP and TIFF. Never panics on bad
/// input: empty, unknown, unsupported, oversized and corrupt data give an [`ImageError`]. Runs the
/// [interrupt check](crate::interrupt) between the rows of a PNG, and when the host has an
/// interrupt pending while a JPEG is decoded.
pub fn decode(bytes: &[u8], limits: &DecodeLimits) -> Result<DecodedImage, ImageError> {
    decode_guarded(bytes, limits, None)
}

/// [`decode`] for an image that will be resized to `min_side` pixels or more on each side: a JPEG is decoded at
/// the smallest of 1/8, 1/4 or 1/2 of its size whose sides are at least `min_side` (libjpeg-turbo's reduced IDCT,
/// chosen as Pillow's `draft(mode, (min_side, min_side))` chooses it), which saves most of the decoding of a large
/// photo for pixels that differ a little from those of the full decode. Other formats are decoded as by [`decode`].
pub fn decode_reduced(bytes: &[u8], limits: &DecodeLimits, min_side: u32) -> Result<DecodedImage, ImageError> {
    decode_guarded(bytes, limits, Some(min_side))
}

fn decode_guarded(bytes: &[u8], limits: &DecodeLimits, min_side: Option<u32>) -> Result<DecodedImage, ImageError> {
    // The decoders are not expected to panic, but this runs on untrusted bytes: a panic in one
    // of them is reported as corrupt data rather than unwinding into the caller. An interrupt
    // check that stops the work unwinds on.
    match interrupt::catch_unwind_not_check(std::panic::AssertUnwindSafe(|| decode_any(bytes, limits, min_side))) {
        Ok(result) => result,
        Err(_) => Err(ImageError::Corrupt(
            "the decoder failed on malformed data".to_string(),
        )),
    }
}

/// [`decode`] (or, with `min_side`, [`decode_reduced`]) without its guard: a panic in a decoder unwinds to the
/// caller. For the hostile-input tests and the fuzz target, which must see such a panic as the bug it is; callers
/// use the guarded two.
pub fn decode_unguarded(
    bytes: &[u8],
    limits: &DecodeLimits,
    min_side: Option<u32>,
) -> Result<DecodedImage, ImageError> {
    decode_any(bytes, limits, min_side)
}

fn decode_any(bytes: &[u8], limits: &DecodeLimits, min_side: Option<u32>) -> Result<DecodedImage, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    if let Some(name) = unsupported_signature(bytes) {
        return Err(ImageError::Unsupported(name.to_string()));
    }
    let format = image::guess_format(bytes).map_err(|_| ImageError::NotAnImage)?;
    match format {
        ImageFormat::Gif => decode_gif(bytes, limits),
        ImageFormat::Png => {
            let info = png_header(bytes)?;
            check_pixels(info.width, info.height, limits)?;
            let (mode, layout) = png_mode(&info);
            let decoder = Png8Decoder::new(bytes, limits).map_err(|e| map_image_error(e, None, limits))?;
            decode_with(decoder, "png", limits, |_| Ok((mode, layout)))
        }
        ImageFormat::Jpeg => decode_jpeg(bytes, limits, min_side),
        ImageFormat::Bmp => {
            let info = bmp_header(bytes)?;
            check_pixels(info.width, info.height, limits)?;
            let (mode, layout) = (info.mode, mode_layout(info.mode));
            decode_with_image(bytes, format, "bmp", limits, |_| Ok((mode, layout)))
        }
        ImageFormat::WebP => {
            if let Some((w, h)) = webp_size(bytes) {
                check_pixels(w, h, limits)?;
            }
            decode_with_image(bytes, format, "webp", limits, |d| {
                Ok(if d.color_type().has_alpha() {
                    (PilMode::Rgba, Layout::Rgba)
                } else {
                    (PilMode::Rgb, Layout::Rgb)
                })
            })
        }
        ImageFormat::Tiff => decode_with_image(bytes, format, "tiff", limits, |d| {
            use image::{ColorType, ExtendedColorType};
            let mode = match (d.original_color_type(), d.color_type()) {
                (ExtendedColorType::L1, _) => PilMode::One,
                (ExtendedColorType::Cmyk8 | ExtendedColorType::Cmyk16, _) => PilMode::Cmyk,
                (_, ColorType::L8) => PilMode::L,
                (_, ColorType::L16) => PilMode::I16,
                (_, ColorType::La8 | ColorType::La16) => PilMode::La,
                (_, ColorType::Rgba8 | ColorType::Rgba16 | ColorType::Rgba32F) => PilMode::Rgba,
                _ => PilMode::Rgb,
            };
            Ok((mode, mode_layout(mode)))
        }),
        other => Err(ImageError::Unsupported(
            other
                .extensions_str()
                .first()
                .map_or_else(|| format!("{other:?}"), |e| e.to_uppercase()),
        )),
    }
}

fn mode_layout(mode: PilMode) -> Layout {
    match mode {
        PilMode::One | PilMode::L | PilMode::I16 => Layout::Gray,
        PilMode::La => Layout::GrayAlpha,
        PilMode::P | PilMode::Rgb | PilMode::Cmyk => Layout::Rgb,
        PilMode::Rgba => Layout::Rgba,
    }
}

fn check_pixels(width: u32, height: u32, limits: &DecodeLimits) -> Result<(), ImageError> {
    if width == 0 || height == 0 {
        return Err(ImageError::Corrupt(format!(
            "image has a zero dimension ({width}x{height})"
        )));
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(ImageError::TooLarge {
            width,
            height,
            max_pixels: limits.max_pixels,
        });
    }
    Ok(())
}

/// The allocation budget given to the decoders as a second guard: 16 bytes per allowed pixel
/// (32-bit float RGBA TIFF) plus 64 MiB for their own buffers.
fn alloc_budget(limits: &DecodeLimits) -> u64 {
    limits
        .max_pixels
        .saturating_mul(16)
        .saturating_add(64 << 20)
}

/// Formats recognised by their signature that are not decoded.
fn unsupported_signature(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"%PDF-") {
        return Some("PDF");
    }
    if bytes.starts_with(b"%!PS") {
        return Some("PostScript");
    }
    if bytes.starts_with(b"8BPS") {
        return Some("PSD");
    }
    if bytes.starts_with(&[0xFF, 0x0A]) || bytes.starts_with(b"\0\0\0\x0CJXL \r\n\x87\n") {
        return Some("JPEG XL");
    }
    if bytes.starts_with(b"\0\0\0\x0CjP  \r\n\x87\n")
        || bytes.starts_with(&[0xFF, 0x4F, 0xFF, 0x51])
    {
        return Some("JPEG 2000");
    }
    if bytes.len() >= 12 && &bytes[4..8] == b"ftyp" {
        let brand = &bytes[8..12];
        return match brand {
            b"avif" | b"avis" => Some("AVIF"),
            b"heic" | b"heix" | b"hevc" | b"hevx" | b"heim" | b"heis" | b"hevm" | b"hevs"
            | b"mif1" | b"msf1" => Some("HEIC/HEIF"),
            _ => None,
        };
    }
    // SVG: XML text whose first element is <svg ...>, possibly after a BOM, an XML declaration,
    // comments and a doctype.
    let head = &bytes[..bytes.len().min(4096)];
    let text = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let first = text.iter().position(|b| !b.is_ascii_whitespace());
    if let Some(i) = first {
        let t = &text[i..];
        if t.starts_with(b"<svg") || t.starts_with(b"<SVG") {
            return Some("SVG");
        }
        if (t.starts_with(b"<?xml") || t.starts_with(b"<!--") || t.starts_with(b"<!DOCTYPE"))
            && (contains(t, b"<svg") || contains(t, b"<!DOCTYPE svg"))
        {
            return Some("SVG");
        }
    }
    None
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Maps an error of the `image` crate. A limit error becomes `TooLarge` for the given size.
fn map_image_error(
    e: image::ImageError,
    size: Option<(u32, u32)>,
    limits: &DecodeLimits,
) -> ImageError {
    use image::ImageError as E;
    match e {
        E::Limits(l) => match size {
            Some((width, height)) => ImageError::TooLarge {
                width,
                height,
                max_pixels: limits.max_pixels,
            },
            None => ImageError::Corrupt(format!("decoder limit exceeded: {l}")),
        },
        E::Unsupported(u) => ImageError::Unsupported(u.to_string()),
        E::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            ImageError::Corrupt("unexpected end of data (truncated file)".to_string())
        }
        other => ImageError::Corrupt(other.to_string()),
    }
}

/// Decodes with the `image` crate's decoder for `format` (see [`decode_with`]).
fn decode_with_image(
    bytes: &[u8],
    format: ImageFormat,
    name: &'static str,
    limits: &DecodeLimits,
    mode_of: impl FnOnce(&dyn ImageDecoder) -> Result<(PilMode, Layout), ImageError>,
) -> Result<DecodedImage, ImageError> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut image_limits = image::Limits::default();
    image_limits.max_alloc = Some(alloc_budget(limits));
    reader.limits(image_limits);
    let decoder = reader
        .into_decoder()
        .map_err(|e| map_image_error(e, None, limits))?;
    decode_with(decoder, name, limits, mode_of)
}

/// Decodes with `decoder`, which has read the header: the size is checked against the limit,
/// then the pixels are decoded and converted to the layout of the Pillow mode chosen by `mode_of`
/// (which may look at the decoder).
fn decode_with(
    mut decoder: impl ImageDecoder,
    name: &'static str,
    limits: &DecodeLimits,
    mode_of: impl FnOnce(&dyn ImageDecoder) -> Result<(PilMode, Layout), ImageError>,
) -> Result<DecodedImage, ImageError> {
    let (width, height) = decoder.dimensions();
    check_pixels(width, height, limits)?;
    let (mode, layout) = mode_of(&decoder)?;
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder)
        .map_err(|e| map_image_error(e, Some((width, height)), limits))?;
    img.apply_orientation(orientation);
    let (w, h) = (img.width(), img.height());
    let data = convert_layout(img, layout);
    DecodedImage::new(w, h, mode, layout, name, data)
        .ok_or_else(|| ImageError::Corrupt("decoder returned an inconsistent buffer".to_string()))
}

/// Converts decoded samples to 8-bit `layout`. 16-bit samples (TIFF) keep their high byte, as PNG's
/// do (see [`Png8Decoder`]), float samples are scaled and rounded.
fn convert_layout(img: DynamicImage, layout: Layout) -> Vec<u8> {
    // Common cases without a copy.
    match (&img, layout) {
        (DynamicImage::ImageLuma8(_), Layout::Gray)
        | (DynamicImage::ImageLumaA8(_), Layout::GrayAlpha)
        | (DynamicImage::ImageRgb8(_), Layout::Rgb)
        | (DynamicImage::ImageRgba8(_), Layout::Rgba) => return img.into_bytes(),
        _ => {}
    }
    let (channels, samples): (usize, Vec<u8>) = match img {
        DynamicImage::ImageLuma8(b) => (1, b.into_raw()),
        DynamicImage::ImageLumaA8(b) => (2, b.into_raw()),
        DynamicImage::ImageRgb8(b) => (3, b.into_raw()),
        DynamicImage::ImageRgba8(b) => (4, b.into_raw()),
        DynamicImage::ImageLuma16(b) => (1, high_bytes(b.as_raw())),
        DynamicImage::ImageLumaA16(b) => (2, high_bytes(b.as_raw())),
        DynamicImage::ImageRgb16(b) => (3, high_bytes(b.as_raw())),
        DynamicImage::ImageRgba16(b) => (4, high_bytes(b.as_raw())),
        other => {
            let has_alpha = other.color().has_alpha();
            if has_alpha {
                (4, other.into_rgba8().into_raw())
            } else {
                (3, other.into_rgb8().into_raw())
            }
        }
    };
    let n = samples.len() / channels;
    let out_ch = layout.channels();
    let mut out = Vec::with_capacity(n * out_ch);
    for p in samples.chunks_exact(channels) {
        let (g, rgb, a) = match channels {
            1 => (p[0], [p[0]; 3], 255),
            2 => (p[0], [p[0]; 3], p[1]),
            3 => (luma(p), [p[0], p[1], p[2]], 255),
            _ => (luma(p), [p[0], p[1], p[2]], p[3]),
        };
        match layout {
            Layout::Gray => out.push(g),
            Layout::GrayAlpha => out.extend_from_slice(&[g, a]),
            Layout::Rgb => out.extend_from_slice(&rgb),
            Layout::Rgba => out.extend_from_slice(&[rgb[0], rgb[1], rgb[2], a]),
            Layout::Cmyk => unreachable!("only the JPEG decoder keeps CMYK, and it does not convert layouts"),
        }
    }
    out
}

fn high_bytes(v: &[u16]) -> Vec<u8> {
    v.iter().map(|&s| (s >> 8) as u8).collect()
}

/// Pillow's `L` from RGB (ITU-R 601-2), only used if a decoder returns colour for a grey mode.
fn luma(p: &[u8]) -> u8 {
    ((u32::from(p[0]) * 19595 + u32::from(p[1]) * 38470 + u32::from(p[2]) * 7471 + 0x8000) >> 16)
        as u8
}

// ---------------------------------------------------------------------------------------------
// PNG

struct PngInfo {
    width: u32,
    height: u32,
    bit_depth: u8,
    color_type: u8,
}

/// Reads IHDR (the first chunk, at a fixed place).
fn png_header(bytes: &[u8]) -> Result<PngInfo, ImageError> {
    if bytes.len() < 33 || &bytes[12..16] != b"IHDR" {
        return Err(ImageError::Corrupt(
            "PNG without a complete IHDR chunk".to_string(),
        ));
    }
    let be = |o: usize| u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
    Ok(PngInfo {
        width: be(16),
        height: be(20),
        bit_depth: bytes[24],
        color_type: bytes[25],
    })
}

/// Pillow's PNG modes (`PngImagePlugin._MODES`). A `tRNS` colour key does not change the mode
/// (it only sets `info['transparency']`), so such images are resized without alpha.
fn png_mode(info: &PngInfo) -> (PilMode, Layout) {
    match (info.color_type, info.bit_depth) {
        (0, 1) => (PilMode::One, Layout::Gray),
        (0, 16) => (PilMode::I16, Layout::Gray),
        (0, _) => (PilMode::L, Layout::Gray),
        (2, _) => (PilMode::Rgb, Layout::Rgb),
        (3, _) => (PilMode::P, Layout::Rgb),
        // 16-bit grey+alpha opens as RGBA ("LA;16B"); premultiplied resizing of r=g=b gives the
        // same bytes as LA.
        (4, 16) => (PilMode::Rgba, Layout::GrayAlpha),
        (4, _) => (PilMode::La, Layout::GrayAlpha),
        _ => (PilMode::Rgba, Layout::Rgba),
    }
}

/// A PNG decoder for the `image` crate that gives 8 bits per sample: 16-bit samples keep their
/// high byte as each row is decoded (the `png` crate's `STRIP_16`), which is how Pillow reads
/// 16-bit RGB, RGBA and grey+alpha PNGs (raw modes "RGB;16B", "RGBA;16B", "LA;16B"), so the image
/// is never whole at 16 bits, twice the memory. A 16-bit grey PNG (Pillow's `I;16`) keeps its
/// high byte too (see the `preprocess` module's docs). Palettes, bit depths below 8 and `tRNS` are
/// expanded as the `image` crate's own PNG decoder expands them. The interrupt check runs between
/// rows.
struct Png8Decoder<'a> {
    reader: png::Reader<Cursor<&'a [u8]>>,
    color_type: ColorType,
}

impl<'a> Png8Decoder<'a> {
    fn new(bytes: &'a [u8], limits: &DecodeLimits) -> ImageResult<Self> {
        let budget = usize::try_from(alloc_budget(limits)).unwrap_or(usize::MAX);
        let mut decoder = png::Decoder::new_with_limits(Cursor::new(bytes), png::Limits { bytes: budget });
        decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
        let reader = decoder.read_info().map_err(png_error)?;
        let color_type = match reader.output_color_type() {
            (png::ColorType::Grayscale, png::BitDepth::Eight) => ColorType::L8,
            (png::ColorType::GrayscaleAlpha, png::BitDepth::Eight) => ColorType::La8,
            (png::ColorType::Rgb, png::BitDepth::Eight) => ColorType::Rgb8,
            (png::ColorType::Rgba, png::BitDepth::Eight) => ColorType::Rgba8,
            (color, depth) => {
                return Err(image::ImageError::Unsupported(
                    image::error::UnsupportedError::from_format_and_kind(
                        ImageFormat::Png.into(),
                        image::error::UnsupportedErrorKind::GenericFeature(format!(
                            "{color:?} at {depth:?} bits"
                        )),
                    ),
                ))
            }
        };
        Ok(Png8Decoder { reader, color_type })
    }
}

impl ImageDecoder for Png8Decoder<'_> {
    fn dimensions(&self) -> (u32, u32) {
        self.reader.info().size()
    }

    fn color_type(&self) -> ColorType {
        self.color_type
    }

    fn exif_metadata(&mut self) -> ImageResult<Option<Vec<u8>>> {
        Ok(self.reader.info().exif_metadata.as_ref().map(|x| x.to_vec()))
    }

    fn read_image(mut self, buf: &mut [u8]) -> ImageResult<()> {
        let stride = self.color_type.bytes_per_pixel() as usize * self.dimensions().0 as usize;
        let bits_per_pixel = self.color_type.bits_per_pixel() as u8;
        let mut line = 0;
        // Row by row, as `png::Reader::next_frame` reads them, which ends the image data the same way.
        while let Some(row) = self.reader.next_interlaced_row().map_err(png_error)? {
            interrupt::check();
            match row.interlace() {
                png::InterlaceInfo::Null(_) => {
                    buf[line * stride..][..stride].copy_from_slice(row.data());
                    line += 1;
                }
                png::InterlaceInfo::Adam7(pass) => {
                    png::expand_interlaced_row(buf, stride, row.data(), pass, bits_per_pixel)
                }
            }
        }
        Ok(())
    }

    fn read_image_boxed(self: Box<Self>, buf: &mut [u8]) -> ImageResult<()> {
        (*self).read_image(buf)
    }
}

/// The `image` crate's error for a `png` crate error, as its own PNG decoder maps them.
fn png_error(e: png::DecodingError) -> image::ImageError {
    use image::error::{DecodingError, LimitError, LimitErrorKind, ParameterError, ParameterErrorKind};
    match e {
        png::DecodingError::IoError(io) => image::ImageError::IoError(io),
        e @ png::DecodingError::Format(_) => {
            image::ImageError::Decoding(DecodingError::new(ImageFormat::Png.into(), e))
        }
        e @ png::DecodingError::Parameter(_) => image::ImageError::Parameter(
            ParameterError::from_kind(ParameterErrorKind::Generic(e.to_string())),
        ),
        png::DecodingError::LimitsExceeded => image::ImageError::Limits(LimitError::from_kind(
            LimitErrorKind::InsufficientMemory,
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// JPEG

/// A JPEG exactly as Pillow opens it (see [`super::jpeg`]): mode `L`, `RGB` or `CMYK` by the number of components,
/// CMYK inverted (Pillow's raw mode `CMYK;I`, the Adobe convention) and kept as CMYK until `convert('RGB')`. The
/// size is checked first: a header declaring a huge image is `TooLarge` even when nothing follows it.
fn decode_jpeg(bytes: &[u8], limits: &DecodeLimits, min_side: Option<u32>) -> Result<DecodedImage, ImageError> {
    let mut exif = None;
    let (sof, problem) = jpeg_scan(bytes, &mut exif);
    let Some(sof) = sof else {
        return Err(problem.unwrap_or_else(|| ImageError::Corrupt("JPEG without a frame header".into())));
    };
    check_pixels(sof.width, sof.height, limits)?;
    if let Some(problem) = problem {
        return Err(problem);
    }
    let (mode, layout) = match sof.components {
        1 => (PilMode::L, Layout::Gray),
        3 => (PilMode::Rgb, Layout::Rgb),
        4 => (PilMode::Cmyk, Layout::Cmyk),
        n => return Err(ImageError::Unsupported(format!("JPEG with {n} colour components"))),
    };
    if sof.precision != 8 {
        return Err(ImageError::Unsupported(format!("JPEG of {}-bit samples", sof.precision)));
    }
    if matches!(sof.marker, 0xC3 | 0xC7 | 0xCB | 0xCF) {
        return Err(ImageError::Unsupported("lossless JPEG".into()));
    }
    // Pillow's draft(): the largest reduction d with width // side >= d and height // side >= d.
    let scale_denom = min_side.map_or(1, |side| {
        let fits = |d: u32| side > 0 && sof.width / side >= d && sof.height / side >= d;
        [8, 4, 2].into_iter().find(|&d| fits(d)).unwrap_or(1)
    });
    let expected = super::jpeg::Expected { width: sof.width, height: sof.height, components: layout.channels() };
    let mut pixels = super::jpeg::decompress(bytes, scale_denom, alloc_budget(limits), &expected)?;
    if layout == Layout::Cmyk {
        pixels.data.iter_mut().for_each(|v| *v = !*v);
    }
    let orientation = exif
        .and_then(|range| image::metadata::Orientation::from_exif_chunk(&bytes[range]))
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let (width, height, data) = oriented(pixels.width, pixels.height, layout, pixels.data, orientation);
    DecodedImage::new(width, height, mode, layout, "jpeg", data)
        .ok_or_else(|| ImageError::Corrupt("JPEG: the decoder returned an inconsistent buffer".to_string()))
}

/// `data` (`width` x `height` pixels in `layout`) turned as `orientation` says.
fn oriented(
    width: u32,
    height: u32,
    layout: Layout,
    data: Vec<u8>,
    orientation: image::metadata::Orientation,
) -> (u32, u32, Vec<u8>) {
    if orientation == image::metadata::Orientation::NoTransforms {
        return (width, height, data);
    }
    // The image crate turns any pixel type; RGBA carries CMYK's four channels as well.
    let mut img = match layout {
        Layout::Gray => DynamicImage::ImageLuma8(image::ImageBuffer::from_raw(width, height, data).expect("size")),
        Layout::GrayAlpha => DynamicImage::ImageLumaA8(image::ImageBuffer::from_raw(width, height, data).expect("size")),
        Layout::Rgb => DynamicImage::ImageRgb8(image::ImageBuffer::from_raw(width, height, data).expect("size")),
        Layout::Rgba | Layout::Cmyk => {
            DynamicImage::ImageRgba8(image::ImageBuffer::from_raw(width, height, data).expect("size"))
        }
    };
    img.apply_orientation(orientation);
    (img.width(), img.height(), img.into_bytes())
}

struct JpegInfo {
    /// The SOF marker's code: 0xC0 baseline, 0xC2 progressive, 0xC3 lossless, ...
    marker: u8,
    precision: u8,
    width: u32,
    height: u32,
    components: u8,
}

/// Walks the JPEG marker structure: finds the frame header (size, components) and checks that the
/// data reaches an end-of-image marker, so that truncated files are rejected (the decoder would
/// fill missing data with grey instead of failing). Returns the frame header if one was found and
/// the first problem met.
/// `exif` gets the place of the first EXIF block (the TIFF structure after `Exif\0\0` in an APP1 segment).
fn jpeg_scan(b: &[u8], exif: &mut Option<Range<usize>>) -> (Option<JpegInfo>, Option<ImageError>) {
    let mut info: Option<JpegInfo> = None;
    let problem = jpeg_walk(b, &mut info, exif).err();
    (info, problem)
}

fn jpeg_walk(b: &[u8], info: &mut Option<JpegInfo>, exif: &mut Option<Range<usize>>) -> Result<(), ImageError> {
    let truncated = || ImageError::Corrupt("truncated JPEG (no end-of-image marker)".to_string());
    let mut i = 2; // after SOI
    let mut in_scan = false;
    loop {
        if in_scan {
            // Entropy-coded data: skip to the next marker that is neither a stuffed 0xFF00 nor a
            // restart marker.
            loop {
                let pos = b[i..]
                    .iter()
                    .position(|&v| v == 0xFF)
                    .ok_or_else(truncated)?;
                i += pos;
                let mut j = i + 1;
                while j < b.len() && b[j] == 0xFF {
                    j += 1;
                }
                let m = *b.get(j).ok_or_else(truncated)?;
                if m == 0x00 || (0xD0..=0xD7).contains(&m) {
                    i = j + 1;
                    continue;
                }
                break;
            }
            in_scan = false;
        }
        // A marker: 0xFF (and fill bytes) then its code. Garbage before a marker is skipped, as
        // libjpeg does (with a warning).
        let pos = b[i..]
            .iter()
            .position(|&v| v == 0xFF)
            .ok_or_else(truncated)?;
        i += pos;
        while b.get(i) == Some(&0xFF) {
            i += 1;
        }
        let m = *b.get(i).ok_or_else(truncated)?;
        i += 1;
        match m {
            0xD9 => return Ok(()),                 // EOI
            0xD0..=0xD7 | 0x01 | 0xD8 => continue, // markers without a length
            0x00 => continue,                      // a stuffed byte outside a scan: garbage
            _ => {}
        }
        if i + 2 > b.len() {
            return Err(truncated());
        }
        let len = usize::from(u16::from_be_bytes([b[i], b[i + 1]]));
        if len < 2 {
            return Err(ImageError::Corrupt(format!(
                "JPEG: bad segment length at byte {i}"
            )));
        }
        let seg = &b[(i + 2).min(b.len())..(i + len).min(b.len())];
        let is_sof = matches!(m, 0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF);
        if is_sof && info.is_none() {
            if seg.len() < 6 {
                return Err(truncated());
            }
            let height = u32::from(u16::from_be_bytes([seg[1], seg[2]]));
            let width = u32::from(u16::from_be_bytes([seg[3], seg[4]]));
            *info = Some(JpegInfo {
                marker: m,
                precision: seg[0],
                width,
                height,
                components: seg[5],
            });
        }
        if i + len > b.len() {
            return Err(truncated());
        }
        if m == 0xE1 && exif.is_none() && seg.starts_with(b"Exif\0\0") {
            *exif = Some(i + 2 + 6..i + len);
        }
        if m == 0xDA {
            if info.is_none() {
                return Err(ImageError::Corrupt(
                    "JPEG: scan before frame header".to_string(),
                ));
            }
            in_scan = true;
        }
        i += len;
    }
}

// ---------------------------------------------------------------------------------------------
// WebP

/// The canvas size declared by a WebP header (VP8X, VP8L or VP8 first chunk), if readable.
fn webp_size(b: &[u8]) -> Option<(u32, u32)> {
    let le = |o: usize, n: usize| -> Option<u32> {
        let s = b.get(o..o + n)?;
        Some(
            s.iter()
                .rev()
                .fold(0u32, |acc, &v| (acc << 8) | u32::from(v)),
        )
    };
    match b.get(12..16)? {
        b"VP8X" => Some((le(24, 3)? + 1, le(27, 3)? + 1)),
        b"VP8L" => {
            let bits = le(21, 4)?;
            Some(((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1))
        }
        b"VP8 " => Some((le(26, 2)? & 0x3FFF, le(28, 2)? & 0x3FFF)),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// BMP

struct BmpInfo {
    width: u32,
    height: u32,
    mode: PilMode,
}

/// The mode Pillow's `BmpImagePlugin` gives a BMP: 1/4/8-bit palettes are `P`, except a palette
/// that is the identity grey ramp (`L`; `1` for two colours black and white); 32-bit is `RGBA`
/// only with BITFIELDS masks that include alpha; everything else is `RGB`.
fn bmp_header(b: &[u8]) -> Result<BmpInfo, ImageError> {
    let short = || ImageError::Corrupt("truncated BMP header".to_string());
    let u16le = |o: usize| -> Result<u32, ImageError> {
        b.get(o..o + 2)
            .map(|s| u32::from(u16::from_le_bytes([s[0], s[1]])))
            .ok_or_else(short)
    };
    let u32le = |o: usize| -> Result<u32, ImageError> {
        b.get(o..o + 4)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
            .ok_or_else(short)
    };
    let header_size = u32le(14)?;
    let (width, height, bits, compression, mut colors, padding) = match header_size {
        12 => (u16le(18)?, u16le(20)?, u16le(24)?, 0, 0, 3usize),
        40 | 52 | 56 | 64 | 108 | 124 => {
            let w = u32le(18)? as i32;
            let h = u32le(22)? as i32;
            (
                w.unsigned_abs(),
                h.unsigned_abs(),
                u16le(28)?,
                u32le(30)?,
                u32le(46)?,
                4usize,
            )
        }
        other => {
            return Err(ImageError::Unsupported(format!("BMP header type {other}")));
        }
    };
    if colors == 0 && bits < 32 {
        colors = 1 << bits;
    }
    let mode = if bits <= 8 {
        let palette_at = 14 + header_size as usize;
        let entry = |i: usize| b.get(palette_at + i * padding..palette_at + i * padding + 3);
        let grey = if colors == 2 {
            entry(0) == Some(&[0, 0, 0][..]) && entry(1) == Some(&[255, 255, 255][..])
        } else {
            (0..colors as usize).all(|i| entry(i) == Some(&[i as u8; 3][..]) && i < 256)
        };
        match (grey, colors <= 2) {
            (true, true) => PilMode::One,
            (true, false) => PilMode::L,
            (false, _) => PilMode::P,
        }
    } else if bits == 32 && compression == 3 {
        // BI_BITFIELDS: masks follow the 40-byte info header (inside larger headers).
        let a_mask = if header_size >= 56 { u32le(66)? } else { 0 };
        let rgb = (u32le(54)?, u32le(58)?, u32le(62)?);
        let with_alpha = matches!(
            (rgb, a_mask),
            ((0xFF000000, 0xFF0000, 0xFF00), 0xFF)
                | ((0xFF, 0xFF00, 0xFF0000), 0xFF000000)
                | ((0xFF0000, 0xFF00, 0xFF), 0xFF000000)
                | ((0xFF000000, 0xFF00, 0xFF), 0xFF0000)
                | ((0, 0, 0), 0)
        );
        if with_alpha {
            PilMode::Rgba
        } else {
            PilMode::Rgb
        }
    } else {
        PilMode::Rgb
    };
    Ok(BmpInfo {
        width,
        height,
        mode,
    })
}

// ---------------------------------------------------------------------------------------------
// GIF

/// The first frame of a GIF as Pillow's `GifImagePlugin` loads it: mode `P` with the frame's
/// (local or global) palette, or `L` when that palette is the identity grey ramp (Pillow drops
/// it); the canvas is the logical screen (grown to hold the frame), filled outside the frame
/// with the transparent index if there is one, else index 0.
fn decode_gif(bytes: &[u8], limits: &DecodeLimits) -> Result<DecodedImage, ImageError> {
    let gif_err = |e: gif::DecodingError| match e {
        gif::DecodingError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            ImageError::Corrupt("unexpected end of data (truncated GIF)".to_string())
        }
        gif::DecodingError::UnexpectedEof => {
            ImageError::Corrupt("unexpected end of data (truncated GIF)".to_string())
        }
        other => ImageError::Corrupt(format!("GIF: {other}")),
    };
    // The logical screen size, from the header, before the decoder allocates anything.
    if bytes.len() < 10 {
        return Err(ImageError::Corrupt("truncated GIF header".to_string()));
    }
    let header_w = u32::from(u16::from_le_bytes([bytes[6], bytes[7]]));
    let header_h = u32::from(u16::from_le_bytes([bytes[8], bytes[9]]));
    check_pixels(header_w.max(1), header_h.max(1), limits)?;
    let mut options = gif::DecodeOptions::new();
    options.set_color_output(gif::ColorOutput::Indexed);
    let budget = alloc_budget(limits);
    if let Some(nz) = std::num::NonZeroU64::new(budget) {
        options.set_memory_limit(gif::MemoryLimit::Bytes(nz));
    }
    options.allow_unknown_blocks(true);
    let mut decoder = options.read_info(Cursor::new(bytes)).map_err(gif_err)?;
    let (screen_w, screen_h) = (u32::from(decoder.width()), u32::from(decoder.height()));
    check_pixels(screen_w.max(1), screen_h.max(1), limits)?;
    let global: Option<Vec<u8>> = decoder.global_palette().map(<[u8]>::to_vec);

    let frame = match decoder.next_frame_info() {
        Ok(Some(f)) => f,
        Ok(None) => return Err(ImageError::Corrupt("GIF without an image".to_string())),
        Err(gif::DecodingError::MemoryLimit) => {
            return Err(ImageError::TooLarge {
                width: screen_w,
                height: screen_h,
                max_pixels: limits.max_pixels,
            })
        }
        Err(e) => return Err(gif_err(e)),
    };
    let (fl, ft) = (u32::from(frame.left), u32::from(frame.top));
    let (fw, fh) = (u32::from(frame.width), u32::from(frame.height));
    let transparent = frame.transparent;
    let local = frame.palette.clone();
    let width = screen_w.max(fl + fw);
    let height = screen_h.max(ft + fh);
    check_pixels(width, height, limits)?;
    check_pixels(fw.max(1), fh.max(1), limits)?;

    // Pillow keeps a palette only if it is not the grey ramp `p[i] == (i, i, i)`.
    let needed = |p: &[u8]| {
        p.chunks(3)
            .enumerate()
            .any(|(i, c)| c.iter().any(|&v| usize::from(v) != i))
    };
    let palette: Option<&[u8]> = match (&local, &global) {
        (Some(l), _) => needed(l).then_some(l.as_slice()),
        (None, Some(g)) => needed(g).then_some(g.as_slice()),
        (None, None) => None,
    };

    let mut indices = vec![0u8; decoder.buffer_size()];
    decoder.read_into_buffer(&mut indices).map_err(gif_err)?;

    // Compose onto the canvas.
    let (w, h) = (width as usize, height as usize);
    let canvas: Vec<u8> = if (fl, ft, fw, fh) == (0, 0, width, height) {
        indices
    } else {
        let mut c = vec![transparent.unwrap_or(0); w * h];
        let fwu = fw as usize;
        if fwu > 0 {
            for (row, src) in indices.chunks_exact(fwu).enumerate().take(fh as usize) {
                let y = ft as usize + row;
                let x = fl as usize;
                c[y * w + x..y * w + x + fwu].copy_from_slice(src);
            }
        }
        c
    };

    match palette {
        Some(p) => {
            // Pillow's palette starts as the grey ramp and the file's colours overwrite its
            // first entries; `convert('RGB')` ignores transparency.
            let mut lut = [[0u8; 3]; 256];
            for (i, e) in lut.iter_mut().enumerate() {
                *e = match p.get(i * 3..i * 3 + 3) {
                    Some(c) => [c[0], c[1], c[2]],
                    None => [i as u8; 3],
                };
            }
            let rgb: Vec<u8> = canvas.iter().flat_map(|&i| lut[usize::from(i)]).collect();
            DecodedImage::new(width, height, PilMode::P, Layout::Rgb, "gif", rgb)
        }
        None => DecodedImage::new(width, height, PilMode::L, Layout::Gray, "gif", canvas),
    }
    .ok_or_else(|| ImageError::Corrupt("GIF: inconsistent frame buffer".to_string()))
}

//! Image decoding and open_clip-exact preprocessing.
//!
//! open_clip 3.3.0 prepares an image for a CLIP model (`image_transform(size, is_train=False)` with
//! the default `resize_mode='shortest'`) with torchvision and Pillow:
//!
//! 1. `Resize(size, BICUBIC)` on the PIL image: the shorter side becomes `size`, the longer side
//!    `int(size * long / short)`; done by Pillow's `Image.resize`. SigLIP's `resize_mode='squash'`
//!    resizes to `size` x `size` instead (and skips step 2); MobileCLIP's weights ask for BILINEAR.
//! 2. `CenterCrop(size)`: offsets `int(round((n - size) / 2.0))` (Python rounds half to even).
//! 3. `convert('RGB')`, AFTER resizing and cropping.
//! 4. `ToTensor` (`/255` in float32) and `Normalize(mean, std)`.
//!
//! This module reproduces that chain, including the details of Pillow (13.0) that decide pixel
//! values, so that a PNG gives byte-identical 224x224 crops:
//!
//! * Pillow's bicubic resampling (`libImaging/Resample.c`): the cubic convolution kernel with
//!   `a = -0.5`, support 2 widened by the downscale factor, per-pixel coefficients normalised to sum
//!   1 and converted to 22-bit fixed point, two separable passes each rounding and clipping to
//!   8 bits, horizontal pass first unless the height shrinks by more than twice as many pixels as
//!   the width (then Pillow 13 runs the vertical pass first; the order changes the rounding).
//! * The image *mode* Pillow gives the file (see [`PilMode`]): `P` (palette) and `1` (bilevel)
//!   images are resized with NEAREST whatever filter was asked for (Pillow's affine nearest
//!   transform, with its floating-point stepping); `RGBA` and `LA` are resized premultiplied
//!   (`RGBa`/`La`) and un-premultiplied afterwards, then `convert('RGB')` drops the alpha;
//!   `L` is resized as one channel; a PNG with a `tRNS` colour key stays `RGB`/`L`; GIF frames and
//!   BMPs whose palette is the identity grey ramp are `L`, not `P`.
//!
//! Only the 224x224 (or `size`x`size`) window that the centre crop keeps is computed: each output
//! pixel of Pillow's passes depends only on its own coefficients, so computing a window of the
//! resized image gives the same bytes as resizing everything and cropping.
//!
//! # Deliberate differences from open_clip
//!
//! * **EXIF orientation is applied** ([`decode`]); open_clip ignores it, so for a rotated JPEG the
//!   model would see the image sideways.
//! * **16-bit samples keep their high byte** (`v >> 8`). For 16-bit RGB, RGBA and grey+alpha PNGs
//!   this is exactly what Pillow does; a 16-bit *greyscale* PNG is mode `I;16` in Pillow, which
//!   `convert('RGB')` clips to 255 (so almost every pixel becomes white), and that is not copied.
//! * The first frame of an animated PNG/WebP/GIF is used; truncated files are errors (Pillow also
//!   refuses them unless `ImageFile.LOAD_TRUNCATED_IMAGES` is set).
//!
//! # Checked against open_clip
//!
//! `tools/make_fixture_images.py` writes fixtures in every supported format and mode with
//! open_clip's crops (`tests/fixtures/images/reference/`); the tests require byte-identical crops
//! for PNG, JPEG (decoded by libjpeg-turbo as Pillow decodes it, see `jpeg.rs`), BMP, TIFF, GIF and
//! lossless WebP, and at most a few levels of difference for lossy WebP, whose decoder is not
//! libwebp. Not covered by fixtures (and not guaranteed to match Pillow): TIFFs with associated (premultiplied) alpha or a palette (the
//! latter is rejected by the decoder), 16-bit (5-6-5) BMPs, and animated WebPs.

mod decode;
mod jpeg;
mod resample;
#[cfg(test)]
mod tests;

pub use decode::{decode, decode_reduced, decode_unguarded};

/// The normalisation constants of OpenAI CLIP (`open_clip.constants.OPENAI_DATASET_MEAN`),
/// rounded from the Python floats (doubles) to `f32` as `Normalize` does.
pub const OPENAI_DATASET_MEAN: [f32; 3] = [
    0.48145466f64 as f32,
    0.4578275f64 as f32,
    0.40821073f64 as f32,
];
/// The normalisation constants of OpenAI CLIP (`open_clip.constants.OPENAI_DATASET_STD`).
pub const OPENAI_DATASET_STD: [f32; 3] = [
    0.26862954f64 as f32,
    0.26130258f64 as f32,
    0.27577711f64 as f32,
];

/// How to turn an image into the model input: resize (the shortest side to `image_size` and
/// centre-crop, or squash to `image_size`x`image_size`; bicubic or bilinear, as Pillow), scale to
/// `[0, 1]` and normalise with `(x - mean) / std` per channel, exactly as open_clip's inference
/// transform.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PreprocessConfig {
    pub image_size: u32,
    pub resize_mode: ResizeMode,
    pub interpolation: Interpolation,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// open_clip's `resize_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeMode {
    /// The shorter side to the size, then a centre crop.
    Shortest,
    /// Both sides to the size, whatever the aspect ratio.
    Squash,
}

/// open_clip's `interpolation`: Pillow's filter for the resize.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Interpolation {
    Bicubic,
    Bilinear,
}

impl PreprocessConfig {
    /// OpenAI CLIP normalisation at the given input size (224 for ViT-B/32, ViT-B/16, ViT-L/14).
    pub fn openai(image_size: u32) -> Self {
        PreprocessConfig {
            image_size,
            resize_mode: ResizeMode::Shortest,
            interpolation: Interpolation::Bicubic,
            mean: OPENAI_DATASET_MEAN,
            std: OPENAI_DATASET_STD,
        }
    }

    /// Number of `f32` values of one preprocessed image: `3 * image_size * image_size`.
    pub fn tensor_len(&self) -> usize {
        3 * (self.image_size as usize) * (self.image_size as usize)
    }
}

impl Default for PreprocessConfig {
    fn default() -> Self {
        PreprocessConfig::openai(224)
    }
}

/// Limits applied while decoding untrusted bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest accepted `width * height`, checked from the file header before any pixel buffer is
    /// allocated.
    pub max_pixels: u64,
}

impl DecodeLimits {
    /// The default limit: 50 megapixels (an 8-bit RGBA frame of that size is 200 MB).
    pub const DEFAULT_MAX_PIXELS: u64 = 50_000_000;
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_pixels: Self::DEFAULT_MAX_PIXELS,
        }
    }
}

/// Why bytes could not be turned into an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Zero bytes.
    #[error("the image data is empty")]
    Empty,
    /// The bytes do not start with the signature of any known image format.
    #[error("the data is not an image (unknown file signature)")]
    NotAnImage,
    /// A recognised format (or a feature of one) that is not supported: SVG, PDF, HEIC, AVIF, ...
    #[error("unsupported image format: {0}")]
    Unsupported(String),
    /// `width * height` is over [`DecodeLimits::max_pixels`] (checked before decoding).
    #[error("image of {width}x{height} pixels exceeds the limit of {max_pixels} pixels")]
    TooLarge {
        width: u32,
        height: u32,
        max_pixels: u64,
    },
    /// Truncated or malformed data.
    #[error("corrupt or truncated image: {0}")]
    Corrupt(String),
}

/// The mode Pillow would give the decoded image (`PIL.Image.Image.mode`), which decides how
/// open_clip's resize treats it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PilMode {
    /// `1`: bilevel; resized with NEAREST.
    One,
    /// `L`: 8-bit grey.
    L,
    /// `LA`: grey with alpha; resized premultiplied.
    La,
    /// `I;16`: 16-bit grey (PNG, TIFF). Kept here as `L` with the high byte (see the module docs).
    I16,
    /// `P`: palette; resized with NEAREST, then looked up (transparency is ignored by
    /// `convert('RGB')`).
    P,
    /// `RGB`.
    Rgb,
    /// `RGBA`: resized premultiplied.
    Rgba,
    /// `CMYK`: a JPEG's is kept as CMYK through the resize, as Pillow keeps it; a TIFF's is stored converted to
    /// RGB by the decoder.
    Cmyk,
}

impl PilMode {
    /// Pillow's name of the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            PilMode::One => "1",
            PilMode::L => "L",
            PilMode::La => "LA",
            PilMode::I16 => "I;16",
            PilMode::P => "P",
            PilMode::Rgb => "RGB",
            PilMode::Rgba => "RGBA",
            PilMode::Cmyk => "CMYK",
        }
    }
}

/// The pixel layout of [`DecodedImage`]'s buffer: interleaved 8-bit channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    Gray,
    GrayAlpha,
    Rgb,
    Rgba,
    /// Pillow's `CMYK` (JPEG): resized as four channels without alpha, converted to RGB after the crop.
    Cmyk,
}

impl Layout {
    pub(crate) fn channels(self) -> usize {
        match self {
            Layout::Gray => 1,
            Layout::GrayAlpha => 2,
            Layout::Rgb => 3,
            Layout::Rgba | Layout::Cmyk => 4,
        }
    }
}

/// A decoded image (first frame, EXIF orientation applied) together with what Pillow would make
/// of it. Palette images are stored expanded to RGB (nearest-neighbour resizing commutes with the
/// palette lookup); the alpha channel is kept only where Pillow's mode has one (`LA`, `RGBA`).
#[derive(Clone)]
pub struct DecodedImage {
    width: u32,
    height: u32,
    mode: PilMode,
    layout: Layout,
    format: &'static str,
    data: Vec<u8>,
}

impl std::fmt::Debug for DecodedImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodedImage")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("mode", &self.mode)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl DecodedImage {
    /// Wraps 8-bit RGB pixels (row-major, `width * height * 3` bytes), as Pillow mode `RGB`.
    /// Returns `None` when the length does not match or a side is zero.
    pub fn from_rgb8(width: u32, height: u32, data: Vec<u8>) -> Option<DecodedImage> {
        DecodedImage::new(width, height, PilMode::Rgb, Layout::Rgb, "raw", data)
    }

    pub(crate) fn new(
        width: u32,
        height: u32,
        mode: PilMode,
        layout: Layout,
        format: &'static str,
        data: Vec<u8>,
    ) -> Option<DecodedImage> {
        let expected = (width as usize)
            .checked_mul(height as usize)?
            .checked_mul(layout.channels())?;
        if width == 0 || height == 0 || data.len() != expected {
            return None;
        }
        Some(DecodedImage {
            width,
            height,
            mode,
            layout,
            format,
            data,
        })
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    /// The mode Pillow gives this image when it opens the file.
    pub fn mode(&self) -> PilMode {
        self.mode
    }

    /// The container format: "png", "jpeg", "gif", "webp", "bmp", "tiff" (or "raw").
    pub fn format(&self) -> &'static str {
        self.format
    }

    /// Whether open_clip's resize uses NEAREST for this image (Pillow modes `P` and `1`).
    fn nearest(&self) -> bool {
        matches!(self.mode, PilMode::P | PilMode::One)
    }
}

/// Writes the normalised CHW float tensor (`3 * size * size` values, channel-major, rows then
/// columns) for one image into `out`: `(v / 255 - mean[c]) / std[c]` in `f32`, as torchvision's
/// `ToTensor` and `Normalize`. Runs the [interrupt check](crate::interrupt) between the rows of
/// the resize.
///
/// # Panics
/// If `out.len() != cfg.tensor_len()` (a caller bug, not a property of the image).
pub fn preprocess_into(image: &DecodedImage, cfg: &PreprocessConfig, out: &mut [f32]) {
    assert_eq!(
        out.len(),
        cfg.tensor_len(),
        "output buffer must hold 3 * image_size * image_size values"
    );
    let plane = (cfg.image_size as usize) * (cfg.image_size as usize);
    if plane == 0 {
        return;
    }
    let rgb = resized_crop_rgb(image, cfg);
    for c in 0..3 {
        let (mean, std) = (cfg.mean[c], cfg.std[c]);
        let dst = &mut out[c * plane..(c + 1) * plane];
        for (d, px) in dst.iter_mut().zip(rgb.chunks_exact(3)) {
            *d = (f32::from(px[c]) / 255.0 - mean) / std;
        }
    }
}

/// The normalised CHW float tensor of one image (see [`preprocess_into`]).
pub fn preprocess(image: &DecodedImage, cfg: &PreprocessConfig) -> Vec<f32> {
    let mut out = vec![0.0f32; cfg.tensor_len()];
    preprocess_into(image, cfg, &mut out);
    out
}

/// The 8-bit RGB image before normalisation (`size * size * 3` bytes, HWC): what open_clip's
/// `Resize`, `CenterCrop` and `convert('RGB')` produce, byte for byte for lossless inputs.
pub fn resized_crop_rgb(image: &DecodedImage, cfg: &PreprocessConfig) -> Vec<u8> {
    resample::resized_crop_rgb(image, cfg.image_size, cfg.resize_mode, cfg.interpolation)
}

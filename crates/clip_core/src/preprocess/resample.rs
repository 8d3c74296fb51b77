//! torchvision `Resize(size)` + `CenterCrop(size)` (or `Resize((size, size))`) + `convert('RGB')`
//! on a PIL image, computed only for the kept window, following Pillow 13's `Image.resize` and
//! `libImaging/Resample.c` / `Geometry.c` to the bit.

use std::ops::Range;

use super::{DecodedImage, Interpolation, Layout, ResizeMode};
use crate::interrupt;

/// Pillow: `PRECISION_BITS = 32 - 8 - 2`.
const PRECISION_BITS: u32 = 22;

/// torchvision `_compute_resized_output_size` for an int size: `(new_w, new_h)`.
pub(crate) fn resized_size(width: u32, height: u32, size: u32) -> (u32, u32) {
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    // Python: int(size * long / short); the product is exact in f64 and `/` is correctly rounded
    // in both languages.
    let new_long = ((size as u64 * long as u64) as f64 / short as f64) as u32;
    if width <= height {
        (size, new_long)
    } else {
        (new_long, size)
    }
}

/// torchvision `center_crop` offset: `int(round((n - size) / 2.0))`, rounding half to even.
pub(crate) fn crop_offset(n: u32, size: u32) -> u32 {
    (f64::from(n - size) / 2.0).round_ties_even() as u32
}

pub(crate) fn resized_crop_rgb(
    image: &DecodedImage,
    size: u32,
    mode: ResizeMode,
    interpolation: Interpolation,
) -> Vec<u8> {
    if size == 0 {
        return Vec::new();
    }
    let (w, h) = (image.width as usize, image.height as usize);
    let (tw, th) = match mode {
        ResizeMode::Shortest => resized_size(image.width, image.height, size),
        ResizeMode::Squash => (size, size),
    };
    let left = crop_offset(tw, size) as usize;
    let top = crop_offset(th, size) as usize;
    let filter = match interpolation {
        Interpolation::Bicubic => Filter::BICUBIC,
        Interpolation::Bilinear => Filter::BILINEAR,
    };
    let s = size as usize;
    let (tw, th) = (tw as usize, th as usize);
    let layout = image.layout;
    let ch = layout.channels();

    let window = if (tw, th) == (w, h) {
        // `Image.resize` returns a copy when the size is unchanged (no premultiplication round
        // trip either).
        copy_window(&image.data, w * ch, ch, left..left + s, top..top + s)
    } else if image.nearest() {
        nearest_window(&image.data, w, h, ch, tw, th, left..left + s, top..top + s)
    } else {
        resample_window(
            &image.data,
            w,
            h,
            layout,
            filter,
            tw,
            th,
            left..left + s,
            top..top + s,
        )
    };
    to_rgb(&window, layout)
}

fn copy_window(
    data: &[u8],
    stride: usize,
    ch: usize,
    cols: Range<usize>,
    rows: Range<usize>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(cols.len() * rows.len() * ch);
    for y in rows {
        out.extend_from_slice(&data[y * stride + cols.start * ch..y * stride + cols.end * ch]);
    }
    out
}

/// Pillow `convert('RGB')` of the cropped window (after un-premultiplication where applicable).
fn to_rgb(window: &[u8], layout: Layout) -> Vec<u8> {
    match layout {
        Layout::Rgb => window.to_vec(),
        Layout::Rgba => window
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect(),
        Layout::Gray => window.iter().flat_map(|&v| [v, v, v]).collect(),
        Layout::GrayAlpha => window
            .chunks_exact(2)
            .flat_map(|p| [p[0], p[0], p[0]])
            .collect(),
        Layout::Cmyk => window.chunks_exact(4).flat_map(cmyk_to_rgb).collect(),
    }
}

/// Pillow `cmyk2rgb`: each of R, G, B is `(255 - K) - MULDIV255(C|M|Y, 255 - K)`.
fn cmyk_to_rgb(p: &[u8]) -> [u8; 3] {
    let nk = 255 - i32::from(p[3]);
    let channel = |v: u8| {
        let tmp = i32::from(v) * nk + 128;
        (nk - (((tmp >> 8) + tmp) >> 8)).clamp(0, 255) as u8
    };
    [channel(p[0]), channel(p[1]), channel(p[2])]
}

/// Pillow `ImagingScaleAffine` (the NEAREST path of `Image.resize` for modes `P` and `1`): source
/// positions are stepped in double precision from `scale / 2` and truncated.
#[allow(clippy::too_many_arguments)]
fn nearest_window(
    data: &[u8],
    w: usize,
    h: usize,
    ch: usize,
    tw: usize,
    th: usize,
    cols: Range<usize>,
    rows: Range<usize>,
) -> Vec<u8> {
    fn table(in_size: usize, out_size: usize, upto: usize) -> Vec<Option<usize>> {
        // a[0] = (double)(box[2] - box[0]) / xsize, with the box in float.
        let step = f64::from(in_size as f32) / out_size as f64;
        let mut pos = 0.0 + step * 0.5;
        let mut t = Vec::with_capacity(upto);
        for _ in 0..upto {
            // COORD(v): v < 0 ? -1 : (int)v
            let i = if pos < 0.0 { -1i64 } else { pos as i64 };
            t.push(if i >= 0 && (i as usize) < in_size {
                Some(i as usize)
            } else {
                None
            });
            pos += step;
        }
        t
    }
    let xin = table(w, tw, cols.end);
    let yin = table(h, th, rows.end);
    let stride = w * ch;
    let mut out = vec![0u8; cols.len() * rows.len() * ch];
    let mut o = 0;
    for y in rows {
        match yin[y] {
            Some(sy) => {
                let line = &data[sy * stride..(sy + 1) * stride];
                for x in cols.clone() {
                    if let Some(sx) = xin[x] {
                        out[o..o + ch].copy_from_slice(&line[sx * ch..(sx + 1) * ch]);
                    }
                    o += ch;
                }
            }
            None => o += cols.len() * ch,
        }
    }
    out
}

/// A Pillow resampling filter: its kernel and its support at scale 1.
#[derive(Clone, Copy)]
struct Filter {
    support: f64,
    kernel: fn(f64) -> f64,
}

impl Filter {
    const BICUBIC: Filter = Filter { support: 2.0, kernel: bicubic_filter };
    const BILINEAR: Filter = Filter { support: 1.0, kernel: bilinear_filter };
}

/// Pillow's bilinear (triangle) filter.
#[inline]
fn bilinear_filter(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

/// Pillow's bicubic filter (`a = -0.5`).
#[inline]
fn bicubic_filter(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = if x < 0.0 { -x } else { x };
    if x < 1.0 {
        return ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    }
    if x < 2.0 {
        return (((x - 5.0) * x + 8.0) * x - 4.0) * A;
    }
    0.0
}

/// Fixed-point resampling coefficients for a range of output positions (Pillow
/// `precompute_coeffs` + `normalize_coeffs_8bpc`).
struct Coeffs {
    ksize: usize,
    /// First source index of each output position.
    start: Vec<usize>,
    /// Number of taps of each output position.
    len: Vec<usize>,
    /// `ksize` coefficients per output position.
    k: Vec<i32>,
}

impl Coeffs {
    fn new(filter: Filter, in_size: usize, out_size: usize, outputs: Range<usize>) -> Coeffs {
        // box = (0, in_size) as floats; scale = (double)(in1 - in0) / outSize
        let scale = f64::from(in_size as f32) / out_size as f64;
        let filterscale = if scale < 1.0 { 1.0 } else { scale };
        let support = filter.support * filterscale;
        let ksize = (support.ceil() as usize) * 2 + 1;
        let inv_filterscale = 1.0 / filterscale;
        let n = outputs.len();
        let mut start = Vec::with_capacity(n);
        let mut len = Vec::with_capacity(n);
        let mut k = vec![0i32; n * ksize];
        let mut w = vec![0f64; ksize];
        for (j, xx) in outputs.enumerate() {
            let center = 0.0 + (xx as f64 + 0.5) * scale;
            // (int)(center - support + 0.5), truncation toward zero (saturating in Rust).
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
            let count = (xmax - xmin).clamp(0, ksize as i64) as usize;
            let xmin = xmin as usize;
            let mut ww = 0.0;
            for (x, wx) in w.iter_mut().enumerate().take(count) {
                let v = (filter.kernel)(((x + xmin) as f64 - center + 0.5) * inv_filterscale);
                *wx = v;
                ww += v;
            }
            let kk = &mut k[j * ksize..(j + 1) * ksize];
            for x in 0..count {
                let mut v = w[x];
                if ww != 0.0 {
                    v /= ww;
                }
                let scaled = v * f64::from(1u32 << PRECISION_BITS);
                kk[x] = if v < 0.0 {
                    (-0.5 + scaled) as i32
                } else {
                    (0.5 + scaled) as i32
                };
            }
            start.push(xmin);
            len.push(count);
        }
        Coeffs {
            ksize,
            start,
            len,
            k,
        }
    }

    /// The source indices any of the outputs reads.
    fn source_span(&self) -> Range<usize> {
        let lo = self.start.iter().copied().min().unwrap_or(0);
        let hi = self
            .start
            .iter()
            .zip(&self.len)
            .map(|(s, l)| s + l)
            .max()
            .unwrap_or(lo);
        lo..hi.max(lo)
    }

    fn taps(&self, j: usize) -> (usize, &[i32]) {
        let k = &self.k[j * self.ksize..j * self.ksize + self.len[j]];
        (self.start[j], k)
    }
}

#[inline]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

const ROUND: i32 = 1 << (PRECISION_BITS - 1);

/// A window of an interleaved 8-bit image: pixel `(x, y)` (in the coordinates of the full
/// image) is at `data[(y - y0) * stride + (x - x0) * C]`.
#[derive(Clone, Copy)]
struct View<'a> {
    data: &'a [u8],
    stride: usize,
    x0: usize,
    y0: usize,
}

/// Horizontal pass over `rows` (full-image coordinates) for the output columns of `coeffs`,
/// premultiplying each row's alpha as it is read when `premultiply_rows`.
/// Output: `rows.len()` rows of `coeffs.start.len()` pixels.
fn horizontal<const C: usize>(
    src: View<'_>,
    rows: Range<usize>,
    coeffs: &Coeffs,
    premultiply_rows: bool,
) -> Vec<u8> {
    let n = coeffs.start.len();
    let span = coeffs.source_span();
    let mut premultiplied = Vec::new();
    let mut out = Vec::with_capacity(rows.len() * n * C);
    for y in rows {
        interrupt::check();
        let mut line = &src.data[(y - src.y0) * src.stride..];
        let mut x0 = src.x0;
        if premultiply_rows {
            premultiplied.clear();
            premultiplied.extend_from_slice(&line[(span.start - x0) * C..(span.end - x0) * C]);
            premultiply(&mut premultiplied, C);
            (line, x0) = (&premultiplied, span.start);
        }
        for j in 0..n {
            let (start, k) = coeffs.taps(j);
            let px = &line[(start - x0) * C..(start - x0 + k.len()) * C];
            let mut ss = [ROUND; C];
            for (p, &kv) in px.chunks_exact(C).zip(k) {
                for c in 0..C {
                    ss[c] += i32::from(p[c]) * kv;
                }
            }
            for v in ss {
                out.push(clip8(v));
            }
        }
    }
    out
}

/// Vertical pass over the columns `cols` (full-image coordinates) for the output rows of
/// `coeffs`. Output: `coeffs.start.len()` rows of `cols.len()` pixels.
fn vertical<const C: usize>(src: View<'_>, cols: Range<usize>, coeffs: &Coeffs) -> Vec<u8> {
    let n = coeffs.start.len();
    let width = cols.len() * C;
    let mut out = Vec::with_capacity(n * width);
    let mut acc = vec![0i32; width];
    for j in 0..n {
        interrupt::check();
        let (start, k) = coeffs.taps(j);
        acc.fill(ROUND);
        for (t, &kv) in k.iter().enumerate() {
            let y = start + t - src.y0;
            let line = &src.data[y * src.stride + (cols.start - src.x0) * C..][..width];
            for (a, &p) in acc.iter_mut().zip(line) {
                *a += i32::from(p) * kv;
            }
        }
        out.extend(acc.iter().map(|&v| clip8(v)));
    }
    out
}

/// Pillow `rgbA2rgba` / `lA2la` (RGBA -> RGBa): `MULDIV255(v, alpha)`.
fn premultiply(region: &mut [u8], ch: usize) {
    for p in region.chunks_exact_mut(ch) {
        let a = u32::from(p[ch - 1]);
        for v in &mut p[..ch - 1] {
            let tmp = u32::from(*v) * a + 128;
            *v = (((tmp >> 8) + tmp) >> 8) as u8;
        }
    }
}

/// Pillow `rgba2rgbA` / `la2lA` (RGBa -> RGBA): `CLIP8(255 * v / alpha)` unless alpha is 0 or 255.
fn unpremultiply(pixels: &mut [u8], ch: usize) {
    for p in pixels.chunks_exact_mut(ch) {
        let a = u32::from(p[ch - 1]);
        if a == 0 || a == 255 {
            continue;
        }
        for v in &mut p[..ch - 1] {
            *v = (255 * u32::from(*v) / a).min(255) as u8;
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn resample_window(
    data: &[u8],
    w: usize,
    h: usize,
    layout: Layout,
    filter: Filter,
    tw: usize,
    th: usize,
    cols: Range<usize>,
    rows: Range<usize>,
) -> Vec<u8> {
    match layout {
        Layout::Gray => resample_window_c::<1>(data, w, h, false, filter, tw, th, cols, rows),
        Layout::GrayAlpha => resample_window_c::<2>(data, w, h, true, filter, tw, th, cols, rows),
        Layout::Rgb => resample_window_c::<3>(data, w, h, false, filter, tw, th, cols, rows),
        Layout::Rgba => resample_window_c::<4>(data, w, h, true, filter, tw, th, cols, rows),
        Layout::Cmyk => resample_window_c::<4>(data, w, h, false, filter, tw, th, cols, rows),
    }
}

/// Pillow `ImagingResampleInner` restricted to the output window `cols` x `rows` of a `tw` x `th`
/// resize.
#[allow(clippy::too_many_arguments)]
fn resample_window_c<const C: usize>(
    data: &[u8],
    w: usize,
    h: usize,
    alpha: bool,
    filter: Filter,
    tw: usize,
    th: usize,
    cols: Range<usize>,
    rows: Range<usize>,
) -> Vec<u8> {
    let need_h = tw != w;
    let need_v = th != h;
    let hc = need_h.then(|| Coeffs::new(filter, w, tw, cols.clone()));
    let vc = need_v.then(|| Coeffs::new(filter, h, th, rows.clone()));
    // The source region the kept window depends on.
    let src_cols = hc.as_ref().map_or(cols.clone(), Coeffs::source_span);
    let src_rows = vc.as_ref().map_or(rows.clone(), Coeffs::source_span);

    let full = View {
        data,
        stride: w * C,
        x0: 0,
        y0: 0,
    };
    // Pillow >= 11: "If height is being scaled down more than twice the amount the width is,
    // run the vertical pass first".
    let (wi, hi, twi, thi) = (w as i64, h as i64, tw as i64, th as i64);
    let horizontal_first = !((hi - thi) > 0 && (hi - thi) > (wi - twi) * 2);
    // RGBA and LA are resized as RGBa / La. A horizontal pass that reads the image premultiplies
    // one row at a time; a vertical one reads a premultiplied copy of the region it reads.
    let horizontal_reads_image = hc.is_some() && (vc.is_none() || horizontal_first);
    let premultiply_rows = alpha && horizontal_reads_image;
    let premultiplied;
    let src = if alpha && !horizontal_reads_image {
        let mut region = copy_window(data, w * C, C, src_cols.clone(), src_rows.clone());
        premultiply(&mut region, C);
        premultiplied = region;
        View {
            data: &premultiplied,
            stride: src_cols.len() * C,
            x0: src_cols.start,
            y0: src_rows.start,
        }
    } else {
        full
    };

    let mut out = match (hc.as_ref(), vc.as_ref()) {
        (Some(hc), Some(vc)) if horizontal_first => {
            let tmp = horizontal::<C>(src, src_rows.clone(), hc, premultiply_rows);
            let tmp_view = View {
                data: &tmp,
                stride: cols.len() * C,
                x0: cols.start,
                y0: src_rows.start,
            };
            vertical::<C>(tmp_view, cols.clone(), vc)
        }
        (Some(hc), Some(vc)) => {
            let tmp = vertical::<C>(src, src_cols.clone(), vc);
            let tmp_view = View {
                data: &tmp,
                stride: src_cols.len() * C,
                x0: src_cols.start,
                y0: rows.start,
            };
            horizontal::<C>(tmp_view, rows.clone(), hc, false)
        }
        (Some(hc), None) => horizontal::<C>(src, rows.clone(), hc, premultiply_rows),
        (None, Some(vc)) => vertical::<C>(src, cols.clone(), vc),
        (None, None) => {
            // Not reached (the caller copies unchanged sizes), kept for completeness.
            let v = src;
            let mut out = Vec::with_capacity(cols.len() * rows.len() * C);
            for y in rows.clone() {
                let line = &v.data[(y - v.y0) * v.stride..];
                out.extend_from_slice(&line[(cols.start - v.x0) * C..(cols.end - v.x0) * C]);
            }
            out
        }
    };
    if alpha {
        unpremultiply(&mut out, C);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preprocess_resized_size_matches_torchvision() {
        assert_eq!(resized_size(300, 200, 224), (336, 224));
        assert_eq!(resized_size(200, 300, 224), (224, 336));
        assert_eq!(resized_size(1, 1, 224), (224, 224));
        assert_eq!(resized_size(3, 500, 224), (224, 37333));
        assert_eq!(resized_size(451, 300, 224), (336, 224));
        assert_eq!(resized_size(224, 224, 224), (224, 224));
    }

    #[test]
    fn preprocess_crop_offset_rounds_half_to_even() {
        assert_eq!(crop_offset(224, 224), 0);
        assert_eq!(crop_offset(225, 224), 0); // round(0.5) = 0
        assert_eq!(crop_offset(227, 224), 2); // round(1.5) = 2
        assert_eq!(crop_offset(229, 224), 2); // round(2.5) = 2
        assert_eq!(crop_offset(231, 224), 4); // round(3.5) = 4
        assert_eq!(crop_offset(336, 224), 56);
    }

    #[test]
    fn preprocess_coefficients_sum_to_one_in_fixed_point() {
        for (i, o) in [(1000, 224), (224, 1000), (3, 224), (300, 224)] {
            let c = Coeffs::new(Filter::BICUBIC, i, o, 0..o);
            for j in 0..o {
                let (_, k) = c.taps(j);
                let sum: i64 = k.iter().map(|&v| i64::from(v)).sum();
                assert!(
                    (sum - (1 << PRECISION_BITS)).abs() <= k.len() as i64,
                    "{i}->{o} {j}"
                );
            }
        }
    }
}

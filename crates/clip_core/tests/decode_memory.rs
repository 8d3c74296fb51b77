//! The heap a large 16-bit RGBA PNG takes to decode and to resize, counted by this test binary's allocator: the
//! decoder cuts each row to 8 bits as it decodes it (Pillow keeps the high byte too), so the image is never whole
//! at 16 bits, and the resize premultiplies the alpha of one row at a time rather than of a copy of the image.
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use clip_core::preprocess::{decode, preprocess, DecodeLimits, PreprocessConfig};

/// The system allocator, counting the bytes allocated now and their peak.
struct Counting;

static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn add(bytes: usize) {
    let now = NOW.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        add(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        NOW.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(new_size);
        NOW.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result with the most bytes it held at once beyond what was allocated before.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = NOW.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let result = f();
    (result, PEAK.load(Ordering::Relaxed) - before)
}

/// A flat, half-transparent colour at 16 bits per sample.
fn rgba16_png(width: u32, height: u32) -> Vec<u8> {
    let mut png = Vec::new();
    let mut encoder = png::Encoder::new(&mut png, width, height);
    encoder.set_color(png::ColorType::Rgba);
    encoder.set_depth(png::BitDepth::Sixteen);
    let mut writer = encoder.write_header().unwrap();
    let mut rows = writer.stream_writer().unwrap();
    let row: Vec<u8> = [0x12, 0x34, 0xab, 0xcd, 0x56, 0x78, 0x80, 0x00].repeat(width as usize);
    for _ in 0..height {
        std::io::Write::write_all(&mut rows, &row).unwrap();
    }
    rows.finish().unwrap();
    writer.finish().unwrap();
    png
}

// One test in this binary: the counts are of the whole process.
#[test]
fn a_16_bit_rgba_png_takes_4_bytes_per_pixel_to_decode_and_little_more_to_resize() {
    let (width, height) = (3000, 2000);
    let png = rgba16_png(width, height);
    let eight_bit = width as usize * height as usize * 4;
    let (image, decoding) = peak_of(|| decode(&png, &DecodeLimits::default()).unwrap());
    // The 16-bit image alone would be 2 x eight_bit.
    assert!(decoding < eight_bit + eight_bit / 16, "decoding peaked at {decoding} bytes for {eight_bit} of pixels");
    let (tensor, resizing) = peak_of(|| preprocess(&image, &PreprocessConfig::openai(224)));
    assert_eq!(tensor.len(), 3 * 224 * 224);
    // What the window depends on, premultiplied whole, would be two thirds of eight_bit here; what is held is the
    // horizontal pass's output (224 of the 3000 columns, about a tenth).
    assert!(resizing < eight_bit / 4, "resizing peaked at {resizing} bytes for {eight_bit} of pixels");
}

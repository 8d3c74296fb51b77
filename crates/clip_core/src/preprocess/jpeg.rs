//! JPEG decoding through libjpeg-turbo, the library Pillow decodes JPEG with, set up as Pillow sets it up
//! (`JDCT_ISLOW`, fancy upsampling), so that JPEG pixels are Pillow's to the byte. The C side is `jpeg.c`: libjpeg
//! reports errors by `longjmp`, which must never cross a Rust frame, so every call into libjpeg happens there and
//! comes back as a status.

use std::ffi::{c_char, c_int, c_long, c_uint, CStr};

use super::ImageError;
use crate::interrupt;

/// The most scans a file may have. Encoders write 1 (baseline) to about 10 (progressive); a file of thousands of
/// tiny scans makes libjpeg work long for few bytes.
const MAX_SCANS: c_int = 1000;

/// Statuses of `jpeg.c`.
const OK: c_int = 0;
const INTERRUPTED: c_int = 2;

#[repr(C)]
struct Handle {
    _opaque: [u8; 0],
}

#[repr(C)]
#[derive(Default)]
struct Output {
    width: c_uint,
    height: c_uint,
    components: c_int,
}

extern "C" {
    fn clip_jpeg_create() -> *mut Handle;
    fn clip_jpeg_destroy(j: *mut Handle);
    fn clip_jpeg_message(j: *const Handle) -> *const c_char;
    fn clip_jpeg_start(
        j: *mut Handle,
        data: *const u8,
        len: usize,
        scale_denom: c_uint,
        max_memory: c_long,
        max_scans: c_int,
        pending: Option<extern "C" fn() -> c_int>,
        output: *mut Output,
    ) -> c_int;
    fn clip_jpeg_read(j: *mut Handle, out: *mut u8, stride: usize) -> c_int;
}

/// A decompressor, destroyed when dropped.
struct Decompressor(*mut Handle);

impl Drop for Decompressor {
    fn drop(&mut self) {
        // SAFETY: created by clip_jpeg_create, destroyed once.
        unsafe { clip_jpeg_destroy(self.0) }
    }
}

/// What libjpeg decoded: interleaved 8-bit samples of the expected components (1 grey, 3 RGB, 4 CMYK as libjpeg
/// gives it).
pub(super) struct Pixels {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

enum Failure {
    Interrupted,
    Image(ImageError),
}

/// Asked by libjpeg's progress monitor as it works: this thread's host's pending test.
extern "C" fn host_pending() -> c_int {
    // Called from C: a panic must not unwind from here. One is taken as a pending interrupt, which ends the
    // decoding and leaves the decision to the check, on the Rust side.
    c_int::from(std::panic::catch_unwind(|| interrupt::pending() == Some(true)).unwrap_or(true))
}

/// What the caller checked in the frame header: the decoded image may have at most this size and must have
/// these components.
pub(super) struct Expected {
    pub width: u32,
    pub height: u32,
    pub components: usize,
}

/// Decodes `bytes` at 1/`scale_denom` of the size (1, 2, 4 or 8), with at most `max_memory` bytes for libjpeg's
/// own buffers (the coefficients of a progressive file). The caller has checked the frame header's size against
/// the pixel limit. An interrupt that the host's pending test reports stops the decoding and runs the
/// [check](crate::interrupt::check); a check that lets the work go on has it decoded again, watched again if the
/// pending test then says no (as after an inference, see `runtime::run`).
pub(super) fn decompress(
    bytes: &[u8],
    scale_denom: u32,
    max_memory: u64,
    expected: &Expected,
) -> Result<Pixels, ImageError> {
    let mut watched = interrupt::pending().is_some();
    loop {
        match decompress_once(bytes, scale_denom, max_memory, expected, watched) {
            Ok(pixels) => return Ok(pixels),
            Err(Failure::Image(e)) => return Err(e),
            Err(Failure::Interrupted) => {
                interrupt::check();
                watched = interrupt::pending() == Some(false);
            }
        }
    }
}

fn decompress_once(
    bytes: &[u8],
    scale_denom: u32,
    max_memory: u64,
    expected: &Expected,
    watched: bool,
) -> Result<Pixels, Failure> {
    // SAFETY: no arguments; a null result is checked.
    let handle = unsafe { clip_jpeg_create() };
    if handle.is_null() {
        return Err(Failure::Image(ImageError::Corrupt(
            "out of memory for the JPEG decoder".to_string(),
        )));
    }
    let decompressor = Decompressor(handle);
    let failure = |status: c_int| {
        if status == INTERRUPTED {
            return Failure::Interrupted;
        }
        // SAFETY: the handle is live; the message is a NUL-terminated buffer inside it.
        let message = unsafe { CStr::from_ptr(clip_jpeg_message(decompressor.0)) };
        Failure::Image(ImageError::Corrupt(format!("JPEG: {}", message.to_string_lossy())))
    };
    let mut output = Output::default();
    let pending = watched.then_some(host_pending as extern "C" fn() -> c_int);
    let max_memory = c_long::try_from(max_memory).unwrap_or(c_long::MAX);
    // SAFETY: `bytes` outlives the decompressor's use of it (both end in this function); `output` is written once.
    let status = unsafe {
        clip_jpeg_start(
            decompressor.0,
            bytes.as_ptr(),
            bytes.len(),
            scale_denom,
            max_memory,
            MAX_SCANS,
            pending,
            &mut output,
        )
    };
    if status != OK {
        return Err(failure(status));
    }
    let (width, height) = (output.width, output.height);
    let components = usize::try_from(output.components).unwrap_or(0);
    // libjpeg's output is never larger than the frame it read, whose size the caller checked: anything else is a
    // different frame, and no buffer is sized from it.
    if width > expected.width || height > expected.height || components != expected.components {
        return Err(Failure::Image(ImageError::Corrupt(format!(
            "JPEG: the decoder gave {width}x{height} pixels of {components} components for a frame of {}x{} of {}",
            expected.width, expected.height, expected.components
        ))));
    }
    let stride = width as usize * components;
    let mut data = vec![0u8; stride * height as usize];
    // SAFETY: `data` holds `height` rows of `stride` bytes, the size libjpeg reported for its output.
    let status = unsafe { clip_jpeg_read(decompressor.0, data.as_mut_ptr(), stride) };
    if status != OK {
        return Err(failure(status));
    }
    Ok(Pixels { width, height, data })
}

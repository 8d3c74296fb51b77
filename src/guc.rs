//! Settings (GUCs). Those that pick files or libraries, or bound memory, are superuser-only (PGC_SUSET):
//! an ordinary user must not be able to make the server read a file of their choosing or allocate without bound.
use std::ffi::{CStr, CString};
use std::path::PathBuf;

use clip_core::preprocess::DecodeLimits;
use clip_core::ModelSettings;
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;

pub static MODEL_DIR: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static ONNXRUNTIME_LIBRARY: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static INTRA_OP_THREADS: GucSetting<i32> = GucSetting::<i32>::new(1);
pub static BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(16);
pub static MAX_IMAGE_PIXELS: GucSetting<i32> = GucSetting::<i32>::new(DecodeLimits::DEFAULT_MAX_PIXELS as i32);

/// Where `scripts/install.sh` puts the ONNX Runtime library, used when clip.onnxruntime_library is unset.
const DEFAULT_ORT_RELATIVE: &str = "clip_search/libonnxruntime.so.1.31.1";

pub fn register() {
    GucRegistry::define_string_guc(
        c"clip.model_dir",
        c"Directory of the CLIP model (manifest.json, text.onnx, image.onnx, tokenizer.json).",
        c"Written by tools/export_model.py. Superuser only.",
        &MODEL_DIR,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"clip.onnxruntime_library",
        c"Path of the ONNX Runtime shared library.",
        c"Empty means $libdir/clip_search/libonnxruntime.so.1.31.1, installed with the extension. Superuser only; \
          the first library loaded stays loaded for the life of the backend.",
        &ONNXRUNTIME_LIBRARY,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"clip.intra_op_threads",
        c"Threads one backend uses for one inference.",
        c"1 runs inference on the backend's own thread. Each backend has its own threads, so keep \
          backends x threads within the cores you want CLIP to use.",
        &INTRA_OP_THREADS,
        1,
        64,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"clip.batch_size",
        c"Inputs per inference in the array functions.",
        c"Larger batches run faster per input and take more memory (an image takes about 0.6 MB of input \
          tensor plus the model's activations). Cancellation is checked between batches.",
        &BATCH_SIZE,
        1,
        1024,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"clip.max_image_pixels",
        c"Largest image (width x height) clip_search decodes.",
        c"Checked from the image header before decoding, so an image that declares a larger size allocates \
          nothing. Decoding needs about 4 bytes per pixel. Superuser only.",
        &MAX_IMAGE_PIXELS,
        1,
        i32::MAX,
        GucContext::Suset,
        GucFlags::default(),
    );
}

fn path_setting(setting: &GucSetting<Option<CString>>) -> Option<PathBuf> {
    setting.get().map(|s| PathBuf::from(s.to_string_lossy().into_owned())).filter(|p| !p.as_os_str().is_empty())
}

pub fn onnxruntime_library() -> PathBuf {
    path_setting(&ONNXRUNTIME_LIBRARY).unwrap_or_else(|| {
        // SAFETY: pkglib_path is a NUL-terminated buffer PostgreSQL fills at start-up.
        let libdir = unsafe { CStr::from_ptr(std::ptr::addr_of!(pg_sys::pkglib_path) as *const std::ffi::c_char) };
        PathBuf::from(libdir.to_string_lossy().into_owned()).join(DEFAULT_ORT_RELATIVE)
    })
}

pub fn model_settings() -> ModelSettings {
    ModelSettings {
        model_dir: path_setting(&MODEL_DIR).unwrap_or_default(),
        onnxruntime_library: onnxruntime_library(),
        intra_threads: INTRA_OP_THREADS.get().max(1) as usize,
    }
}

pub fn batch_size() -> usize {
    BATCH_SIZE.get().max(1) as usize
}

pub fn max_image_pixels() -> u64 {
    MAX_IMAGE_PIXELS.get().max(1) as u64
}

//! Settings (GUCs). Those that pick files or libraries, or bound memory and threads, are superuser-only
//! (PGC_SUSET): an ordinary user must not be able to make the server read a file of their choosing or allocate
//! without bound. The settings any user may change (batch size, threads) are capped by superuser-only ceilings:
//! `SET` above a ceiling is refused, and a value from elsewhere (a configuration file, `ALTER ROLE ... SET`) is
//! capped when it is used, as clip_info() shows.
use std::ffi::{CStr, CString};
use std::path::PathBuf;

use clip_core::preprocess::DecodeLimits;
use clip_core::runtime::Provider;
use clip_core::{ModelSettings, Weights};
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::{pg_guard, pg_sys, PostgresGucEnum};

pub static MODEL_DIR: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static DEFAULT_MODEL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static MAX_LOADED_MODELS: GucSetting<i32> = GucSetting::<i32>::new(2);
pub static ONNXRUNTIME_LIBRARY: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static INTRA_OP_THREADS: GucSetting<i32> = GucSetting::<i32>::new(1);
pub static MAX_INTRA_OP_THREADS: GucSetting<i32> = GucSetting::<i32>::new(4);
pub static BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(16);
pub static MAX_BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(64);
pub static SHARED_WEIGHTS: GucSetting<bool> = GucSetting::<bool>::new(true);
pub static WEIGHTS_CACHE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static WORKER_DATABASES: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static WORKERS_PER_DATABASE: GucSetting<i32> = GucSetting::<i32>::new(1);
pub static WORKER_NAPTIME: GucSetting<i32> = GucSetting::<i32>::new(1000);
pub static JPEG_DRAFT: GucSetting<bool> = GucSetting::<bool>::new(false);
pub static EXECUTION_PROVIDER: GucSetting<ExecutionProvider> = GucSetting::<ExecutionProvider>::new(ExecutionProvider::Cpu);
pub static CUDA_DEVICE: GucSetting<i32> = GucSetting::<i32>::new(0);
pub static MAX_IMAGE_PIXELS: GucSetting<i32> = GucSetting::<i32>::new(DecodeLimits::DEFAULT_MAX_PIXELS as i32);

/// Where `scripts/install.sh` puts the ONNX Runtime library, used when clip.onnxruntime_library is unset.
const DEFAULT_ORT_RELATIVE: &str = concat!("clip_search/libonnxruntime.so.", env!("CLIP_ORT_VERSION"));

pub fn register() {
    GucRegistry::define_string_guc(
        c"clip.model_dir",
        c"Directory of the CLIP model (its manifest.json names the model's files).",
        c"A model installed by clip-fetch or exported from open_clip. Superuser only.",
        &MODEL_DIR,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"clip.default_model",
        c"Registered model that the functions use when they are called without a model.",
        c"A name of clip_models. Empty means the model in clip.model_dir. Superuser only: embeddings stored by \
          generated columns, indexes and triggers must all come from one model.",
        &DEFAULT_MODEL,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"clip.max_loaded_models",
        c"Most models one backend keeps loaded.",
        c"A call that needs another model closes the one used least recently. Each loaded model holds its \
          sessions, each with up to clip.intra_op_threads threads, and, without clip.shared_weights, a copy of \
          its weights. Superuser only.",
        &MAX_LOADED_MODELS,
        1,
        64,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"clip.onnxruntime_library",
        c"Path of the ONNX Runtime shared library.",
        c"Empty means the library installed with the extension, $libdir/clip_search/libonnxruntime.so.VERSION \
          (clip_info() names it). Superuser only; \
          the first library loaded stays loaded for the life of the backend.",
        &ONNXRUNTIME_LIBRARY,
        GucContext::Suset,
        GucFlags::default(),
    );
    // SAFETY: the check hook is a #[pg_guard] function.
    unsafe {
        GucRegistry::define_int_guc_with_hooks(
            c"clip.intra_op_threads",
            c"Threads one backend uses for one inference, and to decode the images of an array.",
            c"1 runs inference and decoding on the backend's own thread. Each backend has its own threads, so keep \
              backends x threads within the cores you want CLIP to use. At most clip.max_intra_op_threads.",
            &INTRA_OP_THREADS,
            1,
            64,
            GucContext::Userset,
            GucFlags::default(),
            Some(check_intra_op_threads),
            None,
            None,
        )
    };
    GucRegistry::define_int_guc(
        c"clip.max_intra_op_threads",
        c"Most threads one backend may use for one inference or to decode images, whatever clip.intra_op_threads \
          says.",
        c"Superuser only: the ceiling an ordinary role cannot lift.",
        &MAX_INTRA_OP_THREADS,
        1,
        64,
        GucContext::Suset,
        GucFlags::default(),
    );
    // SAFETY: the check hook is a #[pg_guard] function.
    unsafe {
        GucRegistry::define_int_guc_with_hooks(
            c"clip.batch_size",
            c"Inputs per inference in the array functions.",
            c"Larger batches run faster per input and take more memory (an image takes about 0.6 MB of input \
              tensor plus the model's activations). At most clip.max_batch_size.",
            &BATCH_SIZE,
            1,
            1024,
            GucContext::Userset,
            GucFlags::default(),
            Some(check_batch_size),
            None,
            None,
        )
    };
    GucRegistry::define_int_guc(
        c"clip.max_batch_size",
        c"Largest batch the array functions run, whatever clip.batch_size says.",
        c"Superuser only: the ceiling an ordinary role cannot lift. A batch's memory is its input tensor and \
          the model's activations (ViT-B-32: about 5 MB per image).",
        &MAX_BATCH_SIZE,
        1,
        1024,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"clip.max_image_pixels",
        c"Largest image (width x height) clip_search decodes.",
        c"Checked from the image header before decoding, so an image that declares a larger size allocates \
          nothing. Decoding needs about 4 bytes per pixel, up to 31 for TIFFs of 16-bit or floating-point \
          samples. Superuser only.",
        &MAX_IMAGE_PIXELS,
        1,
        i32::MAX,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"clip.execution_provider",
        c"What runs the inferences of the background workers and clip_backfill: cpu or cuda.",
        c"cuda needs ONNX Runtime's GPU build in clip.onnxruntime_library (scripts/setup.sh --gpu); where CUDA \
          cannot be used they run on the CPU and say why in a warning. The embedding functions called in queries \
          always run on the CPU. Superuser only: each backend that runs a bulk path on the GPU holds a CUDA \
          context and its own copy of the weights in GPU memory.",
        &EXECUTION_PROVIDER,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"clip.cuda_device",
        c"The GPU that clip.execution_provider = cuda uses (CUDA's device number).",
        c"",
        &CUDA_DEVICE,
        0,
        1023,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"clip.jpeg_draft",
        c"Decode a large JPEG at 1/2, 1/4 or 1/8 of its size, as long as that still covers the model's input size.",
        c"Pillow's draft(): libjpeg-turbo's reduced IDCT skips most of the decoding of a phone photo, and the \
          embedding differs a little from the exact one (docs/operations.md gives the measured cosine). Applies \
          to every function that embeds an image. Superuser only, as it changes what the immutable embedding \
          functions return.",
        &JPEG_DRAFT,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"clip.shared_weights",
        c"Map the model's weights from prepared files shared by every backend, instead of a copy in each.",
        c"On: each tower is prepared once per host into clip.weights_cache and every backend maps it read-only. \
          Off: each backend reads the model files into its own memory. Superuser only.",
        &SHARED_WEIGHTS,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"clip.weights_cache",
        c"Directory of the prepared weights that backends share (clip.shared_weights).",
        c"Empty means .cache/clip_search in the home directory of the server's operating-system user, shared by \
          every cluster that user runs (in the data directory when that user has no home directory). It must be \
          a directory of that user that no one else can write. Superuser only.",
        &WEIGHTS_CACHE,
        GucContext::Suset,
        GucFlags::default(),
    );
    // A postmaster setting can only be defined while the postmaster loads shared_preload_libraries; without
    // that there is no worker, and no setting for it.
    // SAFETY: a plain flag PostgreSQL sets while it loads shared_preload_libraries.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        GucRegistry::define_string_guc(
            c"clip.worker_databases",
            c"Databases whose watched columns a background worker keeps embedded (comma-separated).",
            c"clip.workers_per_database workers per database, started with the server when \
              shared_preload_libraries includes clip_search. Each runs inferences with clip.intra_op_threads \
              threads (at most clip.max_intra_op_threads) in batches of clip.batch_size (at most \
              clip.max_batch_size).",
            &WORKER_DATABASES,
            GucContext::Postmaster,
            GucFlags::default(),
        );
        GucRegistry::define_int_guc(
            c"clip.workers_per_database",
            c"Background workers for each database of clip.worker_databases.",
            c"They share the watches' rows: each batch locks the rows it embeds and passes over those another \
              batch holds. Each adds an inference's memory, the model's weights being shared, and takes a \
              background worker slot (max_worker_processes).",
            &WORKERS_PER_DATABASE,
            1,
            64,
            GucContext::Postmaster,
            GucFlags::default(),
        );
    }
    GucRegistry::define_int_guc(
        c"clip.worker_naptime",
        c"How long a background worker with nothing to embed waits before it looks again.",
        c"In milliseconds.",
        &WORKER_NAPTIME,
        10,
        3_600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    // `SET clip.batchsize = 8` is an error rather than a silently kept placeholder. PostgreSQL 13 and 14 have no
    // reserved prefixes: they warn about the placeholders set before the library loads, and keep later ones.
    // SAFETY: called from _PG_init with a static NUL-terminated prefix.
    #[cfg(not(any(feature = "pg13", feature = "pg14")))]
    unsafe {
        pg_sys::MarkGUCPrefixReserved(c"clip".as_ptr())
    };
    #[cfg(any(feature = "pg13", feature = "pg14"))]
    unsafe {
        pg_sys::EmitWarningsOnPlaceholders(c"clip".as_ptr())
    };
}

#[pg_guard]
unsafe extern "C-unwind" fn check_batch_size(
    value: *mut std::ffi::c_int,
    _extra: *mut *mut std::ffi::c_void,
    source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: PostgreSQL passes the proposed value.
    within_ceiling(unsafe { *value }, MAX_BATCH_SIZE.get(), "clip.max_batch_size", source)
}

#[pg_guard]
unsafe extern "C-unwind" fn check_intra_op_threads(
    value: *mut std::ffi::c_int,
    _extra: *mut *mut std::ffi::c_void,
    source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: PostgreSQL passes the proposed value.
    within_ceiling(unsafe { *value }, MAX_INTRA_OP_THREADS.get(), "clip.max_intra_op_threads", source)
}

/// A check hook's verdict on a setting capped by `ceiling`: a session's `SET` (`SET LOCAL`, `set_config`, a
/// function's `SET` clause) above it is refused with a DETAIL and HINT that name the ceiling. Values from elsewhere
/// (configuration files, `ALTER ROLE ... SET`, which is checked in the session that runs it) are applied in an
/// order the hook cannot know, the ceiling perhaps after them, and so are capped where they are used instead; so
/// is the leader's value that a parallel worker takes over.
fn within_ceiling(value: i32, ceiling: i32, ceiling_name: &str, source: pg_sys::GucSource::Type) -> bool {
    // SAFETY: a plain flag PostgreSQL sets while a parallel worker restores the leader's state.
    if value <= ceiling || source != pg_sys::GucSource::PGC_S_SESSION || unsafe { pg_sys::InitializingParallelWorker } {
        return true;
    }
    let detail = CString::new(format!("{ceiling_name} is {ceiling}, and larger values would not be used."))
        .expect("no NUL");
    let hint = CString::new(format!("A superuser can raise {ceiling_name}.")).expect("no NUL");
    // SAFETY: PostgreSQL reads these palloc'd strings when it reports the refusal.
    unsafe {
        pg_sys::GUC_check_errdetail_string = pg_sys::pstrdup(detail.as_ptr());
        pg_sys::GUC_check_errhint_string = pg_sys::pstrdup(hint.as_ptr());
    }
    false
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

/// clip.execution_provider's values.
#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum ExecutionProvider {
    #[name = c"cpu"]
    Cpu,
    #[name = c"cuda"]
    Cuda,
}

/// What runs the inferences of a bulk path (the workers' and clip_backfill's batches).
pub fn bulk_provider() -> Provider {
    match EXECUTION_PROVIDER.get() {
        ExecutionProvider::Cpu => Provider::Cpu,
        ExecutionProvider::Cuda => Provider::Cuda { device: CUDA_DEVICE.get().max(0) as u32 },
    }
}

/// The settings of the model in `model_dir` (clip.model_dir's when `None`), run on `provider`.
pub fn model_settings(model_dir: Option<PathBuf>, provider: Provider) -> ModelSettings {
    ModelSettings {
        model_dir: model_dir.or_else(|| path_setting(&MODEL_DIR)).unwrap_or_default(),
        onnxruntime_library: onnxruntime_library(),
        intra_threads: INTRA_OP_THREADS.get().min(MAX_INTRA_OP_THREADS.get()).max(1) as usize,
        weights: if SHARED_WEIGHTS.get() {
            Weights::Shared { cache: path_setting(&WEIGHTS_CACHE).unwrap_or_else(default_weights_cache) }
        } else {
            Weights::Heap
        },
        provider,
    }
}

/// clip.default_model, when it names a model.
pub fn default_model() -> Option<String> {
    DEFAULT_MODEL.get().map(|s| s.to_string_lossy().into_owned()).filter(|s| !s.is_empty())
}

pub fn max_loaded_models() -> usize {
    MAX_LOADED_MODELS.get().max(1) as usize
}

/// `.cache/clip_search` in the home directory of the server's operating-system user; in the data directory when
/// that user has no home directory.
fn default_weights_cache() -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from).filter(|h| h.is_absolute()).or_else(|| {
        // SAFETY: getpwuid returns NULL or a pointer to a static record, read before any other passwd call.
        unsafe {
            let entry = libc::getpwuid(libc::geteuid());
            (!entry.is_null() && !(*entry).pw_dir.is_null())
                .then(|| PathBuf::from(CStr::from_ptr((*entry).pw_dir).to_string_lossy().into_owned()))
        }
    });
    match home {
        Some(home) => home.join(".cache/clip_search"),
        // SAFETY: DataDir is set before any backend runs SQL.
        None => unsafe { PathBuf::from(CStr::from_ptr(pg_sys::DataDir).to_string_lossy().into_owned()) }
            .join("clip_search_weights"),
    }
}

/// The databases of clip.worker_databases, each once, in the order given.
pub fn worker_databases() -> Vec<String> {
    let mut databases: Vec<String> = Vec::new();
    if let Some(list) = WORKER_DATABASES.get() {
        for database in list.to_string_lossy().split(',').map(str::trim).filter(|d| !d.is_empty()) {
            if !databases.iter().any(|d| d == database) {
                databases.push(database.to_string());
            }
        }
    }
    databases
}

pub fn workers_per_database() -> usize {
    WORKERS_PER_DATABASE.get().max(1) as usize
}

pub fn worker_naptime() -> std::time::Duration {
    std::time::Duration::from_millis(WORKER_NAPTIME.get().max(10) as u64)
}

/// The batch size in force: clip.batch_size, capped by clip.max_batch_size.
pub fn batch_size() -> usize {
    BATCH_SIZE.get().min(MAX_BATCH_SIZE.get()).max(1) as usize
}

pub fn jpeg_draft() -> bool {
    JPEG_DRAFT.get()
}

pub fn max_image_pixels() -> u64 {
    MAX_IMAGE_PIXELS.get().max(1) as u64
}

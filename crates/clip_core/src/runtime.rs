//! The process-wide ONNX Runtime environment and session creation.
//!
//! ONNX Runtime allows one environment per process and the first library loaded stays loaded, so the
//! environment is created once, lazily (never in the postmaster before fork), and a later request for another
//! library path is refused rather than silently ignored.
use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::ep::CPU;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;

use crate::error::{ClipError, Result};

struct Runtime {
    library: PathBuf,
    environment: Environment,
    version: String,
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

fn unavailable(path: &Path, reason: impl Into<String>) -> ClipError {
    ClipError::RuntimeUnavailable { path: path.to_path_buf(), reason: reason.into() }
}

fn runtime(library: &Path) -> Result<&'static Runtime> {
    if let Some(rt) = RUNTIME.get() {
        if rt.library != library {
            return Err(unavailable(
                library,
                format!("this process already loaded ONNX Runtime from {}; reconnect to use another", rt.library.display()),
            ));
        }
        return Ok(rt);
    }
    // ort reports only "dlopen failed" for a bad path: check the file first for a useful message.
    let meta = std::fs::metadata(library).map_err(|e| unavailable(library, e.to_string()))?;
    if !meta.is_file() {
        return Err(unavailable(library, "not a regular file"));
    }
    let environment = with_signals_blocked(|| {
        ort::init_from(library)
            .map_err(|e| unavailable(library, e.to_string()))?
            .with_name("clip_search")
            .with_telemetry(false)
            .build()
            .map_err(|e| unavailable(library, e.to_string()))
    })?;
    let version = library_version(library);
    Ok(RUNTIME.get_or_init(|| Runtime { library: library.to_path_buf(), environment, version }))
}

/// The library's own version (`OrtGetApiBase()->GetVersionString()`); ort's build info does not carry it.
/// `library` is already loaded by ort, so RTLD_NOLOAD only takes another reference to it.
fn library_version(library: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let unknown = || "unknown".to_string();
    let Ok(path) = CString::new(library.as_os_str().as_bytes()) else { return unknown() };
    // SAFETY: dlopen/dlsym/dlclose on a library ort has loaded; OrtGetApiBase has this signature in every
    // ONNX Runtime release, and the version string it returns is static and NUL-terminated.
    unsafe {
        let handle = libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
        if handle.is_null() {
            return unknown();
        }
        let symbol = libc::dlsym(handle, c"OrtGetApiBase".as_ptr());
        let version = if symbol.is_null() {
            unknown()
        } else {
            let get_base: unsafe extern "C" fn() -> *const ort::sys::OrtApiBase = std::mem::transmute(symbol);
            let base = get_base();
            if base.is_null() {
                unknown()
            } else {
                CStr::from_ptr(((*base).GetVersionString)()).to_string_lossy().into_owned()
            }
        };
        libc::dlclose(handle);
        version
    }
}

/// Loads ONNX Runtime from `library` unless this process already has, and returns its version.
pub fn load(library: &Path) -> Result<&'static str> {
    Ok(runtime(library)?.version.as_str())
}

/// Creates a session for one ONNX graph held in memory. The graph's bytes are consumed: they are freed as soon as
/// the session is built.
///
/// `intra_threads` bounds the threads of this session; 1 means ONNX Runtime runs on the calling thread only.
/// Spinning is off so that idle sessions cost no CPU.
///
/// Memory (measured with ViT-B-32; see BENCHMARKS.md): a session holds its weights once, prepacked for the GEMM
/// kernels (prepacking replaces the original matrices rather than adding to them, and saves 20-25% of the time).
/// ONNX Runtime's CPU arena is off: it would keep the largest activations a backend ever needed for the backend's
/// lifetime (65-90 MB after one batch of 16 images); without it they go back to malloc after each run, and the one
/// large block of the memory pattern straight back to the system. Its cost in CPU time is below the noise.
pub fn create_session(library: &Path, model: Vec<u8>, intra_threads: usize) -> Result<Session> {
    let rt = runtime(library)?;
    let session = with_signals_blocked(|| {
        let session = Session::builder(&rt.environment)?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(ort::Error::from)?
            .with_intra_threads(intra_threads)
            .map_err(ort::Error::from)?
            .with_inter_threads(1)
            .map_err(ort::Error::from)?
            .with_intra_op_spinning(false)
            .map_err(ort::Error::from)?
            .with_inter_op_spinning(false)
            .map_err(ort::Error::from)?
            .with_execution_providers([CPU::default().with_arena_allocator(false).build()])
            .map_err(ort::Error::from)?
            .commit_from_memory(&model)?;
        Ok(session)
    })?;
    drop(model);
    release_free_heap();
    Ok(session)
}

/// Returns the heap's free pages to the system. Building a session parses the graph into a second copy of the
/// weights and frees it once they are placed; glibc keeps much of that freed memory mapped, by an amount that
/// depends on the allocation pattern (measured: 60 MB after loading the text tower, 25 to 230 MB after the image
/// tower). A batch of images frees tens of MB of activations the same way. `malloc_trim` hands them back in well
/// under a millisecond: after building a session here, and after image batches in model.rs (not after single
/// inferences, whose memory the next call reuses).
pub(crate) fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory that malloc holds free; it is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Runs `f` with all signals blocked in the calling thread, so that threads ONNX Runtime starts inside `f`
/// inherit a full mask: PostgreSQL's signal handlers must only ever run on the backend's main thread.
fn with_signals_blocked<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    // SAFETY: plain libc calls on properly initialised sigset_t values owned by this frame.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let result = f();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_library_is_a_clear_error() {
        let err = runtime(Path::new("/nonexistent/libonnxruntime.so")).err().expect("must fail");
        assert!(matches!(err, ClipError::RuntimeUnavailable { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/libonnxruntime.so"), "{err}");
    }
}

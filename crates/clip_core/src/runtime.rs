//! The process-wide ONNX Runtime environment and session creation.
//!
//! ONNX Runtime allows one environment per process and the first library loaded stays loaded, so the
//! environment is created once, lazily (never in the postmaster before fork), and a later request for another
//! library path is refused rather than silently ignored.
use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use ort::environment::Environment;
use ort::ep::{ArenaExtendStrategy, CPU, CUDA};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::builder::SessionBuilder;
use ort::session::{RunOptions, Session, SessionOutputs};
use ort::value::{Value, ValueTypeMarker};

use crate::error::{ClipError, Result};
use crate::interrupt;

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
    let environment = with_signals_blocked(|| -> Result<Environment> {
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

/// The hardware that runs a session's inferences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Provider {
    #[default]
    Cpu,
    /// ONNX Runtime's CUDA execution provider on GPU `device` (the CPU runs the operators it lacks). It needs ONNX
    /// Runtime's GPU build, whose CUDA libraries are looked for beside the ONNX Runtime library first
    /// ([`CUDA_LIBRARIES`]), then where the system's loader looks.
    Cuda { device: u32 },
}

/// A new session, and why it runs on the CPU when CUDA was asked for.
pub struct Created {
    pub session: Session,
    /// Set when CUDA was asked for and could not be used (a build of ONNX Runtime without it, missing CUDA
    /// libraries, no GPU or driver, a GPU without the memory): ONNX Runtime's reason. The session runs on the CPU.
    pub cuda_unavailable: Option<String>,
}

/// Where a session's graph and weights come from.
pub enum SessionSource<'a> {
    /// An ONNX graph and its weights, in memory: optimised at load, its weights copied and prepacked into this
    /// process's heap. The bytes are freed as soon as the session is built.
    Memory(GraphBytes),
    /// A graph written by [`prepare_session_files`]: already optimised, its weights (prepacked ones included)
    /// mapped read-only from the data file beside it, so that every process shares one copy in the page cache.
    Prepared(&'a Path),
}

/// A tower's ONNX graph, read and verified, with its weights inline or in an external data file.
pub struct GraphBytes {
    pub graph: Vec<u8>,
    /// The external data file, for graphs over the 2 GB one ONNX file can hold: the name the graph's initializers
    /// give it, and its bytes.
    pub data: Option<(String, Arc<[u8]>)>,
}

/// Creates a session with `intra_threads` threads (1 means ONNX Runtime runs on the calling thread only) on
/// `provider`, or on the CPU when CUDA cannot be used ([`Created::cuda_unavailable`]). Spinning is off so that idle
/// sessions cost no CPU.
///
/// Memory (measured with ViT-B-32; see BENCHMARKS.md): from memory, a session holds its weights once, prepacked
/// for the GEMM kernels (prepacking replaces the original matrices rather than adding to them, and saves 20-25% of
/// the time); from prepared files it holds almost nothing of its own. ONNX Runtime's CPU arena is off: it would
/// keep the largest activations a backend ever needed for the backend's lifetime (65-90 MB after one batch of 16
/// images); without it they go back to malloc after each run, and the one large block of the memory pattern
/// straight back to the system. Its cost in CPU time is below the noise.
pub fn create_session(
    library: &Path,
    source: SessionSource<'_>,
    intra_threads: usize,
    provider: Provider,
) -> Result<Created> {
    let rt = runtime(library)?;
    let commit = |provider: Provider| -> Result<(Session, Option<String>)> {
        let level = match source {
            SessionSource::Memory(_) => GraphOptimizationLevel::Level3,
            // The graph was optimised when it was prepared: optimising again would gain nothing.
            SessionSource::Prepared(_) => GraphOptimizationLevel::Disable,
        };
        let (mut builder, cuda_unavailable) = with_provider(rt, session_builder(rt, level, intra_threads)?, provider)?;
        let session = match &source {
            SessionSource::Memory(model) => with_data(builder, model)?.commit_from_memory(&model.graph)?,
            SessionSource::Prepared(graph) => builder.commit_from_file(graph)?,
        };
        Ok((session, cuda_unavailable))
    };
    let created = with_signals_blocked(|| -> Result<Created> {
        Ok(match commit(provider) {
            Ok((session, cuda_unavailable)) => Created { session, cuda_unavailable },
            // The CUDA provider registers without touching the GPU, which it first does here: no device, no driver
            // for it, or too little memory fail the session. The CPU's error, if it fails too, is the model's.
            Err(e) if provider != Provider::Cpu => {
                let (session, _) = commit(Provider::Cpu)?;
                Created { session, cuda_unavailable: Some(with_not_loaded(e.to_string(), &rt.library)) }
            }
            Err(e) => return Err(e),
        })
    })?;
    drop(source);
    release_free_heap();
    Ok(created)
}

/// Optimises the graph `model` as [`create_session`] would and writes the result to `graph` with its weights in
/// `<graph's directory>/<data_file>`, the weights prepacked for this CPU and this ONNX Runtime included, so that
/// sessions created from it ([`SessionSource::Prepared`]) map them instead of computing private copies. The data
/// file's name is recorded in the graph relative to it: the directory can be moved as a whole.
pub fn prepare_session_files(library: &Path, model: GraphBytes, graph: &Path, data_file: &str) -> Result<()> {
    let rt = runtime(library)?;
    let session = with_signals_blocked(|| -> Result<Session> {
        let (builder, _) = with_provider(rt, session_builder(rt, GraphOptimizationLevel::Level3, 1)?, Provider::Cpu)?;
        Ok(with_data(builder, &model)?
            .with_optimized_model_path(graph)
            .and_then(|b| b.with_config_entry("session.optimized_model_external_initializers_file_name", data_file))
            .and_then(|b| b.with_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", MIN_EXTERNAL_BYTES))
            .and_then(|b| b.with_config_entry("session.save_external_prepacked_constant_initializers", "1"))
            .map_err(without_builder)?
            .commit_from_memory(&model.graph)?)
    })?;
    drop(session);
    drop(model);
    release_free_heap();
    // A graph without an initializer of MIN_EXTERNAL_BYTES gets no data file: write an empty one, so that every
    // prepared tower has the same files to check.
    let data = graph.with_file_name(data_file);
    if !data.exists() {
        std::fs::File::create(&data).map_err(|e| ClipError::Inference(format!("{}: {e}", data.display())))?;
    }
    Ok(())
}

/// Initializers from this size on go to the data file (with their prepacked forms); smaller ones stay in the graph.
/// ONNX Runtime 1.31 aligns the prepacked blobs it writes only by chance (their offsets follow the sizes of what
/// came before), and a misaligned blob crashes the GEMM kernels that read it; small tensors of odd sizes (an
/// attention mask, a bias) are what shift them, so they stay inline. [`check_prepacked_alignment`] checks the result.
const MIN_EXTERNAL_BYTES: &str = "65536";

/// Refuses a prepared graph whose prepacked blobs are not 64-byte aligned in its data file. The graph records
/// each blob as an external-data entry `<op>+<hash>|<offset>;<length>;<checksum>`; its text is found in the
/// serialised graph without parsing the rest.
pub fn check_prepacked_alignment(graph: &Path) -> Result<()> {
    let bytes = std::fs::read(graph).map_err(|e| ClipError::Inference(format!("{}: {e}", graph.display())))?;
    let entry = regex::bytes::Regex::new(r"\+[0-9]+\|([0-9]+);([0-9]+);").expect("valid pattern");
    for found in entry.captures_iter(&bytes) {
        let offset: u64 = std::str::from_utf8(&found[1]).ok().and_then(|s| s.parse().ok()).unwrap_or(1);
        if !offset.is_multiple_of(64) {
            // Not the model's fault but a limit of shared weights: reported as the cache's error, whose hint offers
            // the in-heap mode.
            return Err(ClipError::WeightsCache {
                path: graph.to_path_buf(),
                reason: format!(
                    "ONNX Runtime stored a prepacked weight at offset {offset}, which is not 64-byte aligned: this \
                     graph cannot use shared weights (set clip.shared_weights = off)"
                ),
            });
        }
    }
    Ok(())
}

fn session_builder(rt: &Runtime, level: GraphOptimizationLevel, intra_threads: usize) -> Result<SessionBuilder> {
    Ok(Session::builder(&rt.environment)?
        .with_optimization_level(level)
        .and_then(|b| b.with_intra_threads(intra_threads))
        .and_then(|b| b.with_inter_threads(1))
        .and_then(|b| b.with_intra_op_spinning(false))
        .and_then(|b| b.with_inter_op_spinning(false))
        .map_err(without_builder)?)
}

/// The CUDA libraries ONNX Runtime's CUDA provider needs, in an order where each comes after those it needs (the
/// order of ort's `CUDA_DYLIBS` and `CUDNN_DYLIBS`, with nvJitLink and cuDNN 9.28's two further libraries). The
/// provider's library, and cuDNN's, name them without a path, so ONNX Runtime's GPU build finds only what the
/// system's loader finds; those beside the ONNX Runtime library are loaded first (scripts/setup.sh --gpu puts them
/// there), so that the loader finds them already loaded.
pub const CUDA_LIBRARIES: &[&str] = &[
    "libcudart.so.13",
    "libcublasLt.so.13",
    "libcublas.so.13",
    "libnvrtc.so.13",
    "libcurand.so.10",
    "libnvJitLink.so.13",
    "libcufft.so.12",
    "libcudnn.so.9",
    "libcudnn_graph.so.9",
    "libcudnn_ops.so.9",
    "libcudnn_heuristic.so.9",
    "libcudnn_adv.so.9",
    "libcudnn_cnn.so.9",
    "libcudnn_engines_precompiled.so.9",
    "libcudnn_engines_runtime_compiled.so.9",
    "libcudnn_engines_tensor_ir.so.9",
    "libcudnn_ext.so.9",
];

/// Adds the execution providers for `provider`: the CPU's, after CUDA's when CUDA is asked for and can be
/// registered; otherwise the CPU's alone, with ONNX Runtime's reason.
fn with_provider(rt: &Runtime, builder: SessionBuilder, provider: Provider) -> Result<(SessionBuilder, Option<String>)> {
    let cpu = || CPU::default().with_arena_allocator(false).build();
    let (builder, cuda_unavailable) = match provider {
        Provider::Cpu => (builder, None),
        Provider::Cuda { device } => {
            load_cuda_libraries(&rt.library);
            let cuda = CUDA::default()
                .with_device_id(device as i32)
                // The arena grows by what a run asks for rather than doubling: a backend's GPU memory follows its
                // largest batch.
                .with_arena_extend_strategy(ArenaExtendStrategy::SameAsRequested)
                .build()
                .error_on_failure();
            match builder.with_execution_providers([cuda, cpu()]) {
                Ok(builder) => return Ok((builder, None)),
                Err(e) => {
                    let reason = with_not_loaded(e.to_string(), &rt.library);
                    (e.recover(), Some(reason))
                }
            }
        }
    };
    Ok((builder.with_execution_providers([cpu()]).map_err(without_builder)?, cuda_unavailable))
}

/// ONNX Runtime's `reason` for not using CUDA, with the [`CUDA_LIBRARIES`] beside `library` that failed to load.
fn with_not_loaded(reason: String, library: &Path) -> String {
    match load_cuda_libraries(library) {
        "" => reason,
        not_loaded => format!("{reason} (beside the ONNX Runtime library, these failed to load: {not_loaded})"),
    }
}

/// Loads the [`CUDA_LIBRARIES`] found beside `library`, once per process, and says which of them failed to load,
/// with the loader's reasons (empty when none did). One that is not there is left to the system's loader.
fn load_cuda_libraries(library: &Path) -> &'static str {
    use std::os::unix::ffi::OsStrExt;
    static NOT_LOADED: OnceLock<String> = OnceLock::new();
    NOT_LOADED.get_or_init(|| {
        let Some(dir) = library.parent() else { return String::new() };
        let mut not_loaded = Vec::new();
        for name in CUDA_LIBRARIES {
            let path = dir.join(name);
            if !path.is_file() {
                continue;
            }
            let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else { continue };
            // SAFETY: loads a library of the superuser's chosen ONNX Runtime directory, as ONNX Runtime itself
            // would; the handle is kept for the process's life (never closed), as the provider uses the library.
            // dlerror's message is copied at once, before another dl call can replace it.
            unsafe {
                if libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL).is_null() {
                    let reason = libc::dlerror();
                    let reason =
                        if reason.is_null() { "unknown".into() } else { CStr::from_ptr(reason).to_string_lossy() };
                    not_loaded.push(format!("{name}: {reason}"));
                }
            }
        }
        not_loaded.join("; ")
    })
}

/// Hands ONNX Runtime the graph's external data file, from memory: the bytes that were verified are the ones used.
/// ONNX Runtime copies what it keeps while it creates the session (zeroing the buffer afterwards changes no
/// embedding), so the bytes are freed with the [`GraphBytes`].
///
/// A graph loaded from memory that names a data file not in the table would have it read from the process's working
/// directory (a backend's is the data directory), unverified; given a table, ONNX Runtime refuses any name not in it.
/// A graph without a data file in the manifest gets a table holding only a name no graph can use.
fn with_data(builder: SessionBuilder, model: &GraphBytes) -> Result<SessionBuilder> {
    static NO_DATA: OnceLock<Arc<[u8]>> = OnceLock::new();
    let (name, bytes) = match &model.data {
        Some((name, bytes)) => (name.as_str(), bytes.clone()),
        None => ("/", NO_DATA.get_or_init(|| Arc::from([0u8].as_slice())).clone()),
    };
    Ok(builder.with_external_initializer_file_in_memory(name, bytes).map_err(without_builder)?)
}

/// A builder's error without the builder it hands back for recovery.
fn without_builder(e: ort::Error<SessionBuilder>) -> ort::Error {
    e.into()
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

/// Runs `session` on `input` and reads its outputs with `read`. Where the host set a pending test (see
/// [`crate::interrupt`]), a watcher terminates the run when a stop may be wanted; the host's check then runs on
/// this thread, after ONNX Runtime has returned, and unwinds from here to stop the work. A check that returns was
/// a false alarm: the inference runs again (the session is unchanged by a terminated run), so the caller gets the
/// same result as from an uninterrupted run. If the pending test still says yes after such a check (the host
/// holds its interrupts off), the new run is not watched: a watcher would only stop it again at once.
pub(crate) fn run<V, T>(
    session: &mut Session,
    input: &Value<V>,
    read: impl FnOnce(&SessionOutputs) -> Result<T>,
) -> Result<T>
where
    V: ValueTypeMarker + ?Sized,
{
    let mut watch = interrupt::pending().is_some();
    loop {
        if !watch {
            return read(&session.run(ort::inputs![input])?);
        }
        let options = RunOptions::new()?;
        let terminate = || {
            // Fails only on a null pointer, which options never is.
            let _ = options.terminate();
        };
        let (outputs, stopped) =
            interrupt::watched(&terminate, || session.run_with_options(ort::inputs![input], &options));
        match outputs {
            // Terminated too late to stop it: the run is complete.
            Ok(outputs) => return read(&outputs),
            Err(e) if !stopped => return Err(e.into()),
            Err(_) => {
                interrupt::check();
                watch = interrupt::pending() == Some(false);
            }
        }
    }
}

/// Runs `f` with all signals blocked in the calling thread, so that threads ONNX Runtime starts inside `f`
/// inherit a full mask: PostgreSQL's signal handlers must only ever run on the backend's main thread. The mask is
/// restored however `f` ends, a panic included: a backend left with SIGINT, SIGTERM and SIGALRM blocked could no
/// longer be cancelled, time out or shut down fast.
pub(crate) fn with_signals_blocked<T>(f: impl FnOnce() -> T) -> T {
    let _restore = SignalMaskGuard::block_all();
    f()
}

/// Blocks every signal in the calling thread while it lives; dropping it restores the previous mask.
struct SignalMaskGuard {
    previous: libc::sigset_t,
}

impl SignalMaskGuard {
    fn block_all() -> SignalMaskGuard {
        // SAFETY: plain libc calls on sigset_t values owned by this frame; sigfillset initialises `all` and
        // pthread_sigmask fills `previous`.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut previous: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut previous);
            SignalMaskGuard { previous }
        }
    }
}

impl Drop for SignalMaskGuard {
    fn drop(&mut self) {
        // SAFETY: `previous` is the mask pthread_sigmask reported when the guard was made.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.previous, std::ptr::null_mut());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current_mask() -> libc::sigset_t {
        // SAFETY: queries the calling thread's mask into a value owned by this frame.
        unsafe {
            let mut mask: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_SETMASK, std::ptr::null(), &mut mask);
            mask
        }
    }

    fn is_blocked(mask: &libc::sigset_t, signal: libc::c_int) -> bool {
        // SAFETY: `mask` is an initialised sigset_t.
        unsafe { libc::sigismember(mask, signal) == 1 }
    }

    #[test]
    fn signal_mask_is_restored_after_a_panic() {
        // Runs on a thread of its own so that the test harness's other threads are untouched.
        std::thread::spawn(|| {
            assert!(!is_blocked(&current_mask(), libc::SIGINT));
            let outcome = std::panic::catch_unwind(|| {
                with_signals_blocked(|| {
                    assert!(is_blocked(&current_mask(), libc::SIGINT), "blocked inside");
                    panic!("a panic inside the blocked section");
                })
            });
            assert!(outcome.is_err());
            let after = current_mask();
            for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGALRM, libc::SIGUSR1] {
                assert!(!is_blocked(&after, signal), "signal {signal} still blocked after the panic");
            }
        })
        .join()
        .expect("the test thread");
    }

    #[test]
    fn misaligned_prepacked_weights_are_refused() {
        let graph = std::env::temp_dir().join(format!("clip_core_alignment_{}.onnx", std::process::id()));
        std::fs::write(&graph, b"\x12\x1bMatMul+3283862689368981968|6976;2048;0\x12\x1aGemm+718469875742029|10048;1024;0")
            .unwrap();
        assert!(check_prepacked_alignment(&graph).is_ok(), "6976 and 10048 are multiples of 64");
        std::fs::write(&graph, b"\x12\x1bMatMul+7507337976677454520|3205284;3072;0").unwrap();
        let err = check_prepacked_alignment(&graph).unwrap_err();
        assert!(matches!(err, ClipError::WeightsCache { .. }) && err.to_string().contains("3205284"), "{err}");
        std::fs::remove_file(graph).unwrap();
    }

    #[test]
    fn missing_library_is_a_clear_error() {
        let err = runtime(Path::new("/nonexistent/libonnxruntime.so")).err().expect("must fail");
        assert!(matches!(err, ClipError::RuntimeUnavailable { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/libonnxruntime.so"), "{err}");
    }
}

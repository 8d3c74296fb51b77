//! Prepared towers: each tower's graph optimised once per host, with its weights (prepacked for this CPU and this
//! ONNX Runtime) in a data file that every backend of every cluster on the host maps read-only, so that the
//! operating system keeps one copy of the weights in its page cache for all of them.
//!
//! Layout: `<cache>/<tower>-<key>/` holds `<tower>.onnx`, `<tower>.data`, `prepared.json` (what the files were made
//! from, and each file's size and sha256) and `verified-<boot id>.json` (each file's identity when it was last
//! hashed in full). The key digests the source tower's sha256 (from the manifest), the ONNX Runtime version, the
//! CPU's features and the recipe version, so another model, runtime or CPU gets a directory of its own.
//!
//! Integrity, layer by layer:
//! * prepared files are made only from source bytes whose sha256 matched the manifest;
//! * every load checks the type, owner and mode of the cache directory, of the tower's directory and of each
//!   file, and each file's size (nobody but the server's user may write any of them);
//! * every file is hashed in full once per boot, and the identity it had then (device, inode, size, modification
//!   and change times) is recorded; a later load in the same boot that finds the same identity skips the hash. The
//!   kernel sets the change time on every write, truncation, permission change or rename over the file, and user
//!   space cannot set it back, so an equal identity means the file was not changed through the file system since.
//!
//! Whoever holds the server's operating-system account or root can defeat any such check, as they can replace the
//! extension itself.
//!
//! Preparation is atomic: the files are written into a temporary directory inside the cache, synced, made
//! read-only and renamed into place, so no process sees a half-written directory. A lock file makes a second
//! process that wants the same tower wait for the first instead of preparing it again. Prepared files are never
//! modified in place: truncating a mapped file would kill every process that reads it (SIGBUS).
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{ClipError, Result};
use crate::manifest::hex;

/// Bumped whenever the way towers are prepared changes, so that older prepared directories are not used.
const RECIPE_VERSION: u32 = 1;
const RECORD: &str = "prepared.json";

/// What a prepared directory was made from, and what it holds.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Record {
    recipe: u32,
    source_sha256: String,
    onnxruntime: String,
    cpu: String,
    files: BTreeMap<String, FileRecord>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct FileRecord {
    size: u64,
    sha256: String,
}

/// A file's identity as the kernel reports it: any change through the file system changes it.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Identity {
    fn of(meta: &fs::Metadata) -> Identity {
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
        }
    }
}

/// One tower to prepare or load: where, for which source graph, and for which ONNX Runtime.
pub struct TowerRequest<'a> {
    pub cache: &'a Path,
    /// "text" or "image": the name of the graph and data files.
    pub tower: &'a str,
    /// The sha256 the manifest gives the source graph (and its data file: [`crate::manifest::TowerFiles::source_sha256`]).
    pub source_sha256: &'a str,
    pub onnxruntime_version: &'a str,
}

impl TowerRequest<'_> {
    fn expected(&self) -> (u32, &str, &str, String) {
        (RECIPE_VERSION, self.source_sha256, self.onnxruntime_version, cpu_features())
    }

    fn directory(&self) -> PathBuf {
        let (recipe, source, onnxruntime, cpu) = self.expected();
        let key = Sha256::digest(format!("recipe {recipe}\nsource {source}\nonnxruntime {onnxruntime}\ncpu {cpu}\n"));
        self.cache.join(format!("{}-{}", self.tower, &hex(&key)[..16]))
    }

    fn graph_name(&self) -> String {
        format!("{}.onnx", self.tower)
    }

    fn data_name(&self) -> String {
        format!("{}.data", self.tower)
    }
}

/// The prepared graph of a tower, checked (see the module documentation). When the cache has none yet,
/// `prepare(graph, data_file_name)` writes it first: the optimised graph to the path `graph` and its weights to
/// `data_file_name` beside it, from source bytes whose sha256 matched the manifest.
pub fn prepared_graph(request: &TowerRequest<'_>, prepare: impl FnOnce(&Path, &str) -> Result<()>) -> Result<PathBuf> {
    let dir = request.directory();
    create_cache(request.cache)?;
    // Whoever can write the cache directory could swap a checked tower directory for another between the check
    // and ONNX Runtime's opening of its files, or block it with a lock file: only the server's user may.
    check_owned_and_private(request.cache, true)
        .map_err(|reason| ClipError::WeightsCache { path: request.cache.to_path_buf(), reason })?;
    if !dir.join(RECORD).exists() {
        let _lock = Lock::acquire(&request.cache.join(format!(".{}.lock", file_name(&dir))))?;
        // Another process may have prepared it while this one waited for the lock.
        if !dir.join(RECORD).exists() {
            prepare_into(request, &dir, prepare)?;
        }
    }
    verify(request, &dir)?;
    Ok(dir.join(request.graph_name()))
}

fn prepare_into(request: &TowerRequest<'_>, dir: &Path, prepare: impl FnOnce(&Path, &str) -> Result<()>) -> Result<()> {
    // Holding the lock: any temporary directory of this tower was left by a preparer that died.
    let tmp = request.cache.join(format!(".tmp-{}", file_name(dir)));
    let _ = fs::remove_dir_all(&tmp);
    fs::DirBuilder::new().mode(0o700).create(&tmp).map_err(|e| cache_error(&tmp, e))?;
    let result = (|| {
        prepare(&tmp.join(request.graph_name()), &request.data_name())?;
        let (recipe, source, onnxruntime, cpu) = request.expected();
        let mut record = Record {
            recipe,
            source_sha256: source.to_string(),
            onnxruntime: onnxruntime.to_string(),
            cpu,
            files: BTreeMap::new(),
        };
        let mut stamp = BTreeMap::new();
        for name in [request.graph_name(), request.data_name()] {
            let path = tmp.join(&name);
            let file = File::open(&path).map_err(|e| cache_error(&path, e))?;
            file.sync_all().map_err(|e| cache_error(&path, e))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o444)).map_err(|e| cache_error(&path, e))?;
            let (size, sha256) = hash_file(&path)?;
            record.files.insert(name.clone(), FileRecord { size, sha256 });
            stamp.insert(name, Identity::of(&file.metadata().map_err(|e| cache_error(&path, e))?));
        }
        write_json(&tmp.join(RECORD), &record)?;
        if let Some(boot) = boot_id() {
            write_json(&tmp.join(format!("verified-{boot}.json")), &stamp)?;
        }
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).map_err(|e| cache_error(&tmp, e))?;
        sync_directory(&tmp)?;
        fs::rename(&tmp, dir).map_err(|e| cache_error(dir, e))?;
        sync_directory(request.cache)
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

fn verify(request: &TowerRequest<'_>, dir: &Path) -> Result<()> {
    let invalid = |reason: String| ClipError::ModelInvalid {
        dir: dir.to_path_buf(),
        reason: format!("{reason}; remove {} to prepare it again", dir.display()),
    };
    check_owned_and_private(dir, true).map_err(&invalid)?;
    let record: Record = read_json(&dir.join(RECORD)).map_err(|e| invalid(format!("{RECORD}: {e}")))?;
    let (recipe, source, onnxruntime, cpu) = request.expected();
    if (record.recipe, record.source_sha256.as_str(), record.onnxruntime.as_str(), record.cpu.as_str())
        != (recipe, source, onnxruntime, cpu.as_str())
    {
        return Err(invalid(format!("{RECORD} describes another model, runtime or CPU")));
    }
    let names = std::collections::BTreeSet::from([request.graph_name(), request.data_name()]);
    if !record.files.keys().eq(names.iter()) {
        return Err(invalid(format!("{RECORD} lists other files")));
    }
    let mut identities = BTreeMap::new();
    for (name, file) in &record.files {
        let path = dir.join(name);
        let meta = check_owned_and_private(&path, false).map_err(&invalid)?;
        if meta.size() != file.size {
            return Err(invalid(format!("{name} has {} bytes, {RECORD} says {}", meta.size(), file.size)));
        }
        identities.insert(name.clone(), Identity::of(&meta));
    }
    let Some(boot) = boot_id() else {
        // Without a boot id there is no knowing whether the files were hashed since the last boot.
        return hash_and_compare(dir, &record, &invalid);
    };
    let stamp_path = dir.join(format!("verified-{boot}.json"));
    let stamped = || read_json::<BTreeMap<String, Identity>>(&stamp_path).is_ok_and(|stamp| stamp == identities);
    if stamped() {
        return Ok(());
    }
    // The lock and the stamp only spare other backends a hash: where they cannot be written (a cache prepared
    // elsewhere and mounted read-only, a full disk), every load hashes the files instead of failing.
    let lock = Lock::acquire(&request.cache.join(format!(".{}.lock", file_name(dir)))).ok();
    // Backends that start together after a boot wait here for the first one's hash rather than hash again.
    if lock.is_some() && stamped() {
        return Ok(());
    }
    hash_and_compare(dir, &record, &invalid)?;
    if lock.is_some() {
        // The identities before the hash: a file changed while it was hashed does not get its new identity
        // recorded.
        let tmp = dir.join(format!(".verified-{boot}.json.tmp"));
        let _ = fs::remove_file(&tmp); // left by a process that died here, under the lock this one holds now
        if write_json(&tmp, &identities).is_err() || fs::rename(&tmp, &stamp_path).is_err() {
            let _ = fs::remove_file(&tmp);
        }
    }
    Ok(())
}

fn hash_and_compare(dir: &Path, record: &Record, invalid: &dyn Fn(String) -> ClipError) -> Result<()> {
    for (name, file) in &record.files {
        let (size, sha256) = hash_file(&dir.join(name))?;
        if size != file.size || sha256 != file.sha256 {
            return Err(invalid(format!("{name} has sha256 {sha256}, {RECORD} says {}", file.sha256)));
        }
    }
    Ok(())
}

/// A regular file or directory (not a symbolic link), owned by this process's user, that nobody else can write.
fn check_owned_and_private(path: &Path, directory: bool) -> std::result::Result<fs::Metadata, String> {
    let meta = fs::symlink_metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let kind_ok = if directory { meta.is_dir() } else { meta.is_file() };
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if !kind_ok || meta.uid() != euid || meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{} must be a {} owned by user {euid} that no one else can write",
            path.display(),
            if directory { "directory" } else { "regular file" }
        ));
    }
    Ok(meta)
}

fn create_cache(cache: &Path) -> Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(cache).map_err(|e| cache_error(cache, e))
}

fn cache_error(path: &Path, e: std::io::Error) -> ClipError {
    ClipError::WeightsCache { path: path.to_path_buf(), reason: e.to_string() }
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn hash_file(path: &Path) -> Result<(u64, String)> {
    let mut file = File::open(path).map_err(|e| cache_error(path, e))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buffer).map_err(|e| cache_error(path, e))?;
        if n == 0 {
            return Ok((size, hex(&hasher.finalize())));
        }
        hasher.update(&buffer[..n]);
        size += n as u64;
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_vec_pretty(value).expect("plain data serialises");
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o444).open(path).map_err(|e| cache_error(path, e))?;
    file.write_all(&text).and_then(|()| file.sync_all()).map_err(|e| cache_error(path, e))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> std::result::Result<T, String> {
    let mut text = Vec::new();
    File::open(path).and_then(|f| f.take(1 << 20).read_to_end(&mut text)).map_err(|e| e.to_string())?;
    serde_json::from_slice(&text).map_err(|e| e.to_string())
}

fn sync_directory(path: &Path) -> Result<()> {
    File::open(path).and_then(|d| d.sync_all()).map_err(|e| cache_error(path, e))
}

/// This boot of the machine; None where the kernel does not say.
fn boot_id() -> Option<String> {
    let id = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = id.trim();
    (!id.is_empty() && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-')).then(|| id.to_string())
}

/// The CPU features ONNX Runtime's kernels choose by, which decide the layout of prepacked weights. (AMX cannot be
/// asked for on stable Rust; the CPUs that have it are told apart by avx512fp16.)
pub fn cpu_features() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        let features = [
            ("avx", std::is_x86_feature_detected!("avx")),
            ("avx2", std::is_x86_feature_detected!("avx2")),
            ("fma", std::is_x86_feature_detected!("fma")),
            ("f16c", std::is_x86_feature_detected!("f16c")),
            ("avx512f", std::is_x86_feature_detected!("avx512f")),
            ("avx512bw", std::is_x86_feature_detected!("avx512bw")),
            ("avx512dq", std::is_x86_feature_detected!("avx512dq")),
            ("avx512vl", std::is_x86_feature_detected!("avx512vl")),
            ("avx512vnni", std::is_x86_feature_detected!("avx512vnni")),
            ("avxvnni", std::is_x86_feature_detected!("avxvnni")),
            ("avx512bf16", std::is_x86_feature_detected!("avx512bf16")),
            ("avx512fp16", std::is_x86_feature_detected!("avx512fp16")),
        ];
        let present: Vec<&str> = features.iter().filter(|(_, on)| *on).map(|(name, _)| *name).collect();
        format!("x86_64 {}", present.join(" "))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::env::consts::ARCH.to_string()
    }
}

/// An exclusive `flock` on a lock file, released when dropped (or when the process dies).
struct Lock(File);

impl Lock {
    fn acquire(path: &Path) -> Result<Lock> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| cache_error(path, e))?;
        use std::os::fd::AsRawFd;
        loop {
            // SAFETY: flock on a descriptor this struct owns.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(Lock(file));
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(cache_error(path, e));
            }
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: unlocks the descriptor this struct owns; closing it would too.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

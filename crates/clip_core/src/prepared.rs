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
//! Preparation is atomic: the files are written into a temporary directory inside the cache (`.tmp-<tower>-<key>`),
//! synced, made read-only and renamed into place, so no process sees a half-written directory. A lock file
//! (`.<tower>-<key>.lock`) makes a second process that wants the same tower wait for the first instead of preparing
//! it again; whoever holds it owns the temporary directory. Before it starts, preparation checks that the cache's
//! file system has room for the tower, and a full disk (or quota) is reported as the cache's error, not the
//! model's. Prepared files are never modified in place: truncating a mapped file would kill every process that
//! reads it (SIGBUS).
//!
//! Removal: the cache keeps a directory for every model, ONNX Runtime and CPU it has seen, so [`cache_entries`]
//! lists them and [`remove_unused`] removes those a caller no longer wants. A process marks the tower it uses with
//! a shared `flock` on its `prepared.json`, taken before the files are checked and held as long as its session
//! lives ([`InUse`]); a directory is removed only under an exclusive lock on that file, taken without waiting, so
//! never while a process maps its files. The removal renames the directory to its temporary name under the
//! tower's lock file first, so no process finds it half removed, and a process that took its shared lock on the
//! removed directory sees that the file at the path is not the one it locked and prepares the tower again.
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
/// The hex digits of the key in a tower directory's name.
const KEY_DIGITS: usize = 16;
/// What preparing needs beyond the prepared files' estimate (ONNX Runtime's own writes, the record, the stamp).
const SPACE_MARGIN: u64 = 16 << 20;
/// The most a preparation leaves free on its file system for the rest of the server (its WAL above all, which
/// stops the server when it cannot be written): 5% of the file system, and at most this.
const RESERVE_MAX: u64 = 1 << 30;
/// Less than this free after a preparation failed means that the preparation filled the file system: a write stops
/// at ENOSPC with (almost) nothing left.
const FULL_BELOW: u64 = 1 << 20;

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
    /// The size of the source graph and its data file, from which the room that preparing needs is estimated.
    pub source_bytes: u64,
    pub onnxruntime_version: &'a str,
}

impl TowerRequest<'_> {
    fn expected(&self) -> (u32, &str, &str, String) {
        (RECIPE_VERSION, self.source_sha256, self.onnxruntime_version, cpu_features())
    }

    fn directory(&self) -> PathBuf {
        let (recipe, source, onnxruntime, cpu) = self.expected();
        let key = Sha256::digest(format!("recipe {recipe}\nsource {source}\nonnxruntime {onnxruntime}\ncpu {cpu}\n"));
        self.cache.join(format!("{}-{}", self.tower, &hex(&key)[..KEY_DIGITS]))
    }

    fn graph_name(&self) -> String {
        format!("{}.onnx", self.tower)
    }

    fn data_name(&self) -> String {
        format!("{}.data", self.tower)
    }
}

/// A prepared tower, checked and marked in use.
pub struct PreparedTower {
    /// The optimised graph, to create a session from ([`crate::runtime::SessionSource::Prepared`]).
    pub graph: PathBuf,
    /// Keep it as long as the session lives: the tower's directory is not removed while it is held.
    pub in_use: InUse,
}

/// A shared `flock` on a prepared tower's `prepared.json`, released when dropped (or when the process dies). While
/// any process holds one, [`remove_unused`] leaves the tower's directory alone.
pub struct InUse {
    record: File,
}

impl InUse {
    /// A shared lock on the file at `record`, which stays on that file wherever it is renamed.
    fn lock(record: &Path) -> std::io::Result<InUse> {
        let record = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(record)?;
        flock(&record, libc::LOCK_SH)?;
        Ok(InUse { record })
    }

    /// Marks the tower whose record is `record` in use; None where there is no such tower, or where it was removed
    /// or replaced while this process waited for the lock.
    fn take(record: &Path) -> Result<Option<InUse>> {
        match InUse::lock(record) {
            // A remover renames the directory away under its exclusive lock: the file locked here must still be
            // the one at the path.
            Ok(in_use) => Ok(is_at(&in_use.record, record).then_some(in_use)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(cache_error(record, e)),
        }
    }
}

/// The prepared graph of a tower, checked (see the module documentation) and marked in use. When the cache has
/// none yet, `prepare(graph, data_file_name)` writes it first: the optimised graph to the path `graph` and its
/// weights to `data_file_name` beside it, from source bytes whose sha256 matched the manifest.
pub fn prepared_graph(
    request: &TowerRequest<'_>,
    prepare: impl FnOnce(&Path, &str) -> Result<()>,
) -> Result<PreparedTower> {
    let dir = request.directory();
    create_cache(request.cache)?;
    // Whoever can write the cache directory could swap a checked tower directory for another between the check
    // and ONNX Runtime's opening of its files, or block it with a lock file: only the server's user may.
    check_owned_and_private(request.cache, true)
        .map_err(|reason| ClipError::WeightsCache { path: request.cache.to_path_buf(), reason })?;
    let record = dir.join(RECORD);
    // Taken before the files are checked, so that they cannot be removed between the check and their use.
    let in_use = match InUse::take(&record)? {
        Some(in_use) => in_use,
        None => {
            // Under the tower's lock no directory is renamed in or away: what is there now stays.
            let _lock = Lock::acquire(&lock_path(&dir))?;
            // Another process may have prepared it while this one waited for the lock.
            match InUse::take(&record)? {
                Some(in_use) => in_use,
                None => prepare_into(request, &dir, prepare)?,
            }
        }
    };
    verify(request, &dir)?;
    Ok(PreparedTower { graph: dir.join(request.graph_name()), in_use })
}

/// Prepares the tower into `dir` and returns it marked in use. The caller holds the tower's lock.
fn prepare_into(
    request: &TowerRequest<'_>,
    dir: &Path,
    prepare: impl FnOnce(&Path, &str) -> Result<()>,
) -> Result<InUse> {
    // Holding the lock: any temporary directory of this tower was left by a preparer that died.
    let tmp = temporary_path(dir);
    let _ = fs::remove_dir_all(&tmp);
    let needed = space_needed(request.source_bytes);
    let space = free_space(request.cache);
    let free_before = space.map(|s| s.free);
    if let Some(shortage) = space.and_then(|s| space_shortage(request.cache, request.tower, needed, s)) {
        return Err(shortage);
    }
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
        // Marked in use before it can be found, so that no remover can take it between the rename and the use.
        let record = tmp.join(RECORD);
        let in_use = InUse::lock(&record).map_err(|e| cache_error(&record, e))?;
        fs::rename(&tmp, dir).map_err(|e| cache_error(dir, e))?;
        sync_directory(request.cache)?;
        Ok(in_use)
    })();
    if let Err(error) = &result {
        // Measured before the partial files are removed: a disk that filled up has (almost) nothing free now.
        let full = free_space(request.cache).is_some_and(|s| s.free < FULL_BELOW) || is_out_of_space(error);
        let _ = fs::remove_dir_all(&tmp);
        if full {
            return Err(ClipError::WeightsCache {
                path: request.cache.to_path_buf(),
                reason: format!(
                    "its file system ran out of space while preparing the {} tower, which needs about {} ({} was free \
                     before)",
                    request.tower,
                    megabytes(needed, true),
                    free_before.map_or_else(|| "an unknown amount".to_string(), |free| megabytes(free, false)),
                ),
            });
        }
    }
    result
}

/// The room preparing a tower takes: the prepared graph and data hold about what the source held (the weights,
/// prepacked for the CPU), with a quarter more and a fixed margin for what ONNX Runtime adds.
fn space_needed(source_bytes: u64) -> u64 {
    source_bytes.saturating_add(source_bytes / 4).saturating_add(SPACE_MARGIN)
}

/// The cache's error where the file system cannot hold the `needed` bytes of preparing `tower` and keep its
/// reserve free; None where it can.
fn space_shortage(cache: &Path, tower: &str, needed: u64, space: Space) -> Option<ClipError> {
    let reserve = (space.total / 20).min(RESERVE_MAX);
    (space.free < needed.saturating_add(reserve)).then(|| ClipError::WeightsCache {
        path: cache.to_path_buf(),
        reason: format!(
            "the file system of {} has {} free; preparing the {tower} tower needs about {} and leaves {} free for \
             the rest of the server",
            cache.display(),
            megabytes(space.free, false),
            megabytes(needed, true),
            megabytes(reserve, true)
        ),
    })
}

/// A file system's room, in bytes: what an unprivileged user may still write, and its size.
#[derive(Clone, Copy)]
struct Space {
    free: u64,
    total: u64,
}

/// Bytes as whole megabytes (10^6), rounded up or down.
fn megabytes(bytes: u64, up: bool) -> String {
    let whole = if up { bytes.div_ceil(1_000_000) } else { bytes / 1_000_000 };
    format!("{whole} MB")
}

/// The room on the file system of `path`; None where the kernel does not say.
fn free_space(path: &Path) -> Option<Space> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into a value owned by this frame, from a NUL-terminated path.
    let stat = unsafe {
        let mut stat: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(path.as_ptr(), &mut stat) != 0 {
            return None;
        }
        stat
    };
    let frsize = stat.f_frsize as u64;
    Some(Space { free: (stat.f_bavail as u64).saturating_mul(frsize), total: (stat.f_blocks as u64).saturating_mul(frsize) })
}

/// Whether an error of preparing says that the disk or the user's quota is full. ONNX Runtime reports the failure
/// of its own writes as text, so the system's messages for ENOSPC and EDQUOT are looked for in it.
fn is_out_of_space(error: &ClipError) -> bool {
    let text = error.to_string();
    ["No space left on device", "Disk quota exceeded"].iter().any(|message| text.contains(message))
}

/// A prepared tower in the cache, as [`cache_entries`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    /// The tower's directory.
    pub path: PathBuf,
    /// "text" or "image".
    pub tower: String,
    /// The sha256 of the source the tower was prepared from ([`TowerRequest::source_sha256`]).
    pub source_sha256: String,
    /// The ONNX Runtime version it was prepared by.
    pub onnxruntime: String,
    /// The CPU features it was prepared for ([`cpu_features`]).
    pub cpu: String,
    /// The version of the way it was prepared.
    pub recipe: u32,
    /// The size of its files.
    pub bytes: u64,
    /// Whether a process held it in use ([`InUse`]) when it was listed.
    pub in_use: bool,
}

impl CacheEntry {
    /// Whether a process running ONNX Runtime `onnxruntime_version` on this CPU can use this entry (for the model it
    /// was prepared from): it was prepared by the current recipe, for this CPU and by that runtime.
    pub fn is_current(&self, onnxruntime_version: &str) -> bool {
        self.recipe == RECIPE_VERSION && self.onnxruntime == onnxruntime_version && self.cpu == cpu_features()
    }
}

/// What [`remove_unused`] removed.
#[derive(Debug, Default)]
pub struct Removal {
    /// The prepared towers, as they were listed just before their removal.
    pub towers: Vec<CacheEntry>,
    /// Temporary directories of preparations that died, and lock files of towers that are gone.
    pub leftovers: Vec<PathBuf>,
}

/// The prepared towers in `cache`, by their directories' names; none where there is no cache. A directory that is
/// not the cache's own (a symbolic link, not owned by this process's user, writable by others) or that has no
/// readable `prepared.json` is left out, and never removed.
pub fn cache_entries(cache: &Path) -> Result<Vec<CacheEntry>> {
    let mut entries = Vec::new();
    for name in cache_names(cache)? {
        if let Some((entry, _probe)) = inspect(&cache.join(name))? {
            entries.push(entry);
        }
    }
    Ok(entries)
}

/// Removes from `cache` each prepared tower for which `keep` is false and that no process holds in use, then the
/// temporary directories of preparations that died and the lock files of towers that are gone. What is in use or
/// locked is left for a later call, and only what [`cache_entries`] lists (and such leftovers of the cache's own)
/// is touched.
pub fn remove_unused(cache: &Path, keep: impl Fn(&CacheEntry) -> bool) -> Result<Removal> {
    let mut removal = Removal::default();
    let names = cache_names(cache)?;
    for name in &names {
        let dir = cache.join(name);
        // Unless the tower is in use, `_record` holds the exclusive lock on its record: no process can take it
        // into use until the directory is gone.
        let Some((entry, _record)) = inspect(&dir)? else { continue };
        if entry.in_use || keep(&entry) {
            continue;
        }
        // Under the tower's lock no process prepares it, and the temporary name is free to take.
        let Ok(Some(lock)) = Lock::try_acquire(&lock_path(&dir)) else { continue };
        let tmp = temporary_path(&dir);
        remove_directory(&tmp)?;
        fs::rename(&dir, &tmp).map_err(|e| cache_error(&dir, e))?;
        remove_directory(&tmp)?;
        remove_lock_file(lock, &dir);
        removal.towers.push(entry);
    }
    for name in &names {
        let Some(dir) = leftover_of(name, ".tmp-", "") else { continue };
        let (tmp, dir) = (cache.join(name), cache.join(dir));
        if check_owned_and_private(&tmp, true).is_err() {
            continue;
        }
        // Its preparer holds the tower's lock while it lives.
        let Ok(Some(lock)) = Lock::try_acquire(&lock_path(&dir)) else { continue };
        remove_directory(&tmp)?;
        removal.leftovers.push(tmp);
        if remove_lock_file(lock, &dir) {
            removal.leftovers.push(lock_path(&dir));
        }
    }
    for name in &names {
        let Some(dir) = leftover_of(name, ".", ".lock") else { continue };
        let (path, dir) = (cache.join(name), cache.join(dir));
        if check_owned_and_private(&path, false).is_err() {
            continue;
        }
        let Ok(Some(lock)) = Lock::try_acquire(&path) else { continue };
        if remove_lock_file(lock, &dir) {
            removal.leftovers.push(path);
        }
    }
    Ok(removal)
}

/// The name of the tower directory that `name` (`<prefix><tower directory><suffix>`) belongs to.
fn leftover_of<'a>(name: &'a str, prefix: &str, suffix: &str) -> Option<&'a str> {
    name.strip_prefix(prefix).and_then(|rest| rest.strip_suffix(suffix)).filter(|dir| tower_of(dir).is_some())
}

/// The names in `cache` that may be the cache's own, sorted; none where there is no cache.
fn cache_names(cache: &Path) -> Result<Vec<String>> {
    if fs::symlink_metadata(cache).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
        return Ok(Vec::new());
    }
    check_owned_and_private(cache, true)
        .map_err(|reason| ClipError::WeightsCache { path: cache.to_path_buf(), reason })?;
    let mut names = Vec::new();
    for entry in fs::read_dir(cache).map_err(|e| cache_error(cache, e))? {
        let entry = entry.map_err(|e| cache_error(cache, e))?;
        names.extend(entry.file_name().into_string());
    }
    names.sort();
    Ok(names)
}

/// The tower of a tower directory's name `<tower>-<key>`.
fn tower_of(name: &str) -> Option<&str> {
    let (tower, key) = name.rsplit_once('-')?;
    let valid = !tower.is_empty()
        && !tower.starts_with('.')
        && key.len() == KEY_DIGITS
        && key.bytes().all(|b| b.is_ascii_hexdigit());
    valid.then_some(tower)
}

/// The entry of the tower directory `dir`, with its record open; None where `dir` is not one of the cache's own.
/// Unless the entry is in use, the record is locked exclusively until it is closed.
fn inspect(dir: &Path) -> Result<Option<(CacheEntry, File)>> {
    let Some(tower) = tower_of(&file_name(dir)).map(str::to_string) else { return Ok(None) };
    if check_owned_and_private(dir, true).is_err() {
        return Ok(None);
    }
    let path = dir.join(RECORD);
    let Ok(file) = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&path) else { return Ok(None) };
    let mut text = Vec::new();
    if (&file).take(1 << 20).read_to_end(&mut text).is_err() {
        return Ok(None);
    }
    let Ok(record) = serde_json::from_slice::<Record>(&text) else { return Ok(None) };
    let bytes = fs::read_dir(dir)
        .map_err(|e| cache_error(dir, e))?
        .filter_map(|entry| entry.ok()?.metadata().ok())
        .filter(fs::Metadata::is_file)
        .map(|meta| meta.len())
        .sum();
    let in_use = !try_exclusive(&file, &path)?;
    let entry = CacheEntry {
        path: dir.to_path_buf(),
        tower,
        source_sha256: record.source_sha256,
        onnxruntime: record.onnxruntime,
        cpu: record.cpu,
        recipe: record.recipe,
        bytes,
        in_use,
    };
    Ok(Some((entry, file)))
}

/// Removes a directory of the cache's own and what it holds, if it is there. Its files are read-only, but removing
/// them takes only the right to write the directory, which its owner has (0755, or 0700 while it is prepared).
fn remove_directory(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(cache_error(path, e)),
        _ => Ok(()),
    }
}

/// Unlinks the tower's lock file, which `lock` holds, where the tower has neither its directory nor a temporary
/// one; whether it did. A process waiting on the unlinked file sees that it is not the one at the path any more.
fn remove_lock_file(_lock: Lock, dir: &Path) -> bool {
    let absent = |path: &Path| fs::symlink_metadata(path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound);
    absent(dir) && absent(&temporary_path(dir)) && fs::remove_file(lock_path(dir)).is_ok()
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
    let lock = Lock::acquire(&lock_path(dir)).ok();
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
        // A remover unlinks a stale lock file while it holds it: a process that was waiting on that file tries
        // the one at the path now.
        for _ in 0..LOCK_ATTEMPTS {
            let file = Lock::open(path).map_err(|e| cache_error(path, e))?;
            flock(&file, libc::LOCK_EX).map_err(|e| cache_error(path, e))?;
            if is_at(&file, path) {
                return Ok(Lock(file));
            }
        }
        Err(ClipError::WeightsCache { path: path.to_path_buf(), reason: "the lock file was replaced too often".into() })
    }

    /// The lock, or None where another process holds it.
    fn try_acquire(path: &Path) -> Result<Option<Lock>> {
        let file = Lock::open(path).map_err(|e| cache_error(path, e))?;
        Ok(try_exclusive(&file, path)?.then_some(Lock(file)))
    }

    fn open(path: &Path) -> std::io::Result<File> {
        let mut options = OpenOptions::new();
        options.create(true).truncate(false).write(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(path)
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: unlocks the descriptor this struct owns; closing it would too.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// How often [`Lock::acquire`] tries again when the lock file it waited on was unlinked meanwhile.
const LOCK_ATTEMPTS: usize = 100;

/// `flock(operation)` on `file`, tried again when a signal interrupts it.
fn flock(file: &File, operation: libc::c_int) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: flock on a descriptor that `file` owns.
        if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Takes an exclusive lock on `file` without waiting: false where another open file holds a lock on it, or where
/// `file` is no longer the one at `path`.
fn try_exclusive(file: &File, path: &Path) -> Result<bool> {
    match flock(file, libc::LOCK_EX | libc::LOCK_NB) {
        Ok(()) => Ok(is_at(file, path)),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(cache_error(path, e)),
    }
}

/// Whether the open `file` is the one at `path` now (not a file removed or replaced since it was opened).
fn is_at(file: &File, path: &Path) -> bool {
    match (file.metadata(), fs::symlink_metadata(path)) {
        (Ok(open), Ok(there)) => (open.dev(), open.ino()) == (there.dev(), there.ino()),
        _ => false,
    }
}

fn lock_path(dir: &Path) -> PathBuf {
    dir.with_file_name(format!(".{}.lock", file_name(dir)))
}

/// Where a tower's directory is written before it is renamed into place, and renamed to before it is removed.
fn temporary_path(dir: &Path) -> PathBuf {
    dir.with_file_name(format!(".tmp-{}", file_name(dir)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh cache directory of its own for each test.
    fn empty_cache(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("clip_core_prepared_{name}_{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn request<'a>(cache: &'a Path, tower: &'a str, source_sha256: &'a str) -> TowerRequest<'a> {
        TowerRequest { cache, tower, source_sha256, source_bytes: 1000, onnxruntime_version: "1.0.0" }
    }

    /// Stands in for ONNX Runtime: writes a graph and a data file.
    fn write_tower(graph: &Path, data_file: &str) -> Result<()> {
        fs::write(graph, b"graph").and_then(|()| fs::write(graph.with_file_name(data_file), vec![7u8; 4096]))
            .map_err(|e| cache_error(graph, e))
    }

    fn prepared(request: &TowerRequest<'_>) -> PreparedTower {
        prepared_graph(request, write_tower).unwrap()
    }

    fn names(cache: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            fs::read_dir(cache).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        names
    }

    #[test]
    fn entries_are_listed_with_what_they_were_prepared_from_and_whether_they_are_in_use() {
        let cache = empty_cache("listing");
        assert_eq!(cache_entries(&cache).unwrap(), Vec::new(), "no cache yet");
        let text = prepared(&request(&cache, "text", "aaa"));
        drop(prepared(&request(&cache, "image", "bbb")));
        let entries = cache_entries(&cache).unwrap();
        assert_eq!(entries.len(), 2, "{entries:?}");
        let (image, text_entry) = (&entries[0], &entries[1]);
        assert_eq!((image.tower.as_str(), image.source_sha256.as_str(), image.in_use), ("image", "bbb", false));
        let text_fields = (text_entry.tower.as_str(), text_entry.source_sha256.as_str(), text_entry.in_use);
        assert_eq!(text_fields, ("text", "aaa", true));
        assert_eq!(text_entry.path, text.graph.parent().unwrap());
        assert_eq!((text_entry.onnxruntime.as_str(), text_entry.recipe), ("1.0.0", RECIPE_VERSION));
        assert_eq!(text_entry.cpu, cpu_features());
        assert!(text_entry.bytes > 4096 + 5, "the graph, the data file and the record: {}", text_entry.bytes);
        assert!(text_entry.is_current("1.0.0") && !text_entry.is_current("1.0.1"));
        drop(text);
        assert!(cache_entries(&cache).unwrap().iter().all(|entry| !entry.in_use));
        fs::remove_dir_all(cache).unwrap();
    }

    #[test]
    fn a_tower_in_use_is_not_removed() {
        let cache = empty_cache("in_use");
        let tower = prepared(&request(&cache, "text", "aaa"));
        let dir = tower.graph.parent().unwrap().to_path_buf();
        let removal = remove_unused(&cache, |_| false).unwrap();
        assert!(removal.towers.is_empty() && dir.join(RECORD).is_file(), "{removal:?}");
        drop(tower);
        // A lock through another open file of this same process counts as well: flock locks belong to open files.
        let other = File::open(dir.join(RECORD)).unwrap();
        flock(&other, libc::LOCK_SH).unwrap();
        assert!(remove_unused(&cache, |_| false).unwrap().towers.is_empty());
        assert!(dir.join(RECORD).is_file());
        drop(other);
        let removal = remove_unused(&cache, |_| false).unwrap();
        assert_eq!(removal.towers.len(), 1, "{removal:?}");
        assert!(!dir.exists());
        fs::remove_dir_all(cache).unwrap();
    }

    #[test]
    fn an_unused_tower_is_removed_with_its_lock_file_and_prepared_again_when_needed() {
        let cache = empty_cache("unused");
        let request = request(&cache, "text", "aaa");
        let dir = prepared(&request).graph.parent().unwrap().to_path_buf();
        assert!(lock_path(&dir).is_file(), "made by the preparation");
        let removal = remove_unused(&cache, |_| false).unwrap();
        assert_eq!(removal.towers.iter().map(|e| &e.path).collect::<Vec<_>>(), [&dir]);
        assert!(removal.leftovers.is_empty(), "{removal:?}");
        assert_eq!(names(&cache), Vec::<String>::new(), "the read-only files, their directory, the lock file");
        // The next use prepares it again.
        let mut prepared_again = false;
        let tower = prepared_graph(&request, |graph, data_file| {
            prepared_again = true;
            write_tower(graph, data_file)
        })
        .unwrap();
        assert!(prepared_again && tower.graph.is_file());
        fs::remove_dir_all(cache).unwrap();
    }

    #[test]
    fn towers_to_keep_are_kept() {
        let cache = empty_cache("keep");
        let old = prepared(&request(&cache, "text", "old")).graph.parent().unwrap().to_path_buf();
        let new = prepared(&request(&cache, "text", "new")).graph.parent().unwrap().to_path_buf();
        let removal = remove_unused(&cache, |entry| entry.source_sha256 == "new").unwrap();
        assert_eq!(removal.towers.iter().map(|e| &e.path).collect::<Vec<_>>(), [&old]);
        assert!(!old.exists() && new.join(RECORD).is_file());
        // Kept by runtime and CPU, as a caller that keeps the current ones does.
        assert!(remove_unused(&cache, |entry| entry.is_current("1.0.0")).unwrap().towers.is_empty());
        assert_eq!(remove_unused(&cache, |entry| entry.is_current("2.0.0")).unwrap().towers.len(), 1);
        fs::remove_dir_all(cache).unwrap();
    }

    #[test]
    fn leftovers_of_dead_preparations_are_removed_unless_their_lock_is_held() {
        let cache = empty_cache("leftovers");
        create_cache(&cache).unwrap();
        let leftover = |key: &str| {
            let dir = cache.join(format!("text-{key}"));
            let tmp = temporary_path(&dir);
            fs::DirBuilder::new().mode(0o700).create(&tmp).unwrap();
            fs::write(tmp.join("text.onnx"), b"half").unwrap();
            fs::set_permissions(tmp.join("text.onnx"), fs::Permissions::from_mode(0o444)).unwrap();
            drop(Lock::acquire(&lock_path(&dir)).unwrap());
            dir
        };
        let dead = leftover("0123456789abcdef");
        let living = leftover("fedcba9876543210");
        let preparing = Lock::acquire(&lock_path(&living)).unwrap();
        // A lock file without a directory, and things that are not the cache's own.
        let stale = lock_path(&cache.join("image-00000000000000aa"));
        drop(Lock::acquire(&stale).unwrap());
        std::os::unix::fs::symlink(std::env::temp_dir(), cache.join(".tmp-image-00000000000000bb")).unwrap();
        fs::write(cache.join("notes.txt"), b"mine").unwrap();

        let removal = remove_unused(&cache, |_| false).unwrap();
        let mut removed = removal.leftovers.clone();
        removed.sort();
        let mut expected = vec![temporary_path(&dead), lock_path(&dead), stale];
        expected.sort();
        assert_eq!(removed, expected);
        assert!(removal.towers.is_empty());
        let left =
            [".text-fedcba9876543210.lock", ".tmp-image-00000000000000bb", ".tmp-text-fedcba9876543210", "notes.txt"];
        assert_eq!(names(&cache), left);
        drop(preparing);
        fs::remove_dir_all(cache).unwrap();
    }

    #[test]
    fn symbolic_links_are_neither_listed_nor_followed() {
        let cache = empty_cache("links");
        let elsewhere = empty_cache("links_target");
        let tower = prepared(&request(&elsewhere, "text", "aaa"));
        let target = tower.graph.parent().unwrap().to_path_buf();
        drop(tower);
        create_cache(&cache).unwrap();
        std::os::unix::fs::symlink(&target, cache.join(file_name(&target))).unwrap();
        assert!(cache_entries(&cache).unwrap().is_empty());
        assert!(remove_unused(&cache, |_| false).unwrap().towers.is_empty());
        assert!(target.join(RECORD).is_file());
        fs::remove_dir_all(cache).unwrap();
        fs::remove_dir_all(elsewhere).unwrap();
    }

    #[test]
    fn a_cache_without_room_is_refused_with_the_numbers() {
        let needed = space_needed(300_000_000);
        assert!(needed > 300_000_000 + SPACE_MARGIN, "a margin over the source's size");
        let disk = |free| Space { free, total: 100_000_000_000 };
        let err = space_shortage(Path::new("/x"), "image", 350_000_000, disk(120_400_000)).expect("too little room");
        assert!(matches!(err, ClipError::WeightsCache { .. }), "{err}");
        let expected = "the file system of /x has 120 MB free; preparing the image tower needs about 350 MB and \
                        leaves 1074 MB free for the rest of the server";
        assert!(err.to_string().contains(expected), "{err}");
        // Room for the tower but not for the reserve: 1 GiB on a large file system, 5% of a small one.
        assert!(space_shortage(Path::new("/x"), "image", 350_000_000, disk(1_000_000_000)).is_some());
        assert!(space_shortage(Path::new("/x"), "image", 350_000_000, disk(1_500_000_000)).is_none());
        let small = Space { free: 380_000_000, total: 1_000_000_000 };
        assert!(space_shortage(Path::new("/x"), "image", 350_000_000, small).is_some());
        assert!(space_shortage(Path::new("/x"), "image", 350_000_000, Space { free: 400_000_000, ..small }).is_none());
        // A full disk reported in an error's text, as ONNX Runtime's writes report it.
        assert!(is_out_of_space(&ClipError::Inference("write failed: No space left on device".into())));
        assert!(!is_out_of_space(&ClipError::Inference("bad graph".into())));
    }

    #[test]
    fn preparing_checks_the_room_first() {
        let cache = empty_cache("room");
        let request = TowerRequest { source_bytes: u64::MAX / 2, ..request(&cache, "image", "aaa") };
        let err = prepared_graph(&request, |_, _| panic!("not prepared without room")).err().expect("no room");
        assert!(matches!(err, ClipError::WeightsCache { .. }) && err.to_string().contains("MB free"), "{err}");
        assert!(cache_entries(&cache).unwrap().is_empty());
        assert!(!names(&cache).iter().any(|name| name.starts_with(".tmp-")));
        fs::remove_dir_all(cache).unwrap();
    }
}

//! Installing a model: files gathered in a staging folder (`MODELS/.partial/`), checked, given their manifest, and
//! moved to `MODELS/NAME` by one rename, so that the model's directory either is complete or does not exist.
//! Downloads that fail keep their staging folder (`NAME@COMMIT`), which the next run resumes; a file whose size or
//! hash is wrong is deleted from it, and a layout or graph the extension does not know removes it.
use std::ffi::CString;
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use clip_core::immich;

use crate::hub::{self, Hub, Progress, RemoteFile};
use crate::Options;

/// The files a model needs. The folders hold a few more (tokenizer side files), which are taken too.
const REQUIRED: [&str; 6] = [
    immich::CONFIG_FILE,
    immich::IMAGE_GRAPH,
    immich::PREPROCESS_FILE,
    immich::TEXT_GRAPH,
    immich::TOKENIZER_FILE,
    immich::TOKENIZER_CONFIG_FILE,
];

/// Installs the model the options name; returns its directory.
pub fn run(options: &Options) -> Result<PathBuf, String> {
    let name = install_name(&options.model)?;
    let models = &options.models;
    fs::create_dir_all(models).map_err(|e| format!("cannot create the models directory {}: {e}", models.display()))?;
    let target = models.join(&name);
    if target.exists() && !options.force {
        return Err(format!("{name} is already installed in {} (--force replaces it)", target.display()));
    }
    let staging_root = models.join(".partial");
    fs::create_dir_all(&staging_root).map_err(|e| format!("cannot write in {}: {e}", models.display()))?;
    // Two runs for one name would append to the same files: the second is refused while the first runs.
    let _lock = lock(&staging_root.join(format!("{name}.lock")))?;
    // Again under the lock: a run that held it may have installed the model since.
    if target.exists() && !options.force {
        return Err(format!("{name} is already installed in {} (--force replaces it)", target.display()));
    }
    let mut progress = Progress::new(options.quiet);
    let (staging, source) = match &options.from {
        Some(from) => {
            let staging = staging_root.join(format!("{name}.from-{}", std::process::id()));
            let copied = copy_layout(from, &staging);
            if let Err(e) = copied {
                let _ = fs::remove_dir_all(&staging);
                return Err(e);
            }
            (staging, format!("copied from {}", from.display()))
        }
        None => {
            let repo = hub::repository(&options.model);
            let hub = Hub::new(&options.endpoint, &repo);
            let commit = hub.commit(&options.revision)?;
            let staging = staging_root.join(format!("{name}@{commit}"));
            let files: Vec<RemoteFile> = hub.files(&commit)?.into_iter().filter(|f| wanted(&f.path)).collect();
            if let Some(missing) = REQUIRED.iter().find(|r| !files.iter().any(|f| f.path == **r)) {
                return Err(format!("{repo} is not in the layout of Immich's exports: it has no {missing}"));
            }
            check_space(models, &staging, &files)?;
            for file in &files {
                hub.check_metadata(&commit, file)?;
                let path = staging.join(&file.path);
                let parent = path.parent().expect("a file of the staging folder");
                fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
                hub.download(&commit, file, &path, &mut progress)?;
            }
            (staging, format!("{}/{repo} at revision {commit}", options.endpoint))
        }
    };
    finish(&staging, &target, &name, &source).inspect_err(|_| {
        let _ = fs::remove_dir_all(&staging);
    })?;
    Ok(target)
}

/// An exclusive lock on `path`, held until the file is closed (also when the process dies).
fn lock(path: &Path) -> Result<fs::File, String> {
    let file = fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(format!("another clip-fetch is installing this model ({} is locked)", path.display()));
    }
    Ok(file)
}

/// The directory name a model is installed under: the repository's name.
fn install_name(model: &str) -> Result<String, String> {
    let plain = |part: &str| {
        !part.is_empty() && !part.starts_with('.') && part.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    let parts: Vec<&str> = model.split('/').collect();
    if parts.len() > 2 || !parts.iter().all(|p| plain(p)) {
        return Err(format!("{model:?} is not a model name (NAME or OWNER/NAME)"));
    }
    Ok(parts[parts.len() - 1].to_owned())
}

/// The files of a repository that make the model: the config, and the files of its two towers' folders (not
/// their subfolders, which hold builds for other hardware, nor Arm NN files).
fn wanted(path: &str) -> bool {
    if path == immich::CONFIG_FILE {
        return true;
    }
    match path.split_once('/') {
        Some(("visual" | "textual", file)) => !file.contains('/') && !file.ends_with(".armnn") && !file.starts_with('.'),
        _ => false,
    }
}

fn copy_layout(from: &Path, staging: &Path) -> Result<(), String> {
    for required in REQUIRED {
        if !from.join(required).is_file() {
            return Err(format!("{} is not in the layout of Immich's exports: it has no {required}", from.display()));
        }
    }
    let _ = fs::remove_dir_all(staging);
    for folder in ["", "visual", "textual"] {
        let dir = from.join(folder);
        let entries = fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
            let relative = Path::new(folder).join(entry.file_name());
            let Some(relative_str) = relative.to_str().filter(|r| wanted(r)) else { continue };
            // Links are followed: `hf download` without --local-dir makes a folder of links into its cache.
            if !fs::metadata(entry.path()).map_err(|e| format!("{relative_str}: {e}"))?.is_file() {
                continue;
            }
            let to = staging.join(&relative);
            fs::create_dir_all(to.parent().expect("inside staging")).map_err(|e| format!("{}: {e}", staging.display()))?;
            fs::copy(entry.path(), &to).map_err(|e| format!("copying {relative_str} to {}: {e}", to.display()))?;
        }
    }
    Ok(())
}

/// Refuses at once a download the file system cannot hold, rather than failing at its end.
fn check_space(models: &Path, staging: &Path, files: &[RemoteFile]) -> Result<(), String> {
    // Saturating: the sizes come from the hub's listing.
    let sum = |sizes: &mut dyn Iterator<Item = u64>| sizes.fold(0u64, u64::saturating_add);
    let have = sum(&mut files.iter().map(|f| fs::metadata(staging.join(&f.path)).map_or(0, |m| m.len().min(f.size))));
    let needed = sum(&mut files.iter().map(|f| f.size)).saturating_sub(have);
    let path = CString::new(models.as_os_str().as_bytes()).map_err(|_| "the models directory has a NUL in its name")?;
    // SAFETY: statvfs fills the struct it is given, for a NUL-terminated path.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Ok(());
    }
    let free = stat.f_bavail as u64 * stat.f_frsize as u64;
    if free < needed {
        return Err(format!(
            "{} has {:.1} MB free; the model needs {:.1} MB more",
            models.display(),
            free as f64 / 1e6,
            needed as f64 / 1e6
        ));
    }
    Ok(())
}

/// Writes the manifest (which checks the model: see `clip_core::immich`), then moves the staging folder into
/// place: by one rename, or, replacing an installed model, by exchanging the two directories atomically.
fn finish(staging: &Path, target: &Path, name: &str, source: &str) -> Result<(), String> {
    immich::write_manifest(staging, &immich::Origin { name, source })
        .map_err(|e| format!("{name} cannot be used: {e}"))?;
    sync_tree(staging)?;
    let models = target.parent().expect("the target is inside the models directory");
    if target.exists() {
        exchange(staging, target)?;
        // The old model is in the staging folder now; a backend that still maps its files keeps them.
        fs::remove_dir_all(staging).map_err(|e| format!("removing the replaced model {}: {e}", staging.display()))?;
    } else {
        fs::rename(staging, target).map_err(|e| format!("moving {} into place: {e}", staging.display()))?;
    }
    sync(models)
}

fn exchange(a: &Path, b: &Path) -> Result<(), String> {
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(|_| format!("{} has a NUL in its name", p.display()));
    let (ca, cb) = (c(a)?, c(b)?);
    // SAFETY: two NUL-terminated paths; renameat2 only reads them.
    let done = unsafe { libc::renameat2(libc::AT_FDCWD, ca.as_ptr(), libc::AT_FDCWD, cb.as_ptr(), libc::RENAME_EXCHANGE) };
    if done != 0 {
        return Err(format!("replacing {}: {}", b.display(), std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Flushes a folder's files and folders to disk, so that the rename publishes complete files after a crash.
fn sync_tree(dir: &Path) -> Result<(), String> {
    for entry in fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            sync(&path)?;
        }
    }
    sync(dir)
}

fn sync(path: &Path) -> Result<(), String> {
    fs::File::open(path).and_then(|f| f.sync_all()).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_towers_files_only() {
        for path in ["config.json", "visual/model.onnx", "textual/tokenizer.json", "visual/model.onnx.data"] {
            assert!(wanted(path), "{path}");
        }
        for path in ["README.md", "rknpu/visual/model.rknn", "visual/fp16/model.armnn", "visual/model.armnn", "visual/.x"] {
            assert!(!wanted(path), "{path}");
        }
    }

    #[test]
    fn installs_under_plain_names_only() {
        assert_eq!(install_name("ViT-B-32__openai").unwrap(), "ViT-B-32__openai");
        assert_eq!(install_name("immich-app/ViT-B-32__openai").unwrap(), "ViT-B-32__openai");
        for bad in ["", "..", "a/b/c", "../x", "x y", ".hidden"] {
            assert!(install_name(bad).is_err(), "{bad}");
        }
    }
}

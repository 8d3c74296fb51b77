//! The model directory's `manifest.json`: what the model is, how to feed it, and the checksums of its files.
//! Written by `tools/export_model.py`; the format is described in the README.
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::{ClipError, Result};

pub const MANIFEST_FILE: &str = "manifest.json";
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub name: String,
    /// Where the weights came from ("pretrained laion2b_s34b_b79k", "random weights, seed 0", ...).
    pub weights: String,
    pub embed_dim: usize,
    pub context_length: usize,
    pub vocab_size: usize,
    pub sot_token_id: i64,
    pub eot_token_id: i64,
    pub image: ImageSpec,
    pub logit_scale: f32,
    pub files: ModelFiles,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ImageSpec {
    pub size: u32,
    pub resize_mode: String,
    pub interpolation: String,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

#[derive(Debug, Clone, Deserialize)]
pub struct ModelFiles {
    pub text: FileEntry,
    pub image: FileEntry,
    pub tokenizer: FileEntry,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub sha256: String,
}

impl Manifest {
    /// Reads and validates `dir/manifest.json`. Files are checked against their checksums when they are read.
    pub fn load(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ClipError::ModelMissing { path: path.clone(), reason: e.to_string() })?;
        let invalid = |reason: String| ClipError::ModelInvalid { dir: dir.to_path_buf(), reason };
        let m: Manifest = serde_json::from_str(&text).map_err(|e| invalid(format!("{MANIFEST_FILE}: {e}")))?;
        if m.format_version != FORMAT_VERSION {
            return Err(invalid(format!("format_version {} is not {FORMAT_VERSION}", m.format_version)));
        }
        if m.image.resize_mode != "shortest" || m.image.interpolation != "bicubic" {
            return Err(invalid(format!(
                "image preprocessing {}/{} is not supported (shortest/bicubic only)",
                m.image.resize_mode, m.image.interpolation
            )));
        }
        if m.embed_dim == 0 || m.embed_dim > 16000 {
            // pgvector's vector type holds at most 16000 dimensions.
            return Err(invalid(format!("embed_dim {} is out of range 1..16000", m.embed_dim)));
        }
        if m.context_length < 2 || m.image.size == 0 || m.image.std.iter().any(|s| *s <= 0.0) {
            return Err(invalid("context_length, image size or std out of range".into()));
        }
        for entry in [&m.files.text, &m.files.image, &m.files.tokenizer] {
            if entry.path.contains('/') || entry.path.starts_with('.') {
                return Err(invalid(format!("file name {:?} must be a plain name inside the directory", entry.path)));
            }
        }
        Ok(m)
    }
}

/// Reads one model file and checks it against the manifest's checksum, so that what is hashed is what is loaded.
pub fn read_verified(dir: &Path, entry: &FileEntry) -> Result<Vec<u8>> {
    let path: PathBuf = dir.join(&entry.path);
    let bytes =
        std::fs::read(&path).map_err(|e| ClipError::ModelMissing { path: path.clone(), reason: e.to_string() })?;
    let digest = hex(&Sha256::digest(&bytes));
    if !digest.eq_ignore_ascii_case(&entry.sha256) {
        return Err(ClipError::ModelInvalid {
            dir: dir.to_path_buf(),
            reason: format!("{} has sha256 {digest}, the manifest says {}", entry.path, entry.sha256),
        });
    }
    Ok(bytes)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

//! The model directory's `manifest.json`: what the model is, how to feed it, and the checksums of its files.
//! Written by `tools/export_model.py`; the format is described in docs/models.md.
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{ClipError, Result};

pub const MANIFEST_FILE: &str = "manifest.json";
/// The longest context a manifest may give (open_clip's models use 16 to 77).
pub const MAX_CONTEXT_LENGTH: usize = 1024;

/// The format `tools/export_model.py` writes; format 1 (OpenAI-vocabulary CLIP only) still loads.
pub const FORMAT_VERSION: u32 = 2;

#[derive(Debug, Clone)]
pub struct Manifest {
    pub format_version: u32,
    /// The sha256 of `manifest.json` itself. The manifest holds every file's sha256, so this one digest names the
    /// model's exact files.
    pub sha256: String,
    pub name: String,
    /// Where the weights came from ("pretrained laion2b_s34b_b79k", "random weights, seed 0", ...).
    pub weights: String,
    /// Where the model's files were taken from, for a model installed by the fetcher (a hub repository and its
    /// revision, or a directory).
    pub source: Option<String>,
    pub embed_dim: usize,
    pub text: TextSpec,
    pub image: ImageSpec,
    pub logit_scale: f32,
    /// Sigmoid models (SigLIP) score an image and a text as `sigmoid(logit_scale * cosine + logit_bias)`; the
    /// others compare labels by a softmax of `logit_scale * cosine`.
    pub logit_bias: Option<f32>,
    pub files: ModelFiles,
}

/// How a text becomes the text tower's input.
#[derive(Debug, Clone, Deserialize)]
pub struct TextSpec {
    pub context_length: usize,
    pub vocab_size: usize,
    pub tokenizer: TokenizerKind,
    /// open_clip's text cleaning before the tokenizer.
    pub clean: TextClean,
    pub pad_id: i64,
    /// Pad every text to the full context (towers without a causal mask see the padding), or a batch to its
    /// longest text only (under a causal mask, pooled at the end token, padding changes nothing).
    pub pad_to_context: bool,
    /// OpenAI's BPE: the start and end tokens, checked against its tokenizer.json.
    #[serde(default)]
    pub sot_token_id: Option<i64>,
    #[serde(default)]
    pub eot_token_id: Option<i64>,
    /// Models that mark a text's language with a code token (NLLB).
    #[serde(default)]
    pub languages: Option<Languages>,
}

/// A text's language as a code token placed by a template: NLLB's tokenizer turns a text into
/// `<code> tokens </s>`, the code being the tokenizer's `src_lang`.
#[derive(Debug, Clone, Deserialize)]
pub struct Languages {
    /// The code of texts given without one (open_clip's: the tokenizer's own `src_lang`).
    pub default: String,
    pub codes: Vec<String>,
    /// The special tokens around the text (`$A`), `{language}` standing for the code.
    pub template: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenizerKind {
    /// open_clip's `SimpleTokenizer`, re-implemented exactly ([`crate::ClipTokenizer`]).
    OpenaiBpe,
    /// A Hugging Face `tokenizer.json` run by the `tokenizers` crate ([`crate::HfTokenizer`]).
    Huggingface,
}

/// open_clip's `clean` option of its tokenizers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TextClean {
    Lower,
    Whitespace,
    Canonicalize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ImageSpec {
    pub size: u32,
    pub resize_mode: ResizeMode,
    pub interpolation: Interpolation,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

pub use crate::preprocess::{Interpolation, ResizeMode};

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ModelFiles {
    pub text: TowerFiles,
    pub image: TowerFiles,
    pub tokenizer: FileEntry,
}

impl ModelFiles {
    /// The source sha256 of the text tower and of the image tower ([`TowerFiles::source_sha256`]), by which the
    /// cache of prepared weights names their prepared towers.
    pub fn tower_sha256s(&self) -> [String; 2] {
        [self.text.source_sha256(), self.image.source_sha256()]
    }

    /// Every file of the model: each tower's graph and data file, and the tokenizer.
    pub fn entries(&self) -> impl Iterator<Item = &FileEntry> {
        [&self.text, &self.image].into_iter().flat_map(|t| [Some(&t.graph), t.data.as_ref()]).flatten().chain([&self.tokenizer])
    }
}

/// A tower's ONNX graph and, for towers over the 2 GB one ONNX file can hold, the file its weights are in.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct TowerFiles {
    #[serde(flatten)]
    pub graph: FileEntry,
    /// The graph's external data: every initializer it stores outside itself names this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<FileEntry>,
}

impl TowerFiles {
    /// What the tower's weights are made from: the graph's sha256, and its data file's name and sha256 where it has
    /// one (the graph finds the file by its name: a manifest giving it another must not reuse a prepared tower).
    pub fn source_sha256(&self) -> String {
        match (&self.data, self.data_name()) {
            (Some(data), Some(name)) => format!("{}+{}:{}", self.graph.sha256, name, data.sha256),
            _ => self.graph.sha256.clone(),
        }
    }

    /// The name the graph gives its external data file: its path relative to the graph's directory (the manifest
    /// keeps the two in one directory).
    pub fn data_name(&self) -> Option<&str> {
        self.data.as_ref().map(|d| d.path.rsplit('/').next().expect("rsplit yields at least one piece"))
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct FileEntry {
    pub path: String,
    pub sha256: String,
}

/// Format 2 as written.
#[derive(Deserialize)]
struct ManifestV2 {
    name: String,
    weights: String,
    #[serde(default)]
    source: Option<String>,
    embed_dim: usize,
    text: TextSpec,
    image: ImageSpec,
    logit_scale: f32,
    logit_bias: Option<f32>,
    files: ModelFiles,
}

/// Format 1: OpenAI's BPE, its few text fields at the top.
#[derive(Deserialize)]
struct ManifestV1 {
    name: String,
    weights: String,
    embed_dim: usize,
    context_length: usize,
    vocab_size: usize,
    sot_token_id: i64,
    eot_token_id: i64,
    image: ImageSpec,
    logit_scale: f32,
    files: ModelFiles,
}

#[derive(Deserialize)]
struct Version {
    format_version: u32,
}

impl Manifest {
    /// Reads and validates `dir/manifest.json`. Files are checked against their checksums when they are read.
    pub fn load(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ClipError::ModelMissing { path: path.clone(), reason: e.to_string() })?;
        let invalid = |reason: String| ClipError::ModelInvalid { dir: dir.to_path_buf(), reason };
        let json_error = |e: serde_json::Error| invalid(format!("{MANIFEST_FILE}: {e}"));
        let sha256 = hex(&Sha256::digest(text.as_bytes()));
        let version: Version = serde_json::from_str(&text).map_err(json_error)?;
        let m = match version.format_version {
            1 => {
                let v1: ManifestV1 = serde_json::from_str(&text).map_err(json_error)?;
                Manifest {
                    format_version: 1,
                    sha256,
                    name: v1.name,
                    weights: v1.weights,
                    source: None,
                    embed_dim: v1.embed_dim,
                    text: TextSpec {
                        context_length: v1.context_length,
                        vocab_size: v1.vocab_size,
                        tokenizer: TokenizerKind::OpenaiBpe,
                        clean: TextClean::Lower,
                        pad_id: 0,
                        pad_to_context: false,
                        sot_token_id: Some(v1.sot_token_id),
                        eot_token_id: Some(v1.eot_token_id),
                        languages: None,
                    },
                    image: v1.image,
                    logit_scale: v1.logit_scale,
                    logit_bias: None,
                    files: v1.files,
                }
            }
            FORMAT_VERSION => {
                let v2: ManifestV2 = serde_json::from_str(&text).map_err(json_error)?;
                Manifest {
                    format_version: FORMAT_VERSION,
                    sha256,
                    name: v2.name,
                    weights: v2.weights,
                    source: v2.source,
                    embed_dim: v2.embed_dim,
                    text: v2.text,
                    image: v2.image,
                    logit_scale: v2.logit_scale,
                    logit_bias: v2.logit_bias,
                    files: v2.files,
                }
            }
            other => return Err(invalid(format!("format_version {other} is not 1 or {FORMAT_VERSION}"))),
        };
        if m.embed_dim == 0 || m.embed_dim > 16000 {
            // pgvector's vector type holds at most 16000 dimensions.
            return Err(invalid(format!("embed_dim {} is out of range 1..16000", m.embed_dim)));
        }
        let t = &m.text;
        // The context bounds what a text costs (its ids, the cleaned characters a Hugging Face tokenizer reads).
        if !(2..=MAX_CONTEXT_LENGTH).contains(&t.context_length) || m.image.size == 0 || m.image.std.iter().any(|s| *s <= 0.0) {
            return Err(invalid(format!("context_length (2..{MAX_CONTEXT_LENGTH}), image size or std out of range")));
        }
        if t.pad_id < 0 || t.pad_id as usize >= t.vocab_size {
            return Err(invalid(format!("pad_id {} is not an id of the vocabulary ({})", t.pad_id, t.vocab_size)));
        }
        if t.tokenizer == TokenizerKind::OpenaiBpe
            && (t.clean != TextClean::Lower || t.sot_token_id.is_none() || t.eot_token_id.is_none())
        {
            return Err(invalid("OpenAI's BPE needs clean \"lower\", sot_token_id and eot_token_id".into()));
        }
        // The template is checked with the tokenizer's vocabulary, when the tokenizer is loaded (HfTokenizer).
        if let Some(l) = &t.languages {
            if t.tokenizer != TokenizerKind::Huggingface || !l.codes.contains(&l.default) {
                return Err(invalid("languages: a Hugging Face tokenizer, and a default among the codes".into()));
            }
        }
        if !(m.logit_scale.is_finite() && m.logit_bias.is_none_or(f32::is_finite)) {
            return Err(invalid("logit_scale or logit_bias is not a finite number".into()));
        }
        for entry in m.files.entries() {
            if !is_inside_path(&entry.path) {
                return Err(invalid(format!("file {:?} must be a relative path inside the directory", entry.path)));
            }
        }
        for tower in [&m.files.text, &m.files.image] {
            if let Some(data) = &tower.data {
                if Path::new(&data.path).parent() != Path::new(&tower.graph.path).parent() {
                    return Err(invalid(format!("{} must be beside its graph {}", data.path, tower.graph.path)));
                }
            }
        }
        Ok(m)
    }

    /// Checks every file the manifest names against its checksum, reading each in pieces (weights files are
    /// gigabytes), with the [interrupt check](crate::interrupt) between pieces.
    pub fn verify_files(&self, dir: &Path) -> Result<()> {
        for entry in self.files.entries() {
            let path = dir.join(&entry.path);
            let mut file = File::open(&path).map_err(|e| missing(&path, e))?;
            let mut hasher = Sha256::new();
            let mut buffer = vec![0u8; 1 << 20];
            loop {
                crate::interrupt::check();
                let read = file.read(&mut buffer).map_err(|e| missing(&path, e))?;
                if read == 0 {
                    break;
                }
                hasher.update(&buffer[..read]);
            }
            check_sha256(dir, entry, &hex(&hasher.finalize()))?;
        }
        Ok(())
    }
}

/// A path made of plain names (`model.onnx`, `visual/model.onnx`): nothing absolute, no `..`, and no name
/// starting with a dot, so a manifest cannot name a file outside its directory or a hidden one.
fn is_inside_path(path: &str) -> bool {
    !path.is_empty() && path.split('/').all(|name| !name.is_empty() && !name.starts_with('.'))
}

/// Reads one model file and checks it against the manifest's checksum, so that what is hashed is what is loaded.
pub fn read_verified(dir: &Path, entry: &FileEntry) -> Result<Vec<u8>> {
    let path: PathBuf = dir.join(&entry.path);
    let bytes = std::fs::read(&path).map_err(|e| missing(&path, e))?;
    check_digest(dir, entry, &bytes)?;
    Ok(bytes)
}

/// [`read_verified`] into a buffer that ONNX Runtime can be handed as an external data file, without a copy
/// (these files are gigabytes).
pub fn read_verified_shared(dir: &Path, entry: &FileEntry) -> Result<Arc<[u8]>> {
    let path: PathBuf = dir.join(&entry.path);
    let mut file = File::open(&path).map_err(|e| missing(&path, e))?;
    let len = file.metadata().map_err(|e| missing(&path, e))?.len();
    let len = usize::try_from(len).map_err(|e| missing(&path, std::io::Error::other(e)))?;
    // SAFETY: zeroed bytes are initialised u8s.
    let mut bytes: Arc<[u8]> = unsafe { Arc::<[u8]>::new_zeroed_slice(len).assume_init() };
    let buffer = Arc::get_mut(&mut bytes).expect("just created, not shared");
    file.read_exact(buffer).map_err(|e| missing(&path, e))?;
    check_digest(dir, entry, &bytes)?;
    Ok(bytes)
}

fn missing(path: &Path, e: std::io::Error) -> ClipError {
    ClipError::ModelMissing { path: path.to_path_buf(), reason: e.to_string() }
}

fn check_digest(dir: &Path, entry: &FileEntry, bytes: &[u8]) -> Result<()> {
    check_sha256(dir, entry, &hex(&Sha256::digest(bytes)))
}

fn check_sha256(dir: &Path, entry: &FileEntry, digest: &str) -> Result<()> {
    if !digest.eq_ignore_ascii_case(&entry.sha256) {
        return Err(ClipError::ModelInvalid {
            dir: dir.to_path_buf(),
            reason: format!("{} has sha256 {digest}, the manifest says {}", entry.path, entry.sha256),
        });
    }
    Ok(())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

//! Errors of the model core. Each variant is a distinct cause so that the SQL layer can give it its own SQLSTATE.
use std::path::PathBuf;

use crate::preprocess::ImageError;

#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    /// No model directory was configured.
    #[error("no model directory is configured")]
    ModelNotConfigured,
    /// The model directory or one of its files is missing or unreadable.
    #[error("model file {path} cannot be read: {reason}")]
    ModelMissing { path: PathBuf, reason: String },
    /// The model directory is there but its content is wrong: bad manifest, checksum mismatch, bad graph.
    #[error("model directory {dir} is invalid: {reason}")]
    ModelInvalid { dir: PathBuf, reason: String },
    /// The cache of prepared weights cannot be created or written.
    #[error("the cache of prepared weights {path} cannot be used: {reason}")]
    WeightsCache { path: PathBuf, reason: String },
    /// The ONNX Runtime shared library cannot be loaded.
    #[error("ONNX Runtime library {path} cannot be loaded: {reason}")]
    RuntimeUnavailable { path: PathBuf, reason: String },
    /// The input image was rejected.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A text's language is not one the model knows, or the model takes no language.
    #[error("{0}")]
    Language(String),
    /// ONNX Runtime failed while running a loaded model.
    #[error("inference failed: {0}")]
    Inference(String),
}

/// Refuses a language the model does not take: any code when it takes none (`codes` is `None`), or a code not
/// among its `codes`. `None` (the model's default) is always taken.
pub(crate) fn check_language(codes: Option<&[String]>, language: Option<&str>) -> Result<()> {
    match (codes, language) {
        (None, Some(code)) => {
            Err(ClipError::Language(format!("this model takes no language (got {:?})", quoted_start(code))))
        }
        (Some(codes), Some(code)) if !codes.iter().any(|c| c == code) => {
            Err(ClipError::Language(format!("{:?} is not a language code of this model", quoted_start(code))))
        }
        _ => Ok(()),
    }
}

/// The start of a string given by a user, for an error message.
pub(crate) fn quoted_start(s: &str) -> String {
    let mut start: String = s.chars().take(40).collect();
    if start.len() < s.len() {
        start.push_str("...");
    }
    start
}

impl From<ort::Error> for ClipError {
    fn from(e: ort::Error) -> Self {
        ClipError::Inference(e.to_string())
    }
}

pub type Result<T, E = ClipError> = std::result::Result<T, E>;

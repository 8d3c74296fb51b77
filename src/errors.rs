//! How the extension's Rust code raises errors: [`error`] and [`error_with_hint`] for its own checks, [`raise`] for
//! the model core's errors, mapped to one SQLSTATE per cause with a message that names the SQL function and a hint
//! that says what to do. (Its SQL raises its own with RAISE; a setting's check hook refuses through PostgreSQL.)
use clip_core::preprocess::ImageError;
use clip_core::ClipError;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

const MODEL_HINT: &str = "Install a model with clip-fetch (see the README), then as a superuser: \
     ALTER SYSTEM SET clip.model_dir = '/path/to/model'; SELECT pg_reload_conf();";

/// Raises `err` as an ERROR of `function`. Never returns.
pub fn raise(function: &'static str, err: ClipError) -> ! {
    report(function, format!("{function}: {err}"), None, err)
}

/// Raises `err`, the error of the `index`th (1-based) element of an array argument, as an ERROR of `function`:
/// the message names the element, and the DETAIL is `element N` for programs to read. Never returns.
pub fn raise_element(function: &'static str, index: usize, err: ClipError) -> ! {
    report(function, format!("{function}: element {index}: {err}"), Some(format!("element {index}")), err)
}

fn report(function: &'static str, message: String, detail: Option<String>, err: ClipError) -> ! {
    use PgSqlErrorCode::*;
    let (code, hint) = match &err {
        ClipError::ModelNotConfigured => (ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, Some(MODEL_HINT)),
        ClipError::ModelMissing { .. } => (ERRCODE_UNDEFINED_FILE, Some(MODEL_HINT)),
        ClipError::ModelInvalid { .. } => (
            ERRCODE_DATA_CORRUPTED,
            Some("Install or export the model again, or point clip.model_dir at an intact copy."),
        ),
        ClipError::WeightsCache { .. } => (
            ERRCODE_IO_ERROR,
            Some("The server's operating-system user must be able to write clip.weights_cache; a superuser can \
                  point it at another directory, or set clip.shared_weights = off."),
        ),
        ClipError::RuntimeUnavailable { .. } => (
            ERRCODE_UNDEFINED_FILE,
            Some("The extension's package installs ONNX Runtime under $libdir/clip_search (clip_info() names the \
                  library it uses); a superuser can point clip.onnxruntime_library at another copy (version 1.31 \
                  or later)."),
        ),
        ClipError::Image(ImageError::TooLarge { .. }) => (
            ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            Some("A superuser can raise clip.max_image_pixels; decoding takes about 4 bytes per pixel."),
        ),
        ClipError::Image(ImageError::Unsupported(_)) => (
            ERRCODE_FEATURE_NOT_SUPPORTED,
            Some("Supported formats: JPEG, PNG, WebP, GIF, BMP, TIFF."),
        ),
        ClipError::Image(_) => (ERRCODE_INVALID_BINARY_REPRESENTATION, None),
        ClipError::Language(_) => (
            ERRCODE_INVALID_PARAMETER_VALUE,
            Some("clip_info()->'languages' lists the codes of a model that takes a language (NLLB-CLIP: eng_Latn, \
                  fra_Latn, zho_Hans, ...); it is null for the others, which take clip_embed_text(text) only."),
        ),
        ClipError::Inference(_) => (ERRCODE_INTERNAL_ERROR, None),
    };
    throw(function, code, message, detail, hint)
}

/// Raises an ERROR of SQLSTATE `code`. Never returns.
pub fn error(code: PgSqlErrorCode, message: impl Into<String>) -> ! {
    throw("clip_search", code, message.into(), None, None)
}

/// Raises an ERROR of SQLSTATE `code` with a hint that says what to do. Never returns.
pub fn error_with_hint(code: PgSqlErrorCode, message: impl Into<String>, hint: &str) -> ! {
    throw("clip_search", code, message.into(), None, Some(hint))
}

fn throw(function: &'static str, code: PgSqlErrorCode, message: String, detail: Option<String>, hint: Option<&str>) -> ! {
    let mut report = ErrorReport::new(code, message, function);
    if let Some(detail) = detail {
        report = report.set_detail(detail);
    }
    if let Some(hint) = hint {
        report = report.set_hint(hint);
    }
    report.report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

/// Unwraps a core result inside SQL function `function`, raising its error.
pub trait OrRaise<T> {
    fn or_raise(self, function: &'static str) -> T;
}

impl<T, E: Into<ClipError>> OrRaise<T> for Result<T, E> {
    fn or_raise(self, function: &'static str) -> T {
        self.unwrap_or_else(|e| raise(function, e.into()))
    }
}

//! The backend's loaded models. A backend is single-threaded, so a thread-local needs no lock; each backend and
//! each parallel worker loads its own on first use, never the postmaster before fork. A backend keeps at most
//! clip.max_loaded_models of them, and closes the one used least recently to load another: that bounds what one
//! session can make a backend hold, whichever registered models it uses. A model that a backend uses both on the
//! CPU and on a GPU (clip.execution_provider, for the bulk paths) counts twice.
use std::cell::RefCell;

use clip_core::runtime::Provider;
use clip_core::{ClipError, ClipModel, ModelSettings};
use pgrx::{warning, PgSqlErrorCode};

use crate::errors::{error_with_hint, raise};
use crate::guc;
use crate::registry::{self, ModelName, Registered};

thread_local! {
    /// Loaded models, the one used most recently last.
    static MODELS: RefCell<Vec<ClipModel>> = const { RefCell::new(Vec::new()) };
}

/// The model a call uses, looked up once per call: `model` when given, else clip.default_model, else the model in
/// clip.model_dir.
pub struct ModelChoice {
    settings: ModelSettings,
    /// What a registered model was registered with; None for clip.model_dir's.
    registered: Option<Registered>,
}

/// The model a call of `function` uses, on the CPU; an unknown name is raised as an error of `function`.
pub fn choose(function: &'static str, model: Option<&ModelName>) -> ModelChoice {
    choose_on(function, model, Provider::Cpu)
}

/// The model a batch of a bulk path (a worker's, clip_backfill's) uses, on clip.execution_provider.
pub fn choose_bulk(function: &'static str, model: Option<&ModelName>) -> ModelChoice {
    choose_on(function, model, guc::bulk_provider())
}

fn choose_on(function: &'static str, model: Option<&ModelName>, provider: Provider) -> ModelChoice {
    let registered = model.map(|m| m.0.clone()).or_else(guc::default_model).map(|name| registry::lookup(function, &name));
    let directory = registered.as_ref().map(|r| r.directory.clone());
    ModelChoice { settings: guc::model_settings(directory, provider), registered }
}

/// Runs `f` on the chosen model, (re)opened when a setting changed since it was loaded; a registered model's files
/// must still be those it was registered with. Errors are raised as errors of `function`.
pub fn with_model<T>(
    function: &'static str,
    choice: &ModelChoice,
    f: impl FnOnce(&mut ClipModel) -> Result<T, ClipError>,
) -> T {
    let ModelChoice { settings, registered } = choice;
    let result = MODELS.with_borrow_mut(|models| {
        let current = |m: &ClipModel| {
            m.settings() == settings && registered.as_ref().is_none_or(|r| m.manifest().sha256 == r.manifest_sha256)
        };
        let bound = guc::max_loaded_models();
        match models.iter().position(current) {
            // Moved last rather than taken out: an error raised inside `f` unwinds past the vector, which keeps it.
            Some(index) => {
                let model = models.remove(index);
                models.push(model);
            }
            None => {
                // The same directory under older settings (on the CPU, or on a GPU: the one it loaded on another
                // device included), and the least recently used beyond the bound, are closed before the new one
                // loads.
                let on_cpu = |s: &ModelSettings| s.provider == Provider::Cpu;
                models.retain(|m| {
                    m.settings().model_dir != settings.model_dir || on_cpu(m.settings()) != on_cpu(settings)
                });
                let excess = (models.len() + 1).saturating_sub(bound);
                models.drain(..excess);
                let opened = ClipModel::open(settings.clone())?;
                // Raised here, the error unwinds past the borrow, which it releases; the model is not kept.
                if let Some(registered) = registered.as_ref().filter(|r| opened.manifest().sha256 != r.manifest_sha256) {
                    changed(function, registered, &opened.manifest().sha256);
                }
                models.push(opened);
            }
        }
        // A bound lowered since the models were loaded.
        let excess = models.len().saturating_sub(bound);
        models.drain(..excess);
        let model = models.last_mut().expect("the model in use is last");
        let result = f(model);
        if let Some(reason) = model.take_cuda_unavailable() {
            warning!("{function}: CUDA cannot be used, so this runs on the CPU: {reason}");
        }
        result
    });
    result.unwrap_or_else(|e| raise(function, e))
}

/// The error for a registered model whose files are no longer those it was registered with.
fn changed(function: &'static str, registered: &Registered, found: &str) -> ! {
    error_with_hint(
        PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
        format!(
            "{function}: the files of model \"{}\" in {} changed since it was registered (manifest sha256 {found}, \
             registered {})",
            registered.name,
            registered.directory.display(),
            registered.manifest_sha256
        ),
        "Put the registered files back, or, as a superuser, register the new files under another name (or with \
         replace => true, and then re-embed what the old files made).",
    )
}

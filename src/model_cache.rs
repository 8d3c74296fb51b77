//! The backend's loaded model. A backend is single-threaded, so a thread-local needs no lock; each backend and
//! each parallel worker loads its own copy on first use, never the postmaster before fork.
use std::cell::RefCell;

use clip_core::{ClipError, ClipModel};

use crate::guc;

thread_local! {
    static MODEL: RefCell<Option<ClipModel>> = const { RefCell::new(None) };
}

/// Runs `f` on the model the current settings name, (re)opening it when a setting changed.
pub fn with_model<T>(f: impl FnOnce(&mut ClipModel) -> Result<T, ClipError>) -> Result<T, ClipError> {
    let settings = guc::model_settings();
    MODEL.with_borrow_mut(|slot| {
        if slot.as_ref().is_none_or(|m| *m.settings() != settings) {
            *slot = None; // drop the old sessions before loading new ones
            *slot = Some(ClipModel::open(settings)?);
        }
        f(slot.as_mut().expect("set above"))
    })
}

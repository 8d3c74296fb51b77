//! clip_search: CLIP text and image embeddings inside PostgreSQL, returned as pgvector `vector`s.
//!
//! Layout: `embed`, `similarity` and `info` are the SQL functions; `errors` maps core errors to SQLSTATEs; `guc` holds the settings;
//! `model_cache` keeps each backend's loaded model; `vector` is pgvector's type in Rust; `worker` is the background
//! worker that keeps watched columns embedded. The model itself
//! (tokenizer, image preprocessing, ONNX Runtime) lives in the `clip_core` crate, with no PostgreSQL in it.
use pgrx::prelude::*;

mod auto_embed;
mod embed;
mod errors;
mod guc;
mod info;
mod model_cache;
mod similarity;
mod vector;
mod worker;

::pgrx::pg_module_magic!(name, version);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    guc::register();
    worker::register();
    // The model core runs this between the inputs of a batch and inside long tokenizing, PNG decoding and
    // resizing, so that statement_timeout and pg_cancel_backend stop it there: PostgreSQL's error unwinds out of
    // the core. Set for the backend's own thread only, the one thread that may raise it.
    clip_core::interrupt::set_check(|| {
        check_for_interrupts!();
    });
}

#[cfg(any(test, feature = "pg_test"))]
mod tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![concat!("clip.model_dir = '", env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-model'")]
    }
}

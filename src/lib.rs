//! clip_search: CLIP text and image embeddings inside PostgreSQL, returned as pgvector `vector`s.
//!
//! Layout: `embed`, `similarity` and `info` are the SQL functions; `errors` maps core errors to SQLSTATEs; `guc`
//! holds the settings; `registry` names the models registered in the database; `model_cache` keeps each backend's
//! loaded models; `weights_cache` keeps the cache of prepared weights in check; `vector` is pgvector's type in
//! Rust; `worker` is the background worker that keeps watched columns embedded, and `migrate` moves a table's
//! embeddings to another model through it. The model itself (tokenizer, image preprocessing, ONNX Runtime) lives
//! in the `clip_core` crate, with no PostgreSQL in it.
use pgrx::prelude::*;

mod auto_embed;
mod embed;
mod errors;
mod guc;
mod info;
mod migrate;
mod model_cache;
mod registry;
mod similarity;
mod vector;
mod weights_cache;
mod worker;

::pgrx::pg_module_magic!(name, version);

// Descriptions of the public functions, after everything else.
pgrx::extension_sql_file!("../sql/comments.sql", name = "comments", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    guc::register();
    worker::register();
    // The model core runs this between the inputs of a batch and inside long tokenizing, PNG decoding and
    // resizing, so that statement_timeout and pg_cancel_backend stop it there: PostgreSQL's error unwinds out of
    // the core. Set for the backend's own thread only, the one thread that may raise it (threads that decode an
    // array's images have a check of the core's, and wait in it while this one runs).
    clip_core::interrupt::set_check(|| {
        check_for_interrupts!();
    });
    // While ONNX Runtime runs, a watcher thread asks this every 20 ms and terminates the run when it says yes;
    // libjpeg-turbo asks it as it decodes a JPEG on this thread and gives up; this thread asks it every 20 ms while
    // it waits for the threads that decode an array's images. The check above then runs on this thread.
    clip_core::interrupt::set_pending(interrupt_pending);
}

/// Whether PostgreSQL has an interrupt to process (`InterruptPending`) that may stop the statement. Each yes costs
/// the inference or the JPEG under way, run again if the check stops nothing, so the interrupts known to stop
/// nothing while the client is there say no, and wait for the check after the work: a memory-context log request,
/// a barrier, and the probe of client_connection_check_interval, which recurs and would keep an inference or a
/// JPEG longer than its interval from ever ending. Any other reason says yes, those that cannot be read included (a
/// standby's recovery conflict on 17 and later, a parallel worker's error), unless it comes while one of those
/// three is pending. A cancel (pg_cancel_backend, statement_timeout, lock_timeout), a termination
/// (pg_terminate_backend, a shutdown), a client connection found lost and (17 and later) transaction_timeout say
/// yes whatever else is pending. The probe's own finding of a dead client waits for the check after the work.
///
/// Read from the core's JPEG decoder and while the backend's thread waits for decoding threads, and from the core's
/// watcher thread while the backend's thread is inside ONNX Runtime: the flags are `volatile sig_atomic_t`s that
/// signal handlers set and that nothing but the backend's thread writes, and these are aligned word reads of them,
/// never writes, so the worst they can see is a value a poll late, which the next poll (or the check itself, on the
/// backend's thread) corrects.
fn interrupt_pending() -> bool {
    // SAFETY: volatile reads (as C's `volatile` accesses are) of globals of PostgreSQL's that live as long as the
    // process.
    unsafe {
        let set = |flag: *const pg_sys::sig_atomic_t| std::ptr::read_volatile(flag) != 0;
        if !set(&raw const pg_sys::InterruptPending) {
            return false;
        }
        #[cfg(any(feature = "pg17", feature = "pg18"))]
        let transaction_timeout = set(&raw const pg_sys::TransactionTimeoutPending);
        #[cfg(not(any(feature = "pg17", feature = "pg18")))]
        let transaction_timeout = false;
        let stops = set(&raw const pg_sys::QueryCancelPending)
            || set(&raw const pg_sys::ProcDiePending)
            || set(&raw const pg_sys::ClientConnectionLost)
            || transaction_timeout;
        #[cfg(not(feature = "pg13"))]
        let probe_or_log =
            set(&raw const pg_sys::CheckClientConnectionPending) || set(&raw const pg_sys::LogMemoryContextPending);
        #[cfg(feature = "pg13")]
        let probe_or_log = false;
        let stops_nothing = probe_or_log || set(&raw const pg_sys::ProcSignalBarrierPending);
        stops || !stops_nothing
    }
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

//! The background workers that keep watched columns embedded (sql/watch.sql), started with the server when
//! shared_preload_libraries includes clip_search. A launcher, connected to no database, starts
//! clip.workers_per_database workers for each database that clip.worker_databases names and that accepts
//! connections; a database that does not is reported as a WARNING (once, until it does) rather than connected to
//! and failed every few seconds, and a worker that stops is started again [`RESTART_PAUSE`] later. The workers of a
//! database share its watches' rows: a batch locks the rows it embeds and passes over those another batch holds
//! (`FOR UPDATE SKIP LOCKED`), so no row is embedded twice. Without shared_preload_libraries, everything else works as
//! before and clip_watch_status says the worker is not running.
//!
//! Each round runs one batch of every watch, each in a transaction of its own, as the watched table's owner in a
//! security-restricted operation (see [`as_owner`]: nothing the table's owner wrote, a trigger say, can use the
//! worker's superuser rights), and records how it went in the watch's row. The worker's own queries run with
//! `search_path = pg_catalog, pg_temp` and name everything else with its schema, so that no object a user creates
//! can stand in for one they use. A watch whose batch fails as a whole (a column dropped, the model missing) is
//! reported once, as a WARNING, and then tried again after a pause that doubles with each failure in a row, up to
//! [`MAX_RETRY_PAUSE`]. Rounds follow each other while there is work, then the worker sleeps clip.worker_naptime or
//! until its latch is set. Neither the launcher nor the workers run on a hot standby (they start once recovery has
//! finished).
use std::cell::RefCell;
use std::time::{Duration, Instant};

use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BackgroundWorkerStatus, BgWorkerStartTime, DynamicBackgroundWorker,
    SignalWakeFlags,
};
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode::ERRCODE_INTERNAL_ERROR;

use crate::errors::error;
use crate::guc;

// The watches and the functions they use, after the batch function of sql/auto_embed.sql.
pgrx::extension_sql_file!("../sql/watch.sql", name = "watch", requires = ["auto_embed"]);

/// How long the launcher waits before it starts a database's worker again, after it stopped or failed to start.
const RESTART_PAUSE: Duration = Duration::from_secs(10);

/// Registers the launcher when clip.worker_databases names a database. Only while shared_preload_libraries is being
/// loaded (static workers are registered by the postmaster); a no-op otherwise.
pub fn register() {
    // SAFETY: a plain flag PostgreSQL sets while it loads shared_preload_libraries.
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } || guc::worker_databases().is_empty() {
        return;
    }
    BackgroundWorkerBuilder::new("clip_search launcher")
        .set_type("clip_search launcher")
        .set_library("clip_search")
        .set_function("clip_search_launcher_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(RESTART_PAUSE))
        .load();
}

thread_local! {
    /// The launcher's workers, clip.workers_per_database for each database of clip.worker_databases. Borrowed only
    /// for moments in which nothing can raise an error, so that [`terminate_workers`] always finds them.
    static WORKERS: RefCell<Vec<DatabaseWorker>> = const { RefCell::new(Vec::new()) };
}

/// One worker of a database of clip.worker_databases, as the launcher sees it.
struct DatabaseWorker {
    /// The database's position in clip.worker_databases, the worker's argument.
    index: usize,
    database: String,
    /// Which of the database's workers this is, from 1: for its name.
    number: usize,
    running: Option<DynamicBackgroundWorker>,
    /// No start before this: set when the worker stopped or could not be started.
    not_before: Option<Instant>,
    /// Why the worker does not run, once reported (a WARNING is written once per cause).
    reported: Option<NotRunning>,
}

#[derive(Clone, Copy, PartialEq)]
enum NotRunning {
    DatabaseUnavailable,
    NoWorkerSlot,
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn clip_search_launcher_main(_argument: pg_sys::Datum) {
    // SAFETY: installs PostgreSQL's own SIGTERM handler before the signals are unblocked below.
    unsafe { handle_sigterm() };
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP);
    // No database: the launcher reads pg_database, a shared catalog, and nothing else.
    BackgroundWorker::connect_worker_to_spi(None, None);
    let per_database = guc::workers_per_database();
    WORKERS.with_borrow_mut(|workers| {
        *workers = guc::worker_databases()
            .into_iter()
            .enumerate()
            .flat_map(|(index, database)| {
                (1..=per_database).map(move |number| DatabaseWorker {
                    index,
                    database: database.clone(),
                    number,
                    running: None,
                    not_before: None,
                    reported: None,
                })
            })
            .collect()
    });
    // SAFETY: registers a plain function, run when the launcher exits for any reason.
    unsafe { pg_sys::before_shmem_exit(Some(terminate_workers), pg_sys::Datum::from(0)) };
    loop {
        if BackgroundWorker::sighup_received() {
            // SAFETY: the documented way for a background worker to reload its configuration.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        let due: Vec<(usize, String)> = WORKERS.with_borrow_mut(|workers| {
            workers.iter_mut().enumerate().filter_map(|(at, w)| w.due().then(|| (at, w.database.clone()))).collect()
        });
        for (at, database) in due {
            // Read with no borrow held: the scan checks for interrupts, and a termination ends the process there.
            let available = database_available(&database);
            WORKERS.with_borrow_mut(|workers| workers[at].start(available));
        }
        check_for_interrupts!();
        // The postmaster sets the latch when a worker starts or stops (bgw_notify_pid).
        if !BackgroundWorker::wait_latch(Some(Duration::from_secs(1))) {
            return; // the postmaster died
        }
        check_for_interrupts!();
    }
}

/// Stops the launcher's workers when it exits, so that a launcher started again does not start a second worker
/// for a database.
#[pg_guard]
unsafe extern "C-unwind" fn terminate_workers(_code: std::ffi::c_int, _arg: pg_sys::Datum) {
    WORKERS.with(|workers| {
        if let Ok(mut workers) = workers.try_borrow_mut() {
            for worker in workers.iter_mut() {
                if let Some(running) = worker.running.take() {
                    running.terminate();
                }
            }
        }
    });
}

impl DatabaseWorker {
    /// Whether the worker should be started now: it does not run, and it did not stop or fail to start less than
    /// [`RESTART_PAUSE`] ago.
    fn due(&mut self) -> bool {
        if let Some(running) = &self.running {
            match running.pid() {
                Ok(_) | Err(BackgroundWorkerStatus::NotYetStarted) => return false,
                Err(_) => {
                    self.running = None;
                    self.not_before = Some(Instant::now() + RESTART_PAUSE);
                }
            }
        }
        self.not_before.is_none_or(|at| Instant::now() >= at)
    }

    /// Starts the worker if its database is `available`; reports why not otherwise, once per cause.
    fn start(&mut self, available: bool) {
        if !available {
            // Said once per database, by its first worker.
            if self.number > 1 {
                return;
            }
            self.report(
                NotRunning::DatabaseUnavailable,
                "does not exist or does not accept connections; no worker embeds its watched columns. Create \
                 the database, or take it out of clip.worker_databases and restart the server.",
            );
            return;
        }
        let name = format!("clip_search worker {} for database {}", self.number, self.database);
        let started = BackgroundWorkerBuilder::new(&name)
            .set_type("clip_search worker")
            .set_library("clip_search")
            .set_function("clip_search_worker_main")
            .set_argument(Some(pg_sys::Datum::from(self.index)))
            .enable_spi_access()
            .set_start_time(BgWorkerStartTime::RecoveryFinished)
            .set_restart_time(None)
            // SAFETY: the launcher's own process id, set by PostgreSQL at start-up.
            .set_notify_pid(unsafe { pg_sys::MyProcPid })
            .load_dynamic();
        match started {
            Ok(worker) => {
                self.running = Some(worker);
                self.reported = None;
            }
            Err(_) => {
                self.not_before = Some(Instant::now() + RESTART_PAUSE);
                let what = format!(
                    "lacks its worker {}: every background worker slot is taken (max_worker_processes, which \
                     parallel queries share, must leave one for the launcher and clip.workers_per_database per \
                     database); tried again every 10 s.",
                    self.number
                );
                self.report(NotRunning::NoWorkerSlot, &what);
            }
        }
    }

    fn report(&mut self, cause: NotRunning, what: &str) {
        if self.reported != Some(cause) {
            warning!("clip_search launcher: the database \"{}\" of clip.worker_databases {what}", self.database);
            self.reported = Some(cause);
        }
    }
}

/// Whether a database of this name exists and accepts connections, read from the shared catalog pg_database by a
/// sequential scan, as autovacuum's launcher reads it: a process connected to no database cannot open the
/// catalog's indexes until a backend has written the shared relcache file.
fn database_available(name: &str) -> bool {
    /// DATCONNLIMIT_INVALID_DB: a database that a DROP DATABASE left half-dropped.
    const INVALID_DATABASE: i32 = -2;
    BackgroundWorker::transaction(|| {
        // SAFETY: the catalog is opened, scanned and closed inside this transaction; each tuple heap_getnext
        // returns is a pg_database row, valid until the next call.
        unsafe {
            let relation = pg_sys::table_open(pg_sys::DatabaseRelationId, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
            let scan = pg_sys::table_beginscan_catalog(relation, 0, std::ptr::null_mut());
            let mut available = false;
            loop {
                let tuple = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
                if tuple.is_null() {
                    break;
                }
                let row = &*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_database>(tuple);
                if std::ffi::CStr::from_ptr(row.datname.data.as_ptr()).to_bytes() == name.as_bytes() {
                    available = row.datallowconn && row.datconnlimit != INVALID_DATABASE;
                    break;
                }
            }
            pg_sys::table_endscan(scan);
            pg_sys::table_close(relation, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
            available
        }
    })
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn clip_search_worker_main(argument: pg_sys::Datum) {
    // SIGTERM (server shutdown, pg_terminate_backend, the launcher's exit) ends the worker at its next interrupt
    // check, which the embedding functions make between images and batches, rather than only between rounds.
    // SAFETY: installs PostgreSQL's own handler before the signals are unblocked below.
    unsafe { handle_sigterm() };
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP);
    let Some(database) = guc::worker_databases().into_iter().nth(argument.value()) else {
        // Not expected: the list is a postmaster setting, read the same way when the worker was registered.
        log!("clip_search worker: no database at position {} of clip.worker_databases", argument.value());
        return;
    };
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    pin_search_path();
    log!("clip_search worker: keeping watched columns of database {database} embedded");
    loop {
        if BackgroundWorker::sighup_received() {
            // SAFETY: the documented way for a background worker to reload its configuration.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        let busy = run_round();
        check_for_interrupts!();
        if !busy && !BackgroundWorker::wait_latch(Some(guc::worker_naptime())) {
            return; // the postmaster died
        }
        check_for_interrupts!();
    }
}

/// The longest pause before a failing watch is tried again.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(600);

/// Sets the worker's search_path for the rest of its life, above anything a database's or role's settings say.
fn pin_search_path() {
    // SAFETY: PostgreSQL's own way to set a setting; the strings are copied. search_path's check needs no
    // transaction (it only parses the list).
    unsafe {
        pg_sys::SetConfigOption(
            c"search_path".as_ptr(),
            c"pg_catalog, pg_temp".as_ptr(),
            pg_sys::GucContext::PGC_SUSET,
            pg_sys::GucSource::PGC_S_OVERRIDE,
        );
    }
}

/// One batch of every watch that is not waiting to be tried again; whether any of them found work.
fn run_round() -> bool {
    let watches = BackgroundWorker::transaction(|| {
        // The schema must be the extension's own, not one of that name that a database owner made before the
        // extension was installed: everything below runs as a superuser.
        let installed = Spi::get_one::<bool>(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_depend d
                            JOIN pg_catalog.pg_extension e ON e.oid OPERATOR(pg_catalog.=) d.refobjid
                            JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) d.objid
                            WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_namespace'::pg_catalog.regclass
                              AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass
                              AND d.deptype OPERATOR(pg_catalog.=) 'e'
                              AND e.extname OPERATOR(pg_catalog.=) 'clip_search'
                              AND n.nspname OPERATOR(pg_catalog.=) 'clip_search_internal')",
        );
        if installed != Ok(Some(true)) {
            return Vec::new(); // the extension is not (yet) installed in this database
        }
        Spi::connect(|client| {
            let rows = client.select(
                "SELECT w.relation::pg_catalog.oid, w.relation::pg_catalog.text, w.source_attnum, w.target_attnum,
                        c.relowner, w.failures_in_a_row,
                        coalesce(clip_search_internal.column_name(w.relation, w.target_attnum), '?')
                 FROM clip_search_internal.watches w JOIN pg_catalog.pg_class c ON c.oid = w.relation::pg_catalog.oid
                 WHERE w.next_try_at IS NULL OR w.next_try_at <= pg_catalog.clock_timestamp()
                 ORDER BY w.watched_at",
                None,
                &[],
            )?;
            rows.map(|row| Ok(Watch {
                relation: row.get::<pg_sys::Oid>(1)?.expect("not null"),
                name: row.get::<String>(2)?.expect("not null"),
                source_attnum: row.get::<i16>(3)?.expect("not null"),
                target_attnum: row.get::<i16>(4)?.expect("not null"),
                owner: row.get::<pg_sys::Oid>(5)?.expect("not null"),
                failures_in_a_row: row.get::<i32>(6)?.expect("not null"),
                target: row.get::<String>(7)?.expect("not null"),
            }))
            .collect::<Result<Vec<Watch>, pgrx::spi::Error>>()
        })
        .unwrap_or_else(|e| error(ERRCODE_INTERNAL_ERROR, format!("clip_search worker: cannot read the watches: {e}")))
    });
    let mut busy = false;
    for watch in &watches {
        let activity = std::ffi::CString::new(format!("embedding {}.{}", watch.name, watch.target)).unwrap_or_default();
        // SAFETY: PostgreSQL copies the string into the backend's status entry.
        unsafe { pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_RUNNING, activity.as_ptr()) };
        busy |= BackgroundWorker::transaction(|| run_batch_isolated(watch));
    }
    // SAFETY: as above, with no text. Then the round's table statistics go to the cumulative statistics, from
    // which autovacuum learns of the rows the batches updated (a worker reports them only when asked).
    unsafe {
        pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_IDLE, std::ptr::null());
        pg_sys::pgstat_report_stat(false);
    }
    busy
}

/// [`run_batch`] in a subtransaction: an error that escapes the batch function (a cancel, which PL/pgSQL does not
/// catch, or one raised by code of the table's owner) rolls back this watch's batch only and is recorded in its
/// row, so no watch can stop the worker or keep it from the watches after it.
fn run_batch_isolated(watch: &Watch) -> bool {
    let started = Instant::now();
    // SAFETY: the subtransaction protocol of PostgreSQL's procedural languages (PL/Python's, for one): begin a
    // subtransaction, then release it on success or roll it back on error, and either way return to the caller's
    // memory context and resource owner.
    let (context, owner) = unsafe { (pg_sys::CurrentMemoryContext, pg_sys::CurrentResourceOwner) };
    unsafe {
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(context);
    }
    let leave = move |commit: bool| unsafe {
        pg_sys::MemoryContextSwitchTo(context);
        if commit {
            pg_sys::ReleaseCurrentSubTransaction();
        } else {
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
        }
        pg_sys::MemoryContextSwitchTo(context);
        pg_sys::CurrentResourceOwner = owner;
    };
    let leave = std::panic::AssertUnwindSafe(leave);
    PgTryBuilder::new(std::panic::AssertUnwindSafe(|| {
        let busy = run_batch(watch);
        leave(true);
        busy
    }))
    .catch_others(|caught| {
        leave(false);
        let report = match &caught {
            CaughtError::PostgresError(report) | CaughtError::ErrorReport(report) => report,
            CaughtError::RustPanic { ereport, .. } => ereport,
        };
        // SAFETY: unpack_sql_state returns a static buffer holding the five characters of the code.
        let code = unsafe { std::ffi::CStr::from_ptr(pg_sys::unpack_sql_state(report.sql_error_code() as i32)) };
        let failure = format!("{} {}", code.to_string_lossy(), report.message());
        record(watch, 0, 0, started, Some(&failure));
        false
    })
    .execute()
}

unsafe extern "C-unwind" {
    /// PostgreSQL's SIGTERM handler of backends (`die`, tcop/postgres.c), bound directly: pgrx's binding is a Rust
    /// wrapper, which is no signal handler.
    fn die(signal: std::ffi::c_int);
}

/// Makes SIGTERM run [`die`], with PostgreSQL's pqsignal (named pqsignal_be in the backend from PostgreSQL 18 on).
///
/// # Safety
/// Only while the process's signals are blocked, before a background worker unblocks them.
unsafe fn handle_sigterm() {
    #[cfg(not(feature = "pg18"))]
    // SAFETY: as the caller promises.
    unsafe {
        pg_sys::pqsignal(pg_sys::SIGTERM as i32, Some(die));
    }
    #[cfg(feature = "pg18")]
    // SAFETY: as the caller promises.
    unsafe {
        pg_sys::pqsignal_be(pg_sys::SIGTERM as i32, Some(die));
    }
}

struct Watch {
    relation: pg_sys::Oid,
    /// The table's name, for messages.
    name: String,
    source_attnum: i16,
    target_attnum: i16,
    /// The target column's name, for messages ('?' if it was dropped).
    target: String,
    owner: pg_sys::Oid,
    /// As the round found it: whether an empty batch must still be recorded, to end the failures.
    failures_in_a_row: i32,
}

/// One batch of one watch, as the table's owner, and its outcome recorded in the watch's row. Whether it found
/// work.
fn run_batch(watch: &Watch) -> bool {
    let started = Instant::now();
    let (done, skipped, failure) = as_owner(watch.owner, || {
        Spi::get_three_with_args::<i64, i64, String>(
            "SELECT done, skipped, error FROM clip_search_internal.watch_batch($1::pg_catalog.regclass, $2, $3, $4)",
            &[
                watch.relation.into(),
                watch.source_attnum.into(),
                watch.target_attnum.into(),
                (guc::batch_size() as i32).into(),
            ],
        )
        .unwrap_or_else(|e| error(ERRCODE_INTERNAL_ERROR, format!("clip_search worker: {}: {e}", watch.name)))
    });
    let (done, skipped) = (done.unwrap_or(0), skipped.unwrap_or(0));
    if done + skipped == 0 && failure.is_none() && watch.failures_in_a_row == 0 {
        return false;
    }
    record(watch, done, skipped, started, failure.as_deref());
    // A batch that failed as a whole (the model missing, say) is not work done: sleep before trying again.
    done + skipped > 0
}

/// Adds the outcome of a batch that began at `started` to the watch's row. A failure is reported as a WARNING when
/// it is the first in a row or differs from the last one, and puts the watch off for a pause that doubles with each
/// failure in a row; the first batch that does not fail ends the pause and says so in the log. The row is read
/// again, locked, since the database's other workers record their batches of the same watch too: a failure while
/// another worker's failure already put the watch off counts once, and a batch that found no rows while another
/// worker failed (those rows were the other's) ends nothing.
fn record(watch: &Watch, done: i64, skipped: i64, started: Instant, failure: Option<&str>) {
    let elapsed = started.elapsed().as_secs_f64();
    let Some(state) = locked_state(watch, elapsed) else {
        return; // the watch ended meanwhile
    };
    let failures_before = state.failures_in_a_row;
    if failure.is_none() && done + skipped == 0 && state.failed_meanwhile {
        return;
    }
    let failures_in_a_row = match failure {
        Some(_) if state.put_off => failures_before,
        Some(_) => failures_before.saturating_add(1),
        None => 0,
    };
    let pause = retry_pause(guc::worker_naptime(), failures_in_a_row);
    let rate = done as f64 / elapsed.max(1e-6);
    match failure {
        Some(_) if state.put_off => {}
        Some(failure) if failures_before == 0 || state.last_error.as_deref() != Some(failure) => warning!(
            "clip_search worker: {}.{}: {failure} (tried again after a pause that doubles with each failure, up to {} s)",
            watch.name,
            watch.target,
            MAX_RETRY_PAUSE.as_secs()
        ),
        Some(_) => {}
        None if failures_before > 0 => {
            log!(
                "clip_search worker: {}.{}: embedding again after {} failed batches",
                watch.name,
                watch.target,
                failures_before
            )
        }
        None => {}
    }
    Spi::run_with_args(
        "UPDATE clip_search_internal.watches
         SET rows_embedded = rows_embedded OPERATOR(pg_catalog.+) $2,
             rows_failed = rows_failed OPERATOR(pg_catalog.+) $3,
             last_batch_at = CASE WHEN $2 OPERATOR(pg_catalog.+) $3 OPERATOR(pg_catalog.>) 0
                             THEN pg_catalog.clock_timestamp() ELSE last_batch_at END,
             last_batch_rate = CASE WHEN $2 OPERATOR(pg_catalog.>) 0 THEN $4 ELSE last_batch_rate END,
             last_error = coalesce($5, last_error),
             last_error_at = CASE WHEN $5 IS NULL THEN last_error_at ELSE pg_catalog.clock_timestamp() END,
             failures_in_a_row = $6,
             next_try_at = CASE WHEN $6 OPERATOR(pg_catalog.>) 0
                           THEN pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+) pg_catalog.make_interval(secs => $7) END
         WHERE relation OPERATOR(pg_catalog.=) $1::pg_catalog.regclass AND target_attnum OPERATOR(pg_catalog.=) $8",
        &[
            watch.relation.into(),
            done.into(),
            skipped.into(),
            rate.into(),
            failure.into(),
            failures_in_a_row.into(),
            pause.as_secs_f64().into(),
            watch.target_attnum.into(),
        ],
    )
    .unwrap_or_else(|e| error(ERRCODE_INTERNAL_ERROR, format!("clip_search worker: {}: {e}", watch.name)));
}

/// A watch's failure state as [`record`] finds it.
struct FailureState {
    failures_in_a_row: i32,
    last_error: Option<String>,
    /// A failure was recorded since the batch began (`elapsed` seconds ago).
    failed_meanwhile: bool,
    /// A failure put the watch off until later than now.
    put_off: bool,
}

/// The watch's failure state, its row locked until the transaction ends; None if the watch ended.
fn locked_state(watch: &Watch, elapsed: f64) -> Option<FailureState> {
    Spi::connect(|client| {
        let mut rows = client.select(
            "SELECT failures_in_a_row, last_error,
                    coalesce(last_error_at OPERATOR(pg_catalog.>) (pg_catalog.clock_timestamp()
                             OPERATOR(pg_catalog.-) pg_catalog.make_interval(secs => $3)), false),
                    coalesce(next_try_at OPERATOR(pg_catalog.>) pg_catalog.clock_timestamp(), false)
             FROM clip_search_internal.watches
             WHERE relation OPERATOR(pg_catalog.=) $1::pg_catalog.regclass
               AND target_attnum OPERATOR(pg_catalog.=) $2
             FOR UPDATE",
            None,
            &[watch.relation.into(), watch.target_attnum.into(), elapsed.into()],
        )?;
        match rows.next() {
            Some(row) => Ok::<_, pgrx::spi::Error>(Some(FailureState {
                failures_in_a_row: row.get::<i32>(1)?.unwrap_or(0),
                last_error: row.get::<String>(2)?,
                failed_meanwhile: row.get::<bool>(3)?.unwrap_or(false),
                put_off: row.get::<bool>(4)?.unwrap_or(false),
            })),
            None => Ok(None),
        }
    })
    .unwrap_or_else(|e| error(ERRCODE_INTERNAL_ERROR, format!("clip_search worker: {}: {e}", watch.name)))
}

/// How long a watch that failed `failures_in_a_row` times in a row waits before it is tried again: the naptime,
/// doubled for each failure after the first, at most [`MAX_RETRY_PAUSE`].
fn retry_pause(naptime: Duration, failures_in_a_row: i32) -> Duration {
    let doublings = failures_in_a_row.saturating_sub(1).clamp(0, 20) as u32;
    naptime.saturating_mul(1 << doublings).min(MAX_RETRY_PAUSE)
}

/// Runs `f` as the role `owner` in a security-restricted operation, as PostgreSQL itself runs an index build or a
/// materialized view's refresh for a table's owner: code the owner wrote that runs inside (a trigger, a function
/// in an index expression) cannot SET ROLE back to the worker's superuser, create temporary objects that would
/// shadow the worker's, or leave settings behind, since every setting changed inside is undone afterwards. An
/// error inside aborts the transaction, whose abort restores the user and the settings the same way.
fn as_owner<T>(owner: pg_sys::Oid, f: impl FnOnce() -> T) -> T {
    let mut saved_user = pg_sys::InvalidOid;
    let mut saved_context = 0;
    let restricted = (pg_sys::SECURITY_LOCAL_USERID_CHANGE | pg_sys::SECURITY_RESTRICTED_OPERATION) as i32;
    // SAFETY: the backend's own user and security context, saved here and restored below; a new GUC nest level is
    // closed by AtEOXact_GUC before this transaction ends.
    let nest = unsafe {
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context);
        pg_sys::SetUserIdAndSecContext(owner, saved_context | restricted);
        pg_sys::NewGUCNestLevel()
    };
    let result = f();
    // SAFETY: as above.
    unsafe {
        pg_sys::AtEOXact_GUC(false, nest);
        pg_sys::SetUserIdAndSecContext(saved_user, saved_context);
    }
    result
}

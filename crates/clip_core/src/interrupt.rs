//! Letting the host stop long work. A host that cancels work (PostgreSQL: statement_timeout, pg_cancel_backend)
//! sets a check for its thread with [`set_check`]; the core runs it between the inputs of a batch and every so
//! often inside its long loops (cleaning and BPE of a long text, the rows of a PNG being decoded, the rows of a
//! resize), so that a request to stop is seen within a fraction of a second. The check returns to let the work go
//! on, or unwinds (panics) to stop it, as PostgreSQL's error does under pgrx.
//!
//! The core runs the check only where an unwind leaves everything that outlives the call consistent (a model keeps
//! its sessions and tokenizer), and never below a C frame: not from code that ONNX Runtime or the tokenizers
//! crate's regex engine (Oniguruma) calls back. The text a Hugging Face tokenizer is given is bounded instead (see
//! [`crate::hf_tokenizer`]).
//!
//! An inference is stopped from outside: a host that also sets a pending test with [`set_pending`] (PostgreSQL:
//! is `InterruptPending` set?) has it asked every [`POLL`] by a watcher thread while ONNX Runtime runs, and the
//! run is told to terminate when it says yes (ONNX Runtime stops between two nodes of the graph). Once the run has
//! returned, the check runs on the host's thread as anywhere else; a check that returns (the pending flag was for
//! something that does not stop the work) has the inference run again, so that it still gives its result.
//!
//! A JPEG being decoded is stopped the same way: libjpeg-turbo asks the pending test as it works (on the host's
//! thread, from C, where the check may not unwind), gives up when it says yes, and the check then runs.
//!
//! The check and the pending test are per thread: threads the core starts (one reads a tokenizer while a session
//! loads) never run the check, and only the watcher of a thread's inference and the JPEG decoder on that thread
//! ask its pending test.
use std::any::Any;
use std::cell::Cell;
use std::panic::{catch_unwind, resume_unwind, UnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often a watcher asks the pending test while an inference runs.
pub const POLL: Duration = Duration::from_millis(20);

thread_local! {
    static CHECK: Cell<fn()> = const { Cell::new(|| {}) };
    static PENDING: Cell<Option<fn() -> bool>> = const { Cell::new(None) };
    /// Set while the check runs: still set after a check that unwound, so that [`catch_unwind_not_check`] can tell
    /// its unwind from a panic of the core. Stale after an unwind that no such guard caught.
    static IN_CHECK: Cell<bool> = const { Cell::new(false) };
}

/// Makes `check` this thread's check (the default does nothing).
pub fn set_check(check: fn()) {
    CHECK.set(check);
}

/// Makes `pending` this thread's pending test: whether the host may want to stop the work, so that the check
/// should run as soon as it can. It is called on another thread (the watcher of an inference) and from C (the JPEG
/// decoder), so it must only read a flag: no side effect, no unwind, nothing that needs the host's thread. It may
/// say yes when the check would not stop the work; the work then goes on, at the cost of restarting an inference
/// or a JPEG's decoding. With none set (the default), inferences and JPEG decoding run unwatched.
pub fn set_pending(pending: fn() -> bool) {
    PENDING.set(Some(pending));
}

/// Whether this thread's host has a pending test, and if so whether it says yes now.
pub(crate) fn pending() -> Option<bool> {
    PENDING.get().map(|pending| pending())
}

/// Runs `work` on this thread while a watcher thread asks this thread's pending test every [`POLL`] and calls
/// `stop` (once) when it says yes. Returns what `work` returned and whether `stop` was called. The watcher is
/// started with every signal blocked and joined before this returns; without a pending test, or where no thread
/// can be started, `work` runs unwatched.
pub(crate) fn watched<T>(stop: &(dyn Fn() + Sync), work: impl FnOnce() -> T) -> (T, bool) {
    let Some(pending) = PENDING.get() else { return (work(), false) };
    let (done, stopped) = (AtomicBool::new(false), AtomicBool::new(false));
    let watch = || {
        while !done.load(Ordering::Acquire) {
            if pending() {
                stopped.store(true, Ordering::Release);
                stop();
                return;
            }
            std::thread::park_timeout(POLL);
        }
    };
    let result = std::thread::scope(|scope| {
        let watcher = crate::runtime::with_signals_blocked(|| std::thread::Builder::new().spawn_scoped(scope, watch));
        // Ends the watcher however `work` ends, so that the scope's join cannot wait for it forever.
        let finish = Finish { done: &done, watcher: watcher.as_ref().ok().map(|w| w.thread().clone()) };
        let result = work();
        drop(finish);
        if let Ok(watcher) = watcher {
            // The watcher only reads flags and calls `stop`; a panic there is the host's bug, and does not keep
            // the result from the caller.
            let _ = watcher.join();
        }
        result
    });
    (result, stopped.load(Ordering::Acquire))
}

struct Finish<'a> {
    done: &'a AtomicBool,
    watcher: Option<std::thread::Thread>,
}

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Release);
        if let Some(watcher) = &self.watcher {
            watcher.unpark();
        }
    }
}

/// Runs this thread's check: returns, or unwinds when the host stops the work.
pub fn check() {
    IN_CHECK.set(true);
    CHECK.get()();
    IN_CHECK.set(false);
}

/// Runs `f`, catching its panics, except the unwind of a check that stopped it, which goes on to the caller.
pub(crate) fn catch_unwind_not_check<T>(f: impl FnOnce() -> T + UnwindSafe) -> Result<T, Box<dyn Any + Send>> {
    IN_CHECK.set(false);
    catch_unwind(f).map_err(|payload| {
        if IN_CHECK.replace(false) {
            resume_unwind(payload)
        }
        payload
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stop() {
        panic!("stopped");
    }

    #[test]
    fn a_checks_unwind_passes_the_guard_and_a_panic_does_not() {
        set_check(stop);
        let stopped = catch_unwind(|| catch_unwind_not_check(check));
        assert!(stopped.is_err(), "the check's unwind reached the caller");
        // A check that unwinds with no guard around it (tokenizing a text) leaves no trace in a later guard.
        assert!(catch_unwind(check).is_err());
        set_check(|| {});
        let caught = catch_unwind(|| catch_unwind_not_check(|| panic!("a decoder bug")));
        assert!(matches!(caught, Ok(Err(_))), "the guard caught a panic of its own code");
        assert!(!IN_CHECK.get());
    }

    #[test]
    fn a_watcher_stops_the_work_once_the_pending_test_says_yes_and_only_then() {
        static UP: AtomicBool = AtomicBool::new(false);
        let stop = AtomicBool::new(false);
        let wait_for_stop = || {
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        // No pending test: no watcher.
        assert_eq!(watched(&|| panic!("no watcher"), || 7), (7, false));
        set_pending(|| UP.load(Ordering::SeqCst));
        assert_eq!(watched(&|| panic!("not pending"), || 7), (7, false));
        let raise = std::thread::spawn(|| {
            std::thread::sleep(Duration::from_millis(50));
            UP.store(true, Ordering::SeqCst);
        });
        assert_eq!(watched(&|| stop.store(true, Ordering::SeqCst), wait_for_stop), ((), true));
        raise.join().unwrap();
        // Work that panics ends its watcher too.
        UP.store(false, Ordering::SeqCst);
        assert!(catch_unwind(|| watched(&|| {}, || panic!("work"))).is_err());
    }
}

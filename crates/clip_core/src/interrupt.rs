//! Letting the host stop long work. A host that cancels work (PostgreSQL: statement_timeout, pg_cancel_backend)
//! sets a check for its thread with [`set_check`]; the core runs it between the inputs of a batch and every so
//! often inside its long loops (cleaning and BPE of a long text, the rows of a PNG being decoded, the rows of a
//! resize), so that a request to stop is seen within a fraction of a second. The check returns to let the work go
//! on, or unwinds (panics) to stop it, as PostgreSQL's error does under pgrx.
//!
//! The core runs the check only where an unwind leaves everything that outlives the call consistent (a model keeps
//! its sessions and tokenizer), and never below a C frame: not from code that ONNX Runtime or the tokenizers
//! crate's regex engine (Oniguruma) calls back. Neither can be interrupted: an inference runs to its end, and the
//! text a Hugging Face tokenizer is given is bounded instead (see [`crate::hf_tokenizer`]).
//!
//! The check is per thread: threads the core starts (one reads a tokenizer while a session loads) never run it.
use std::any::Any;
use std::cell::Cell;
use std::panic::{catch_unwind, resume_unwind, UnwindSafe};

thread_local! {
    static CHECK: Cell<fn()> = const { Cell::new(|| {}) };
    /// Set while the check runs: still set after a check that unwound, so that [`catch_unwind_not_check`] can tell
    /// its unwind from a panic of the core. Stale after an unwind that no such guard caught.
    static IN_CHECK: Cell<bool> = const { Cell::new(false) };
}

/// Makes `check` this thread's check (the default does nothing).
pub fn set_check(check: fn()) {
    CHECK.set(check);
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
}

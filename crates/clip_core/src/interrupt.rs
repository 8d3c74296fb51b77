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
//! A JPEG being decoded is stopped the same way: libjpeg-turbo asks the pending test as it works (from C, where the
//! check may not unwind), gives up when it says yes, and the check then runs.
//!
//! The check and the pending test are per thread. Only the host's thread runs the host's check, and only it, the
//! watcher of its inference and the JPEG decoder on it ask the host's pending test. Of the threads the core starts,
//! the one that reads a tokenizer while a session loads runs no check; the threads that decode a batch's images
//! ([`on_threads`]) have a check and a pending test of their own, which stop them once the host's thread, asking
//! the host's pending test while it waits for them, has run its check and is leaving.
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe, UnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How often a watcher asks the pending test while an inference runs, and the host's thread while it waits for
/// the threads of [`on_threads`].
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

/// Runs `job` on each of `items`, on up to `threads` threads of its own started with every signal blocked, each
/// taking the next item in order, while the calling thread waits. Returns the lowest-indexed item's error, if any.
///
/// The calling thread runs its check whenever its pending test says yes, or has none (asked every [`POLL`]). When
/// the check unwinds, the threads stop too: their own check, which runs before each item and inside its long loops
/// as anywhere, unwinds, and their pending test says yes, once the calling thread is leaving. Decoding that runs no
/// check (a WebP, GIF, BMP or TIFF) finishes its image first.
///
/// An error keeps the threads from taking further items, and the items taken before it are finished, so that the
/// error returned is the one a run in order would have met first. With `threads` < 2, one item, or no thread to be
/// had, the items run in order on the calling thread, its check run before each.
pub fn on_threads<T: Send, E: Send>(
    items: Vec<T>,
    threads: usize,
    job: impl Fn(T) -> Result<(), E> + Sync,
) -> Result<(), (usize, E)> {
    let threads = threads.min(items.len());
    let queue = Queue { items: Mutex::new(items.into_iter().enumerate()), failed: Mutex::new(None) };
    let run = || {
        while let Some((index, item)) = queue.next() {
            check();
            if let Err(e) = job(item) {
                queue.fail(index, e);
            }
        }
    };
    if threads < 2 {
        run();
        return queue.failed.into_inner().unwrap_or_else(PoisonError::into_inner).map_or(Ok(()), Err);
    }
    let (leaving, running) = (Arc::new(AtomicBool::new(false)), AtomicUsize::new(0));
    let panicked = Mutex::new(None::<Box<dyn Any + Send>>);
    let caller = std::thread::current();
    std::thread::scope(|scope| {
        let _leave = Leave(&leaving);
        let mut started = 0;
        for _ in 0..threads {
            let (leaving, caller) = (Arc::clone(&leaving), caller.clone());
            let (running, panicked, queue, run) = (&running, &panicked, &queue, &run);
            let worker = move || {
                LEAVING.set(Some(leaving));
                set_check(|| {
                    if leaving_now() {
                        resume_unwind(Box::new(Left));
                    }
                });
                set_pending(leaving_now);
                if let Err(payload) = catch_unwind(AssertUnwindSafe(run)) {
                    if !payload.is::<Left>() {
                        // A bug of the job's: the calling thread raises the first once the other threads are done.
                        queue.drain();
                        panicked.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(payload);
                    }
                }
                running.fetch_sub(1, Ordering::AcqRel);
                caller.unpark();
            };
            running.fetch_add(1, Ordering::AcqRel);
            let spawn = || std::thread::Builder::new().name("clip decode".into()).spawn_scoped(scope, worker);
            if crate::runtime::with_signals_blocked(spawn).is_err() {
                running.fetch_sub(1, Ordering::AcqRel);
                break;
            }
            started += 1;
        }
        if started == 0 {
            run();
        }
        while running.load(Ordering::Acquire) > 0 {
            std::thread::park_timeout(POLL);
            if pending() != Some(false) {
                check();
            }
        }
    });
    if let Some(payload) = panicked.into_inner().unwrap_or_else(PoisonError::into_inner) {
        resume_unwind(payload);
    }
    queue.failed.into_inner().unwrap_or_else(PoisonError::into_inner).map_or(Ok(()), Err)
}

/// The items of [`on_threads`] not yet taken, and the lowest-indexed error so far.
struct Queue<T, E> {
    items: Mutex<std::iter::Enumerate<std::vec::IntoIter<T>>>,
    failed: Mutex<Option<(usize, E)>>,
}

impl<T, E> Queue<T, E> {
    fn next(&self) -> Option<(usize, T)> {
        self.items.lock().unwrap_or_else(PoisonError::into_inner).next()
    }

    /// Records item `index`'s error, and empties the queue: what is left in it comes after that item.
    fn fail(&self, index: usize, error: E) {
        let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        if failed.as_ref().is_none_or(|(first, _)| index < *first) {
            *failed = Some((index, error));
        }
        self.drain();
    }

    fn drain(&self) {
        self.items.lock().unwrap_or_else(PoisonError::into_inner).by_ref().for_each(drop);
    }
}

thread_local! {
    /// On a thread of [`on_threads`]: set once the thread that started it is leaving.
    static LEAVING: RefCell<Option<Arc<AtomicBool>>> = const { RefCell::new(None) };
}

fn leaving_now() -> bool {
    LEAVING.with_borrow(|flag| flag.as_ref().is_some_and(|flag| flag.load(Ordering::Acquire)))
}

/// The unwind that ends a thread of [`on_threads`].
struct Left;

/// Tells the threads of [`on_threads`] to stop, however the calling thread leaves the scope.
struct Leave<'a>(&'a AtomicBool);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
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

    fn handled_signals_blocked() -> bool {
        // SAFETY: plain libc calls on a sigset_t owned by this frame; pthread_sigmask fills it.
        unsafe {
            let mut mask: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut mask);
            let handled = [libc::SIGINT, libc::SIGTERM, libc::SIGUSR1, libc::SIGALRM];
            handled.iter().all(|&signal| libc::sigismember(&mask, signal) == 1)
        }
    }

    #[test]
    fn items_on_threads_run_once_each_and_the_first_error_is_the_one_reported() {
        for threads in [1, 2, 4] {
            let seen = Mutex::new(Vec::new());
            let result = on_threads((0..40).collect(), threads, |item: usize| {
                seen.lock().unwrap().push(item);
                if threads > 1 {
                    assert!(handled_signals_blocked(), "a thread of its own, with its signals blocked");
                }
                if item == 9 || item == 30 {
                    return Err(item);
                }
                std::thread::sleep(Duration::from_millis(1));
                Ok(())
            });
            assert_eq!(result, Err((9, 9)), "{threads} thread(s)");
            let mut seen = seen.into_inner().unwrap();
            seen.sort();
            assert!(seen.starts_with(&(0..10).collect::<Vec<_>>()), "every item before the error ran: {seen:?}");
            seen.dedup();
            assert!(seen.len() < 40, "the items after an error are left: {seen:?}");
            let all = AtomicUsize::new(0);
            let add = |n: usize| -> Result<(), ()> {
                all.fetch_add(n, Ordering::SeqCst);
                Ok(())
            };
            assert_eq!(on_threads(vec![1; 25], threads, add), Ok(()));
            assert_eq!(all.into_inner(), 25);
        }
    }

    #[test]
    fn items_on_threads_run_at_the_same_time_and_a_later_error_gives_way_to_an_earlier_one() {
        for threads in [2, 4] {
            let inside = AtomicUsize::new(0);
            let together = |()| -> Result<(), ()> {
                inside.fetch_add(1, Ordering::SeqCst);
                let waiting = std::time::Instant::now();
                while inside.load(Ordering::SeqCst) < threads && waiting.elapsed() < Duration::from_secs(2) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                if inside.load(Ordering::SeqCst) == threads { Ok(()) } else { Err(()) }
            };
            assert_eq!(on_threads(vec![(); threads], threads, together), Ok(()), "{threads} items at once");
        }
        // Item 1 fails first; item 0, taken before it, fails later and is the one reported.
        let first_fails_last = |item: u8| -> Result<(), u8> {
            if item == 0 {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(item)
        };
        assert_eq!(on_threads(vec![0, 1], 2, first_fails_last), Err((0, 0)));
    }

    #[test]
    fn a_check_that_stops_the_calling_thread_stops_the_threads_and_a_panic_on_them_reaches_it() {
        // On a thread of its own, so that threads that did not stop fail the test rather than hang it.
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let started = std::time::Instant::now();
            set_pending(|| true);
            set_check(stop);
            // Each item runs its thread's check in a loop, as a long decoding does between rows, until it unwinds.
            let spin = |_: u8| -> Result<(), ()> {
                loop {
                    check();
                    std::thread::sleep(Duration::from_millis(1));
                }
            };
            let stopped = catch_unwind(AssertUnwindSafe(|| on_threads(vec![0; 8], 2, spin)));
            let payload = stopped.map(drop).map_err(|payload| payload.downcast_ref::<&str>().copied());
            sender.send((payload, started.elapsed())).unwrap();
        });
        let (payload, elapsed) = receiver.recv_timeout(Duration::from_secs(5)).expect("the threads stopped");
        assert_eq!(payload, Err(Some("stopped")), "the calling thread's check stopped the work");
        assert!(elapsed < Duration::from_secs(1), "stopped in {elapsed:?}");

        let panicked = catch_unwind(AssertUnwindSafe(|| {
            on_threads(vec![0, 1, 2], 2, |i: u8| -> Result<(), ()> {
                assert!(i != 1, "a bug");
                Ok(())
            })
        }));
        let payload = panicked.expect_err("a thread's panic reaches the caller");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"a bug"));
    }
}

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
//! ([`on_threads`]) have a check and a pending test of their own, which stop them when the host's pending test,
//! asked while the host's thread waits for them, says yes. The host's check runs once they are joined.
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

/// Runs `job` on each index of `0..count`, on up to `threads` threads of its own started with every signal
/// blocked, each taking the next index in order, while the calling thread waits. Returns the lowest index's error,
/// if any.
///
/// While it waits, the calling thread asks its pending test every [`POLL`]. When the test says yes (or there is
/// none), the threads are stopped: their own check, which runs before each index and inside the job's long loops
/// as anywhere, unwinds, and their pending test says yes. Decoding that runs no check (a WebP, GIF, BMP or TIFF)
/// finishes its image first. Once they are all joined, the calling thread runs its check, with no thread of this
/// call left to outlive what the check may end (PostgreSQL's FATAL exits the process without unwinding, freeing
/// what the job reads on its way); a check that returns has the indices not yet done run again on new threads.
///
/// An error keeps the threads from taking further indices, and those taken before it are finished, so that the
/// error returned is the one a run in order would have met first. With `threads` < 2, one index, or no thread to
/// be had, the indices run in order on the calling thread, its check run before each.
pub fn on_threads<E: Send>(
    count: usize,
    threads: usize,
    job: impl Fn(usize) -> Result<(), E> + Sync,
) -> Result<(), (usize, E)> {
    let done: Vec<AtomicBool> = (0..count).map(|_| AtomicBool::new(false)).collect();
    let failed = Mutex::new(None::<(usize, E)>);
    let threads = threads.min(count);
    loop {
        let left: Vec<usize> = (0..count).filter(|&index| !done[index].load(Ordering::Acquire)).collect();
        if left.is_empty() || failed.lock().unwrap_or_else(PoisonError::into_inner).is_some() {
            break;
        }
        let round = Round { left: Mutex::new(left.into_iter()), done: &done, failed: &failed };
        match if threads < 2 { Ended::NotStarted } else { round.run(threads, &job) } {
            Ended::Interrupted => check(),
            Ended::Finished => {}
            Ended::NotStarted => round.in_order(&job),
        }
    }
    failed.into_inner().unwrap_or_else(PoisonError::into_inner).map_or(Ok(()), Err)
}

/// The indices of [`on_threads`] that one set of threads works through.
struct Round<'a, E> {
    left: Mutex<std::vec::IntoIter<usize>>,
    done: &'a [AtomicBool],
    failed: &'a Mutex<Option<(usize, E)>>,
}

/// How a [`Round`]'s threads ended.
enum Ended {
    /// Every index was taken, or one failed.
    Finished,
    /// The calling thread's pending test said yes and the threads were stopped.
    Interrupted,
    /// No thread was started: none was asked for, or none could be had.
    NotStarted,
}

impl<E: Send> Round<'_, E> {
    fn next(&self) -> Option<usize> {
        self.left.lock().unwrap_or_else(PoisonError::into_inner).next()
    }

    fn drain(&self) {
        self.left.lock().unwrap_or_else(PoisonError::into_inner).by_ref().for_each(drop);
    }

    /// Runs index `index` and records it done; an error is kept if no lower index failed, and empties the queue,
    /// whose indices all come after it.
    fn work(&self, index: usize, job: &impl Fn(usize) -> Result<(), E>) {
        let result = job(index);
        self.done[index].store(true, Ordering::Release);
        if let Err(error) = result {
            let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
            if failed.as_ref().is_none_or(|(first, _)| index < *first) {
                *failed = Some((index, error));
            }
            self.drain();
        }
    }

    /// On the calling thread, with its check run before each index.
    fn in_order(&self, job: &impl Fn(usize) -> Result<(), E>) {
        while let Some(index) = self.next() {
            check();
            self.work(index, job);
        }
    }

    /// On up to `threads` threads of its own, until the queue is empty or the calling thread's pending test says
    /// yes. Runs no check on the calling thread.
    fn run(&self, threads: usize, job: &(impl Fn(usize) -> Result<(), E> + Sync)) -> Ended {
        let (stop, running) = (Arc::new(AtomicBool::new(false)), AtomicUsize::new(0));
        let panicked = Mutex::new(None::<Box<dyn Any + Send>>);
        let caller = std::thread::current();
        let mut ended = Ended::Finished;
        std::thread::scope(|scope| {
            let _stop = StopOnDrop(&stop);
            let mut started = 0;
            for _ in 0..threads {
                let (stop, caller) = (Arc::clone(&stop), caller.clone());
                let (running, panicked) = (&running, &panicked);
                let worker = move || {
                    STOP.set(Some(stop));
                    set_check(|| {
                        if stopping() {
                            resume_unwind(Box::new(Stopped));
                        }
                    });
                    set_pending(stopping);
                    let work = || {
                        while let Some(index) = self.next() {
                            check();
                            self.work(index, job);
                        }
                    };
                    if let Err(payload) = catch_unwind(AssertUnwindSafe(work)) {
                        if !payload.is::<Stopped>() {
                            // A bug of the job's: the calling thread raises the first once the other threads are done.
                            self.drain();
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
                ended = Ended::NotStarted;
            }
            while running.load(Ordering::Acquire) > 0 {
                std::thread::park_timeout(POLL);
                if matches!(ended, Ended::Finished) && pending() != Some(false) {
                    ended = Ended::Interrupted;
                    stop.store(true, Ordering::Release);
                }
            }
        });
        if let Some(payload) = panicked.into_inner().unwrap_or_else(PoisonError::into_inner) {
            resume_unwind(payload);
        }
        ended
    }
}

thread_local! {
    /// On a thread of [`on_threads`]: set once the calling thread stops it.
    static STOP: RefCell<Option<Arc<AtomicBool>>> = const { RefCell::new(None) };
}

fn stopping() -> bool {
    STOP.with_borrow(|flag| flag.as_ref().is_some_and(|flag| flag.load(Ordering::Acquire)))
}

/// The unwind that ends a thread of [`on_threads`].
struct Stopped;

/// Stops the threads of a [`Round`] however the calling thread leaves its scope.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
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
            let result = on_threads(40, threads, |item| {
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
            assert_eq!(on_threads(25, threads, add), Ok(()));
            assert_eq!(all.into_inner(), (0..25).sum::<usize>());
        }
    }

    #[test]
    fn items_on_threads_run_at_the_same_time_and_a_later_error_gives_way_to_an_earlier_one() {
        for threads in [2, 4] {
            let inside = AtomicUsize::new(0);
            let together = |_| -> Result<(), ()> {
                inside.fetch_add(1, Ordering::SeqCst);
                let waiting = std::time::Instant::now();
                while inside.load(Ordering::SeqCst) < threads && waiting.elapsed() < Duration::from_secs(2) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                if inside.load(Ordering::SeqCst) == threads { Ok(()) } else { Err(()) }
            };
            assert_eq!(on_threads(threads, threads, together), Ok(()), "{threads} items at once");
        }
        // Item 1 fails first; item 0, taken before it, fails later and is the one reported.
        let first_fails_last = |item| -> Result<(), usize> {
            if item == 0 {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(item)
        };
        assert_eq!(on_threads(2, 2, first_fails_last), Err((0, 0)));
    }

    /// Counts the jobs under way, however they end.
    struct Running<'a>(&'a AtomicUsize);

    impl<'a> Running<'a> {
        fn new(count: &'a AtomicUsize) -> Running<'a> {
            count.fetch_add(1, Ordering::SeqCst);
            Running(count)
        }
    }

    impl Drop for Running<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_check_that_stops_the_calling_thread_runs_once_the_threads_are_stopped_and_a_panic_on_them_reaches_it() {
        static RUNNING: AtomicUsize = AtomicUsize::new(0);
        // On a thread of its own, so that threads that did not stop fail the test rather than hang it.
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let started = std::time::Instant::now();
            set_pending(|| true);
            set_check(|| {
                assert_eq!(RUNNING.load(Ordering::SeqCst), 0, "the check ran while a job was running");
                stop();
            });
            // Each item runs its thread's check in a loop, as a long decoding does between rows, until it unwinds.
            let spin = |_| -> Result<(), ()> {
                let _running = Running::new(&RUNNING);
                loop {
                    check();
                    std::thread::sleep(Duration::from_millis(1));
                }
            };
            let stopped = catch_unwind(AssertUnwindSafe(|| on_threads(8, 2, spin)));
            let payload = stopped.map(drop).map_err(|payload| payload.downcast_ref::<&str>().copied());
            sender.send((payload, started.elapsed())).unwrap();
        });
        let (payload, elapsed) = receiver.recv_timeout(Duration::from_secs(5)).expect("the threads stopped");
        assert_eq!(payload, Err(Some("stopped")), "the calling thread's check stopped the work");
        assert!(elapsed < Duration::from_secs(1), "stopped in {elapsed:?}");

        let panicked = catch_unwind(AssertUnwindSafe(|| {
            on_threads(3, 2, |i| -> Result<(), ()> {
                assert!(i != 1, "a bug");
                Ok(())
            })
        }));
        let payload = panicked.expect_err("a thread's panic reaches the caller");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"a bug"));
    }

    #[test]
    fn a_check_that_lets_the_work_go_on_has_the_items_not_yet_done_run_again() {
        static CHECKS: AtomicUsize = AtomicUsize::new(0);
        set_pending(|| true);
        set_check(|| {
            CHECKS.fetch_add(1, Ordering::SeqCst);
        });
        let completed: Vec<AtomicUsize> = (0..10).map(|_| AtomicUsize::new(0)).collect();
        // Each item takes about 10 ms, checking as it goes: each round, stopped at its first poll, finishes a few.
        let item = |index: usize| -> Result<(), ()> {
            for _ in 0..5 {
                check();
                std::thread::sleep(Duration::from_millis(2));
            }
            completed[index].fetch_add(1, Ordering::SeqCst);
            Ok(())
        };
        assert_eq!(on_threads(10, 2, item), Ok(()));
        set_pending(|| false);
        set_check(|| {});
        let once = completed.iter().all(|c| c.load(Ordering::SeqCst) == 1);
        assert!(once, "each item ran to its end once: {completed:?}");
        assert!(CHECKS.load(Ordering::SeqCst) > 0, "the calling thread's check ran between rounds");
    }
}

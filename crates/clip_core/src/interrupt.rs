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
//! An inference is stopped from outside: a host that also sets a pending test with [`set_pending`] (PostgreSQL: is
//! an interrupt that may stop the statement pending?) has it asked every [`POLL`] by a watcher thread while ONNX
//! Runtime runs, and the run is told to terminate when it says yes (ONNX Runtime stops between two nodes of the
//! graph). Once the run has returned, the check runs on the host's thread as anywhere else; a check that returns
//! (the interrupt did not stop the work after all) has the inference run again, so that it still gives its result.
//!
//! A JPEG being decoded is stopped the same way: libjpeg-turbo asks the pending test as it works (from C, where the
//! check may not unwind), gives up when it says yes, and the check then runs.
//!
//! The check and the pending test are per thread. Only the host's thread runs the host's check, and only it, the
//! watcher of its inference and the JPEG decoder on it ask the host's pending test. Of the threads the core starts,
//! the one that reads a tokenizer while a session loads runs no check; the threads that decode a batch's images
//! ([`on_threads`]) have a check and a pending test of their own: when the host's pending test, asked while the
//! host's thread waits for them, says yes, they wait in their check while the host's check runs, and stop if it
//! unwinds.
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe, UnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
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
/// or a JPEG's decoding. So it should say no to the host's interrupts that recur without stopping anything: yeses
/// that come more often than an inference takes would keep it from ever ending. With none set (the default),
/// inferences and JPEG decoding run unwatched.
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
/// While it waits, the calling thread asks its pending test every [`POLL`]. When the test says yes, the threads
/// are paused at their next check (which runs before each item and inside the job's long loops, as anywhere;
/// decoding that runs none, a WebP, GIF, BMP or TIFF, finishes its image first), and only once they all wait there
/// does the calling thread run its check: no thread of this call runs while the check may end the process
/// (PostgreSQL's FATAL exits without unwinding, freeing what the job reads on its way). A check that returns lets
/// the threads go on; one that unwinds stops them (their check unwinds, their pending test says yes) and joins them
/// before the unwind goes on. As for an inference, a pending test that still says yes after a check that returned
/// is not asked again during this call. Without a pending test, the threads run unwatched.
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
    if threads < 2 {
        queue.run(&job);
        return queue.into_result();
    }
    let control = Arc::new(Control::new(std::thread::current()));
    let panicked = Mutex::new(None::<Box<dyn Any + Send>>);
    std::thread::scope(|scope| {
        let _stop = StopOnDrop(&control);
        let mut started = 0;
        for _ in 0..threads {
            let (mine, queue, job, panicked) = (Arc::clone(&control), &queue, &job, &panicked);
            let worker = move || {
                CONTROL.set(Some(Arc::clone(&mine)));
                set_check(|| with_control(Control::at_check));
                set_pending(|| with_control(Control::stopping));
                if let Err(payload) = catch_unwind(AssertUnwindSafe(|| queue.run(job))) {
                    if !payload.is::<Stopped>() {
                        // A bug of the job's: the calling thread raises the first once the other threads are done.
                        queue.drain();
                        panicked.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(payload);
                    }
                }
                mine.leave();
            };
            control.running.fetch_add(1, Ordering::AcqRel);
            let spawn = || std::thread::Builder::new().name("clip decode".into()).spawn_scoped(scope, worker);
            if crate::runtime::with_signals_blocked(spawn).is_err() {
                control.running.fetch_sub(1, Ordering::AcqRel);
                break;
            }
            started += 1;
        }
        if started == 0 {
            queue.run(&job);
        }
        let mut watch = true;
        while control.running.load(Ordering::Acquire) > 0 {
            std::thread::park_timeout(POLL);
            if watch && pending() == Some(true) {
                control.pause_all();
                check();
                watch = pending() == Some(false);
                control.go_on();
            }
        }
    });
    if let Some(payload) = panicked.into_inner().unwrap_or_else(PoisonError::into_inner) {
        resume_unwind(payload);
    }
    queue.into_result()
}

/// The items of [`on_threads`] not yet taken, and the lowest-indexed error so far.
struct Queue<T, E> {
    items: Mutex<std::iter::Enumerate<std::vec::IntoIter<T>>>,
    failed: Mutex<Option<(usize, E)>>,
}

impl<T, E> Queue<T, E> {
    /// Takes the items one by one, running this thread's check before each, until none is left.
    fn run(&self, job: &impl Fn(T) -> Result<(), E>) {
        loop {
            // Taken apart from the loop's condition, so that the lock is not held while the job runs.
            let next = self.items.lock().unwrap_or_else(PoisonError::into_inner).next();
            let Some((index, item)) = next else { break };
            check();
            if let Err(error) = job(item) {
                let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
                if failed.as_ref().is_none_or(|(first, _)| index < *first) {
                    *failed = Some((index, error));
                }
                // What is left in the queue comes after this item.
                self.drain();
            }
        }
    }

    fn drain(&self) {
        self.items.lock().unwrap_or_else(PoisonError::into_inner).by_ref().for_each(drop);
    }

    fn into_result(self) -> Result<(), (usize, E)> {
        self.failed.into_inner().unwrap_or_else(PoisonError::into_inner).map_or(Ok(()), Err)
    }
}

/// How the calling thread of [`on_threads`] steers its threads.
struct Control {
    phase: Mutex<Phase>,
    changed: Condvar,
    /// The threads not yet done.
    running: AtomicUsize,
    /// Woken when a thread pauses or is done.
    caller: std::thread::Thread,
}

#[derive(Clone, Copy, PartialEq)]
enum Phase {
    Run,
    /// Requested by the calling thread; `usize` threads wait in their check.
    Pause(usize),
    Stop,
}

impl Control {
    fn new(caller: std::thread::Thread) -> Control {
        Control { phase: Mutex::new(Phase::Run), changed: Condvar::new(), running: AtomicUsize::new(0), caller }
    }

    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A thread's check: waits while a pause lasts, unwinds once the threads are stopped.
    fn at_check(&self) {
        let mut phase = self.phase();
        if let Phase::Pause(waiting) = *phase {
            *phase = Phase::Pause(waiting + 1);
            self.caller.unpark();
            while matches!(*phase, Phase::Pause(_)) {
                phase = self.changed.wait(phase).unwrap_or_else(PoisonError::into_inner);
            }
        }
        if *phase == Phase::Stop {
            drop(phase);
            resume_unwind(Box::new(Stopped));
        }
    }

    /// A thread's pending test.
    fn stopping(&self) -> bool {
        *self.phase() == Phase::Stop
    }

    /// Asks the threads to pause, and returns once each of those still running waits in its check.
    fn pause_all(&self) {
        *self.phase() = Phase::Pause(0);
        loop {
            if let Phase::Pause(waiting) = *self.phase() {
                if waiting >= self.running.load(Ordering::Acquire) {
                    return;
                }
            }
            std::thread::park_timeout(POLL);
        }
    }

    fn go_on(&self) {
        *self.phase() = Phase::Run;
        self.changed.notify_all();
    }

    fn stop(&self) {
        *self.phase() = Phase::Stop;
        self.changed.notify_all();
    }

    /// A thread is done.
    fn leave(&self) {
        self.running.fetch_sub(1, Ordering::AcqRel);
        self.caller.unpark();
    }
}

thread_local! {
    /// On a thread of [`on_threads`]: how its calling thread steers it.
    static CONTROL: RefCell<Option<Arc<Control>>> = const { RefCell::new(None) };
}

fn with_control<T: Default>(f: impl FnOnce(&Control) -> T) -> T {
    let control = CONTROL.with_borrow(Option::clone);
    control.as_deref().map(f).unwrap_or_default()
}

/// The unwind that ends a thread of [`on_threads`].
struct Stopped;

/// Stops the threads of [`on_threads`] however the calling thread leaves its scope.
struct StopOnDrop<'a>(&'a Control);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop();
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

    /// Runs `f` on a thread of its own (with no check or pending test set), failing rather than hanging if it
    /// takes more than 10 s.
    fn within_10_s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || sender.send(f()).unwrap());
        receiver.recv_timeout(Duration::from_secs(10)).expect("done within 10 s")
    }

    /// A job of about `ms` ms that runs its thread's check every millisecond, as a decoding does between rows, and
    /// is counted in `running` (the test's own, as tests run at the same time) except while in its check.
    fn checking_job(ms: u64, running: &AtomicUsize) -> Result<(), ()> {
        running.fetch_add(1, Ordering::SeqCst);
        for _ in 0..ms {
            running.fetch_sub(1, Ordering::SeqCst);
            let checked = catch_unwind(check);
            running.fetch_add(1, Ordering::SeqCst);
            if let Err(payload) = checked {
                running.fetch_sub(1, Ordering::SeqCst);
                resume_unwind(payload);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        running.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }

    #[test]
    fn the_calling_threads_check_runs_while_no_job_runs_and_a_check_that_stops_it_stops_the_threads() {
        static UP: AtomicBool = AtomicBool::new(false);
        static RUNNING: AtomicUsize = AtomicUsize::new(0);
        let (stopped, elapsed, checks) = within_10_s(|| {
            static CHECKS: AtomicUsize = AtomicUsize::new(0);
            let started = std::time::Instant::now();
            // An interrupt every 50 ms; the first two let the work go on, as one that stops nothing; the third stops.
            let raise = std::thread::spawn(|| {
                while CHECKS.load(Ordering::SeqCst) < 3 {
                    std::thread::sleep(Duration::from_millis(50));
                    UP.store(true, Ordering::SeqCst);
                }
            });
            set_pending(|| UP.load(Ordering::SeqCst));
            set_check(|| {
                assert_eq!(RUNNING.load(Ordering::SeqCst), 0, "the check ran while a job was running");
                UP.store(false, Ordering::SeqCst);
                if CHECKS.fetch_add(1, Ordering::SeqCst) == 2 {
                    stop();
                }
            });
            let work = || on_threads(vec![(); 8], 2, |()| checking_job(1000, &RUNNING));
            let stopped = catch_unwind(AssertUnwindSafe(work));
            let elapsed = started.elapsed();
            raise.join().unwrap();
            let stopped = stopped.map(drop).map_err(|payload| payload.downcast_ref::<&str>().copied());
            (stopped, elapsed, CHECKS.load(Ordering::SeqCst))
        });
        assert_eq!(stopped, Err(Some("stopped")), "the calling thread's check stopped the work");
        assert_eq!(checks, 3);
        assert!(elapsed < Duration::from_secs(1), "stopped in {elapsed:?}");
    }

    #[test]
    fn a_check_that_lets_the_work_go_on_loses_nothing_and_a_pending_test_that_stays_yes_is_not_asked_again() {
        let (result, completed, checks) = within_10_s(|| {
            static CHECKS: AtomicUsize = AtomicUsize::new(0);
            set_pending(|| true);
            set_check(|| {
                CHECKS.fetch_add(1, Ordering::SeqCst);
            });
            let (running, completed) = (AtomicUsize::new(0), AtomicUsize::new(0));
            let result = on_threads(vec![(); 6], 2, |()| {
                checking_job(50, &running)?;
                completed.fetch_add(1, Ordering::SeqCst);
                Ok::<_, ()>(())
            });
            (result, completed.into_inner(), CHECKS.load(Ordering::SeqCst))
        });
        assert_eq!((result, completed), (Ok(()), 6));
        assert_eq!(checks, 1, "asked once: it still said yes after the check");
    }

    #[test]
    fn without_a_pending_test_the_threads_run_unwatched() {
        let result = within_10_s(|| {
            set_check(|| panic!("no check without a pending test"));
            on_threads(vec![(); 4], 2, |()| {
                std::thread::sleep(Duration::from_millis(100));
                Ok::<_, ()>(())
            })
        });
        assert_eq!(result, Ok(()));
    }

    #[test]
    fn a_panic_on_a_thread_reaches_the_caller() {
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

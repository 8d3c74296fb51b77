//! Stopping an inference in the middle: a host with a pending test has a running ONNX Runtime inference
//! terminated when the test says yes, its check run once the run has returned, and the inference run again when
//! the check lets the work go on.
mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clip_core::interrupt;
use clip_core::preprocess::{decode, DecodeLimits, DecodedImage};
use clip_core::{ClipModel, ImageBatch};
use common::{repo, settings};

fn tiny_model() -> ClipModel {
    ClipModel::open(settings(repo().join("tests/fixtures/tiny-model"))).unwrap()
}

fn image() -> DecodedImage {
    let bytes = std::fs::read(repo().join("tests/fixtures/images/chelsea_rgb_451x300.jpg")).unwrap();
    decode(&bytes, &DecodeLimits::default()).unwrap()
}

/// `n` copies of `image`, preprocessed into one batch.
fn batch(model: &ClipModel, image: &DecodedImage, n: usize) -> ImageBatch {
    let mut batch = model.image_batch(n);
    for _ in 0..n {
        batch.push(image);
    }
    batch
}

/// Embeds `n` copies of `image` in one inference, returning the embeddings and how long the inference took.
fn embed(model: &mut ClipModel, image: &DecodedImage, n: usize) -> (Vec<Vec<f32>>, Duration) {
    let batch = batch(model, image, n);
    let started = Instant::now();
    let embeddings = model.embed_image_batch(batch).unwrap();
    (embeddings, started.elapsed())
}

/// A batch of images whose one inference (unwatched, as this thread has no pending test yet) takes at least
/// `at_least`, with its embeddings.
fn long_image_batch(model: &mut ClipModel, image: &DecodedImage, at_least: Duration) -> (usize, Vec<Vec<f32>>) {
    let mut n = 16;
    loop {
        let (embeddings, took) = embed(model, image, n);
        if took >= at_least {
            return (n, embeddings);
        }
        n *= 2;
    }
}

/// Raises `flag` `delay` after the pending test was first asked (`asked` counts its calls), that is once an
/// inference is being watched, so that every check before it (while tokenizing) saw the flag down; after 20 s
/// without a question, raises it anyway. Returns when it was raised.
fn raise_once_asked(flag: &'static AtomicBool, asked: &'static AtomicUsize, delay: Duration) -> JoinHandle<Instant> {
    std::thread::spawn(move || {
        let started = Instant::now();
        while asked.load(Ordering::SeqCst) == 0 && started.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(delay);
        flag.store(true, Ordering::SeqCst);
        Instant::now()
    })
}

/// As many 77-token texts as make one inference take at least `at_least`, with the time it took.
fn long_texts(model: &mut ClipModel, at_least: Duration) -> (Vec<&'static str>, Duration) {
    let text = "a b c d e f g h i j k l m n o p q r s t u v w x y z a b c d e f g h i j k l m n o p q r s t u v w x y \
                z a b c d e f g h i j k l m n o p q r s t u v w x y z";
    let mut n = 256;
    loop {
        let texts = vec![text; n];
        let started = Instant::now();
        model.embed_texts(&texts).unwrap();
        let took = started.elapsed();
        if took >= at_least {
            return (texts, took);
        }
        n *= 2;
    }
}

static STOP: AtomicBool = AtomicBool::new(false);
static STOP_ASKED: AtomicUsize = AtomicUsize::new(0);

#[test]
fn a_pending_stop_terminates_a_running_inference_and_the_session_stays_usable() {
    let mut model = tiny_model();
    let (texts, took) = long_texts(&mut model, Duration::from_millis(800));
    let cat = model.embed_texts(&["a photo of a cat"]).unwrap();
    interrupt::set_pending(|| {
        STOP_ASKED.fetch_add(1, Ordering::SeqCst);
        STOP.load(Ordering::SeqCst)
    });
    interrupt::set_check(|| {
        if STOP.load(Ordering::SeqCst) {
            panic!("stopped");
        }
    });
    let raised = raise_once_asked(&STOP, &STOP_ASKED, Duration::from_millis(100));
    let stopped = catch_unwind(AssertUnwindSafe(|| model.embed_texts(&texts)));
    let ended = Instant::now();
    let raised = raised.join().unwrap();
    // The flag rose while the inference ran (it takes `took`, and the flag rises 100 ms after it started): a run
    // left to its end returns its embeddings and runs no check, so the check's stop shows the run was terminated.
    // How soon is printed, not asserted: a timed assertion fails on a loaded machine.
    let Err(payload) = stopped else { panic!("the inference ran to its end") };
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"stopped"));
    eprintln!(
        "stopped {:?} after the flag; the whole inference of {} texts takes {took:?}",
        ended - raised,
        texts.len()
    );
    // A terminated run leaves the session as it was.
    STOP.store(false, Ordering::SeqCst);
    assert_eq!(model.embed_texts(&["a photo of a cat"]).unwrap(), cat);
}

static SPURIOUS: AtomicBool = AtomicBool::new(false);
static SPURIOUS_ASKED: AtomicUsize = AtomicUsize::new(0);
static FALSE_ALARMS: AtomicUsize = AtomicUsize::new(0);

#[test]
fn a_pending_flag_the_check_lets_pass_reruns_the_inference_to_the_same_result() {
    let (mut model, image) = (tiny_model(), image());
    let (n, uninterrupted) = long_image_batch(&mut model, &image, Duration::from_millis(600));
    interrupt::set_pending(|| {
        SPURIOUS_ASKED.fetch_add(1, Ordering::SeqCst);
        SPURIOUS.load(Ordering::SeqCst)
    });
    // As PostgreSQL's check does for an interrupt that stops nothing: clears the flag and returns.
    interrupt::set_check(|| {
        if SPURIOUS.swap(false, Ordering::SeqCst) {
            FALSE_ALARMS.fetch_add(1, Ordering::SeqCst);
        }
    });
    let long = batch(&model, &image, n);
    let raised = raise_once_asked(&SPURIOUS, &SPURIOUS_ASKED, Duration::from_millis(100));
    let embeddings = model.embed_image_batch(long).unwrap();
    raised.join().unwrap();
    // embed_image_batch runs the check only after a terminated run.
    assert_eq!(FALSE_ALARMS.load(Ordering::SeqCst), 1, "the inference was terminated, checked and run again");
    assert_eq!(embeddings, uninterrupted);
}

static HELD: AtomicBool = AtomicBool::new(false);
static HELD_ASKED: AtomicUsize = AtomicUsize::new(0);

#[test]
fn a_pending_flag_that_stays_up_does_not_stop_the_inference_forever() {
    let (mut model, image) = (tiny_model(), image());
    let (n, uninterrupted) = long_image_batch(&mut model, &image, Duration::from_millis(300));
    // As PostgreSQL's check does while interrupts are held off: returns, leaving the flag up.
    interrupt::set_pending(|| {
        HELD_ASKED.fetch_add(1, Ordering::SeqCst);
        HELD.load(Ordering::SeqCst)
    });
    interrupt::set_check(|| {});
    let raised = raise_once_asked(&HELD, &HELD_ASKED, Duration::from_millis(50));
    assert_eq!(embed(&mut model, &image, n).0, uninterrupted);
    raised.join().unwrap();
    // Already up when the inference starts: it runs unwatched after one terminated start.
    assert_eq!(embed(&mut model, &image, n).0, uninterrupted);
}

#[test]
fn a_text_inference_is_rerun_after_a_pending_flag_the_check_lets_pass() {
    let mut model = tiny_model();
    let texts = ["a photo of a cat", "a diagram", "a dog on a beach"];
    let before = model.embed_texts(&texts).unwrap();
    // Up before the inference starts: the watcher terminates it at once (or too late, the run being short), the
    // check lets it pass, and the second run is unwatched since the flag stays up.
    interrupt::set_pending(|| true);
    interrupt::set_check(|| {});
    assert_eq!(model.embed_texts(&texts).unwrap(), before);
}

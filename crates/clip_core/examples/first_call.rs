//! Where a fresh backend's first text call spends its time, part by part, outside PostgreSQL: loading ONNX
//! Runtime, reading the tokenizer, creating the text session from the prepared weights, and the inference itself
//! (a second call of the same length). Run it several times: the first run prepares the tower into the cache.
//!
//!   cargo run --release -p clip_core --example first_call -- LIBONNXRUNTIME MODEL_DIR CACHE_DIR
//!
//! Prints wall and CPU milliseconds of each part (BENCHMARKS.md, "Where the first call goes").
use std::path::PathBuf;
use std::time::Instant;

use clip_core::{ClipModel, ModelSettings, Weights};

/// Wall and CPU time since the last mark.
struct Clock {
    wall: Instant,
    cpu: f64,
}

impl Clock {
    fn start() -> Clock {
        Clock { wall: Instant::now(), cpu: process_cpu_ms() }
    }

    fn lap(&mut self) -> String {
        let now = Clock::start();
        let part = format!("{:.0} / {:.0}", (now.wall - self.wall).as_secs_f64() * 1e3, now.cpu - self.cpu);
        *self = now;
        part
    }
}

fn process_cpu_ms() -> f64 {
    // SAFETY: clock_gettime fills a timespec owned by this frame.
    let t = unsafe {
        let mut t: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t);
        t
    };
    t.tv_sec as f64 * 1e3 + t.tv_nsec as f64 / 1e6
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [library, model_dir, cache] = args.as_slice() else {
        return Err("usage: first_call LIBONNXRUNTIME MODEL_DIR CACHE_DIR".into());
    };
    let mut clock = Clock::start();
    clip_core::runtime::load(library)?;
    let runtime = clock.lap();
    let mut model = ClipModel::open(ModelSettings {
        model_dir: model_dir.clone(),
        onnxruntime_library: library.clone(),
        intra_threads: 1,
        weights: Weights::Shared { cache: cache.clone() },
    })?;
    model.tokenizer()?;
    let tokenizer = clock.lap();
    model.embed_texts(&["a photo of a cat"])?;
    let session_and_first = clock.lap();
    model.embed_texts(&["a photo of a dog"])?;
    let second = clock.lap();
    println!(
        "ms wall / CPU: ONNX Runtime {runtime}, tokenizer {tokenizer}, text session + first inference \
         {session_and_first}, a second inference {second}"
    );
    Ok(())
}

//! Where a fresh backend's first text call spends its time, outside PostgreSQL. By default, the whole first call as a
//! backend makes it (loading ONNX Runtime and creating the text session on this thread while a second one reads the
//! tokenizer, then the inference), and a second call of the same length. With `parts`, one part after the other:
//! loading ONNX Runtime, reading the tokenizer, creating the text session from the prepared weights with the first
//! inference, and a second inference. Run it several times: the first run prepares the tower into the cache.
//!
//!   cargo run --release -p clip_core --example first_call -- LIBONNXRUNTIME MODEL_DIR CACHE_DIR [parts]
//!
//! Prints wall and CPU milliseconds (the CPU time of every thread of the process; BENCHMARKS.md, "Where the first
//! call goes").
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
    let (library, model_dir, cache, parts) = match args.as_slice() {
        [library, model_dir, cache] => (library, model_dir, cache, false),
        [library, model_dir, cache, mode] if mode.as_os_str() == "parts" => (library, model_dir, cache, true),
        _ => return Err("usage: first_call LIBONNXRUNTIME MODEL_DIR CACHE_DIR [parts]".into()),
    };
    let mut clock = Clock::start();
    let mut model = ClipModel::open(ModelSettings {
        model_dir: model_dir.clone(),
        onnxruntime_library: library.clone(),
        intra_threads: 1,
        weights: Weights::Shared { cache: cache.clone() },
        provider: clip_core::runtime::Provider::Cpu,
    })?;
    if parts {
        clock.lap(); // opening the model (reading its manifest) is none of the parts
        clip_core::runtime::load(library)?;
        let runtime = clock.lap();
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
    } else {
        model.embed_texts(&["a photo of a cat"])?;
        let first = clock.lap();
        model.embed_texts(&["a photo of a dog"])?;
        let second = clock.lap();
        println!("ms wall / CPU: first call {first}, a second call {second}");
    }
    Ok(())
}

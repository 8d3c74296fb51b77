//! The model core end to end with the real ONNX Runtime library and the tiny fixture model: parity with
//! open_clip's reference embeddings, batching, lazy towers, and broken model directories.
use std::path::{Path, PathBuf};

use clip_core::preprocess::{decode, decode_reduced, DecodeLimits};
use clip_core::runtime::Provider;
use clip_core::{cosine, runtime, ClipError, ClipModel, ModelSettings};

mod common;
use common::{copy_of_fixture, embed_both, empty_cache, floats, onnxruntime_library, reference, repo, settings, shared};

fn tiny_model() -> ClipModel {
    ClipModel::open(settings(repo().join("tests/fixtures/tiny-model"))).expect("tiny model opens")
}

#[test]
fn batched_text_embeddings_match_open_clip() {
    let reference = reference();
    let cases = reference["texts"].as_array().unwrap();
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    let mut model = tiny_model();
    // One batch of texts of different lengths: padding must not change any embedding.
    let batch = model.embed_texts(&texts).unwrap();
    for (case, got) in cases.iter().zip(&batch) {
        let similarity = cosine(got, &floats(&case["embedding"]));
        assert!(similarity >= 0.9999, "{:?}: {similarity}", case["text"]);
    }
    let single = model.embed_texts(&[texts[0]]).unwrap();
    assert!(cosine(&single[0], &batch[0]) > 0.99999);
}

#[test]
fn batched_image_embeddings_match_open_clip() {
    let reference = reference();
    let cases = reference["images"].as_array().unwrap();
    let images: Vec<_> = cases
        .iter()
        .map(|c| {
            let bytes = std::fs::read(repo().join("tests/fixtures/images").join(c["file"].as_str().unwrap())).unwrap();
            decode(&bytes, &DecodeLimits { max_pixels: 50_000_000 }).unwrap()
        })
        .collect();
    let mut model = tiny_model();
    assert_eq!(model.loaded_towers(), (false, false), "nothing loads before it is needed");
    let batch = model.embed_images(&images).unwrap();
    assert_eq!(model.loaded_towers(), (false, true), "embedding images loads the image tower only");
    for (case, got) in cases.iter().zip(&batch) {
        let similarity = cosine(got, &floats(&case["embedding"]));
        assert!(similarity >= 0.9999, "{:?}: {similarity}", case["file"]);
    }
}

#[test]
fn a_batch_of_encoded_images_equals_the_decoded_ones_and_keeps_only_its_tensor() {
    let names = ["chelsea_rgb_451x300.jpg", "logo_rgba_240x240.png", "camera_l_128x128.gif"];
    let files: Vec<Vec<u8>> =
        names.iter().map(|n| std::fs::read(repo().join("tests/fixtures/images").join(n)).unwrap()).collect();
    let limits = DecodeLimits { max_pixels: 50_000_000 };
    let mut model = tiny_model();
    let decoded: Vec<_> = files.iter().map(|b| decode(b, &limits).unwrap()).collect();
    let one_by_one = model.embed_images(&decoded).unwrap();
    let encoded: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
    for threads in [1, 2, 3] {
        let mut batch = model.image_batch(files.len());
        batch.push_encoded(&encoded, &limits, false, threads).unwrap();
        assert_eq!(batch.len(), files.len());
        assert_eq!(model.embed_image_batch(batch).unwrap(), one_by_one, "decoded on {threads} thread(s)");
    }

    // With the draft, a JPEG of at least twice the input size is pushed decoded at a reduced scale.
    let big = std::fs::read(repo().join("tests/fixtures/images/rocket_rgb_1280x854.jpg")).unwrap();
    let mut batch = model.image_batch(1);
    batch.push_encoded(&[&big], &limits, true, 1).unwrap();
    let reduced = decode_reduced(&big, &limits, model.preprocess_config().image_size).unwrap();
    assert_eq!((reduced.width(), reduced.height()), (640, 427));
    assert_eq!(model.embed_image_batch(batch).unwrap(), model.embed_images(&[reduced]).unwrap());

    // The first bad image is the one reported, however many threads decode.
    let bad: Vec<&[u8]> = vec![encoded[0], b"not an image", encoded[1], b"nor this", encoded[2]];
    for threads in [1, 2, 4] {
        let mut batch = model.image_batch(bad.len());
        let (index, err) = batch.push_encoded(&bad, &limits, false, threads).unwrap_err();
        assert_eq!(index, 1, "decoded on {threads} thread(s)");
        assert!(err.to_string().contains("not an image"), "{err}");
        assert!(batch.is_empty(), "a failed push adds nothing");
    }
}

#[test]
fn embeddings_do_not_depend_on_the_thread_count() {
    let texts = ["a photo of a cat", "a diagram", "two dogs playing in the snow"];
    let image = std::fs::read(repo().join("tests/fixtures/images/chelsea_rgb_451x300.jpg")).unwrap();
    let image = decode(&image, &DecodeLimits::default()).unwrap();
    let embed = |threads: usize| {
        let settings = ModelSettings { intra_threads: threads, ..settings(repo().join("tests/fixtures/tiny-model")) };
        let mut model = ClipModel::open(settings).unwrap();
        (model.embed_texts(&texts).unwrap(), model.embed_images(std::slice::from_ref(&image)).unwrap())
    };
    let (one, two) = (embed(1), embed(2));
    for (a, b) in one.0.iter().chain(&one.1).zip(two.0.iter().chain(&two.1)) {
        assert!(cosine(a, b) >= 0.999999, "1 vs 2 threads: cosine {}", cosine(a, b));
    }
}

#[test]
fn cuda_where_onnx_runtime_cannot_use_it_runs_on_the_cpu_and_says_why() {
    let texts = ["a photo of a cat", "a diagram"];
    let image = std::fs::read(repo().join("tests/fixtures/images/chelsea_rgb_451x300.jpg")).unwrap();
    let image = decode(&image, &DecodeLimits::default()).unwrap();
    let dir = repo().join("tests/fixtures/tiny-model");
    let cache = empty_cache("cuda");
    // Shared weights asked for too: a CUDA session reads the model's own files and prepares nothing.
    let on_gpu = ModelSettings { provider: Provider::Cuda { device: 0 }, ..shared(dir.clone(), &cache) };
    let mut model = ClipModel::open(on_gpu).unwrap();
    let on_cuda = (model.embed_texts(&texts).unwrap(), model.embed_images(std::slice::from_ref(&image)).unwrap());
    // The pinned library is ONNX Runtime's CPU build (and a machine without a GPU driver fails the GPU build's CUDA
    // provider): each tower says once why it runs on the CPU.
    for _tower in ["text", "image"] {
        let reason = model.take_cuda_unavailable().expect("each tower's reason");
        assert!(reason.to_lowercase().contains("cuda"), "{reason}");
    }
    assert_eq!(model.take_cuda_unavailable(), None);
    assert!(!cache.exists(), "nothing prepared in the weights cache");

    let mut cpu = ClipModel::open(settings(dir)).unwrap();
    assert_eq!(on_cuda, (cpu.embed_texts(&texts).unwrap(), cpu.embed_images(&[image]).unwrap()));
    assert_eq!(cpu.take_cuda_unavailable(), None);
}

#[test]
fn runtime_reports_the_library_version() {
    tiny_model().embed_texts(&["x"]).unwrap();
    let library = onnxruntime_library();
    let file_name = library.file_name().unwrap().to_string_lossy().into_owned();
    let version = runtime::load(&library).unwrap();
    assert_eq!(file_name, format!("libonnxruntime.so.{version}"), "the version the library reports is its file's");
}

#[test]
fn a_model_file_that_differs_from_its_checksum_is_refused() {
    let dir = copy_of_fixture("tiny-model", "checksum");
    let mut bytes = std::fs::read(dir.join("text.onnx")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(dir.join("text.onnx"), bytes).unwrap();
    let err = ClipModel::open(settings(dir.clone())).unwrap().embed_texts(&["x"]).unwrap_err();
    assert!(matches!(err, ClipError::ModelInvalid { .. }), "{err}");
    assert!(err.to_string().contains("text.onnx has sha256"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_first_text_call_loads_the_tokenizer_beside_the_session_and_reports_its_error_first() {
    let dir = copy_of_fixture("tiny-model", "text_parts");
    let tokenizer = std::fs::read(dir.join("tokenizer.json")).unwrap();
    std::fs::write(dir.join("tokenizer.json"), b"{}").unwrap();
    std::fs::write(dir.join("image.onnx"), b"not the image tower").unwrap(); // a text call never reads it
    let mut model = ClipModel::open(settings(dir.clone())).unwrap();
    let err = model.embed_texts(&["x"]).unwrap_err();
    assert!(err.to_string().contains("tokenizer.json has sha256"), "{err}");
    assert_eq!(model.loaded_towers(), (true, false), "the text session, loaded beside the tokenizer, is kept");
    std::fs::write(dir.join("tokenizer.json"), &tokenizer).unwrap();
    let fixture = ClipModel::open(settings(repo().join("tests/fixtures/tiny-model"))).unwrap().embed_texts(&["a cat"]);
    assert_eq!(model.embed_texts(&["a cat"]).unwrap(), fixture.unwrap());
    // The other way round: the tokenizer, loaded beside a session that failed, is kept.
    std::fs::write(dir.join("text.onnx"), b"not the text tower").unwrap();
    let mut model = ClipModel::open(settings(dir.clone())).unwrap();
    let err = model.embed_texts(&["x"]).unwrap_err();
    assert!(err.to_string().contains("text.onnx has sha256"), "{err}");
    std::fs::write(dir.join("tokenizer.json"), b"{}").unwrap();
    assert!(model.tokenizer().is_ok(), "the tokenizer read beside the failed session is not read again");
    // Both broken: the tokenizer's error, as when the two were loaded one after the other.
    let err = ClipModel::open(settings(dir.clone())).unwrap().embed_texts(&["x"]).unwrap_err();
    assert!(err.to_string().contains("tokenizer.json has sha256"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_language_the_model_does_not_take_is_refused_before_anything_loads() {
    let mut model = tiny_model();
    let err = model.embed_texts_in(&["a cat"], Some("eng_Latn")).unwrap_err();
    assert!(matches!(err, ClipError::Language(_)), "{err}");
    assert_eq!(model.loaded_towers(), (false, false));
}

#[test]
fn a_missing_or_broken_model_directory_is_a_clear_error() {
    let err = ClipModel::open(settings(PathBuf::new())).err().unwrap();
    assert!(matches!(err, ClipError::ModelNotConfigured), "{err}");

    let err = ClipModel::open(settings(PathBuf::from("/nonexistent/model"))).err().unwrap();
    assert!(matches!(err, ClipError::ModelMissing { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/model/manifest.json"), "{err}");

    let dir = copy_of_fixture("tiny-model", "manifest");
    std::fs::write(dir.join("manifest.json"), "{ not json").unwrap();
    let err = ClipModel::open(settings(dir.clone())).err().unwrap();
    assert!(matches!(err, ClipError::ModelInvalid { .. }), "{err}");

    let manifest = std::fs::read_to_string(repo().join("tests/fixtures/tiny-model/manifest.json")).unwrap();
    std::fs::write(dir.join("manifest.json"), manifest.replace("\"text.onnx\"", "\"../text.onnx\"")).unwrap();
    let err = ClipModel::open(settings(dir.clone())).err().unwrap();
    assert!(err.to_string().contains("relative path inside the directory"), "{err}");
    for outside in ["/etc/passwd", "textual/../../x", ".hidden/text.onnx", "a//b"] {
        std::fs::write(dir.join("manifest.json"), manifest.replace("\"text.onnx\"", &format!("{outside:?}"))).unwrap();
        let err = ClipModel::open(settings(dir.clone())).err().unwrap();
        assert!(err.to_string().contains("relative path inside the directory"), "{outside}: {err}");
    }

    std::fs::write(dir.join("manifest.json"), &manifest).unwrap();
    std::fs::remove_file(dir.join("image.onnx")).unwrap();
    let mut model = ClipModel::open(settings(dir.clone())).unwrap();
    assert!(model.embed_texts(&["text still works"]).is_ok(), "the text tower does not need image.onnx");
    let pixel = std::fs::read(repo().join("tests/fixtures/images/tiny_rgb_1x1.png")).unwrap();
    let err = model.embed_images(&[decode(&pixel, &DecodeLimits { max_pixels: 10 }).unwrap()]).unwrap_err();
    assert!(matches!(err, ClipError::ModelMissing { .. }), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

fn prepared_files(cache: &Path, tower: &str) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(&format!("{tower}-")))
        .collect();
    assert_eq!(dirs.len(), 1, "one prepared directory for the {tower} tower: {dirs:?}");
    dirs[0].clone()
}

#[test]
fn shared_weights_give_the_same_embeddings_as_the_heap_and_are_mapped_from_the_cache() {
    let cache = empty_cache("same");
    let model_dir = repo().join("tests/fixtures/tiny-model");
    let heap = embed_both(&mut ClipModel::open(settings(model_dir.clone())).unwrap());
    let prepared = embed_both(&mut ClipModel::open(shared(model_dir.clone(), &cache)).unwrap());
    assert_eq!(heap, prepared, "bit-identical");
    // A second model (a second backend) loads what the first prepared, and maps its weights while it lives.
    let mut second = ClipModel::open(shared(model_dir, &cache)).unwrap();
    assert_eq!(heap, embed_both(&mut second));
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    for tower in ["text", "image"] {
        let data = prepared_files(&cache, tower).join(format!("{tower}.data"));
        assert!(maps.contains(data.to_str().unwrap()), "{} is mapped", data.display());
    }
    drop(second);
    std::fs::remove_dir_all(cache).unwrap();
}

#[test]
fn damaged_prepared_files_are_refused() {
    let model_dir = repo().join("tests/fixtures/tiny-model");
    let text_error = |cache: &Path| ClipModel::open(shared(model_dir.clone(), cache)).unwrap().embed_texts(&["x"]).unwrap_err();
    let set_writable = |path: &Path, writable: bool| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(if writable { 0o666 } else { 0o444 })).unwrap();
    };

    // Truncated (by a rename over it: files in use are never truncated in place).
    let cache = empty_cache("truncated");
    ClipModel::open(shared(model_dir.clone(), &cache)).unwrap().embed_texts(&["x"]).unwrap();
    let data = prepared_files(&cache, "text").join("text.data");
    let bytes = std::fs::read(&data).unwrap();
    let replacement = data.with_extension("new");
    std::fs::write(&replacement, &bytes[..bytes.len() / 2]).unwrap();
    set_writable(&replacement, false);
    std::fs::rename(&replacement, &data).unwrap();
    let err = text_error(&cache);
    assert!(matches!(err, ClipError::ModelInvalid { .. }) && err.to_string().contains("bytes"), "{err}");
    std::fs::remove_dir_all(&cache).unwrap();

    // The same size, one byte changed: caught by the hash that the changed file identity calls for.
    let cache = empty_cache("modified");
    ClipModel::open(shared(model_dir.clone(), &cache)).unwrap().embed_texts(&["x"]).unwrap();
    let data = prepared_files(&cache, "text").join("text.data");
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[100] ^= 1;
    let replacement = data.with_extension("new");
    std::fs::write(&replacement, &bytes).unwrap();
    set_writable(&replacement, false);
    std::fs::rename(&replacement, &data).unwrap();
    let err = text_error(&cache);
    assert!(matches!(err, ClipError::ModelInvalid { .. }) && err.to_string().contains("sha256"), "{err}");

    // A file others can write is refused before it is read.
    set_writable(&data, true);
    let err = text_error(&cache);
    assert!(matches!(err, ClipError::ModelInvalid { .. }) && err.to_string().contains("no one else can write"), "{err}");
    std::fs::remove_dir_all(&cache).unwrap();
}

#[test]
fn a_cache_directory_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let cache = empty_cache("open");
    let model_dir = repo().join("tests/fixtures/tiny-model");
    ClipModel::open(shared(model_dir.clone(), &cache)).unwrap().embed_texts(&["x"]).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = ClipModel::open(shared(model_dir, &cache)).unwrap().embed_texts(&["x"]).unwrap_err();
    assert!(matches!(err, ClipError::WeightsCache { .. }) && err.to_string().contains("no one else can write"), "{err}");
    std::fs::remove_dir_all(cache).unwrap();
}

/// The lock file and the once-per-boot stamp only spare later loads a hash: where neither can be written, a load
/// hashes the files and goes on.
#[test]
fn prepared_files_load_where_the_lock_and_the_stamp_cannot_be_written() {
    let cache = empty_cache("unwritable");
    let model_dir = repo().join("tests/fixtures/tiny-model");
    let expected = ClipModel::open(shared(model_dir.clone(), &cache)).unwrap().embed_texts(&["a cat"]).unwrap();
    let tower = prepared_files(&cache, "text");
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let stamp = tower.join(format!("verified-{}.json", boot.trim()));
    std::fs::remove_file(&stamp).unwrap();
    std::fs::create_dir(&stamp).unwrap(); // the new stamp cannot be renamed over a directory
    let lock = cache.join(format!(".{}.lock", tower.file_name().unwrap().to_string_lossy()));
    std::fs::remove_file(&lock).unwrap();
    std::fs::create_dir(&lock).unwrap(); // nor the lock file opened for writing
    for _ in 0..2 {
        let embedded = ClipModel::open(shared(model_dir.clone(), &cache)).unwrap().embed_texts(&["a cat"]).unwrap();
        assert_eq!(embedded, expected);
    }
    std::fs::remove_dir_all(cache).unwrap();
}

#[test]
fn two_models_preparing_at_once_end_with_one_valid_directory() {
    let cache = empty_cache("race");
    let model_dir = repo().join("tests/fixtures/tiny-model");
    let reference = embed_both(&mut ClipModel::open(settings(model_dir.clone())).unwrap());
    let results: Vec<_> = std::thread::scope(|scope| {
        let racers: Vec<_> = (0..2)
            .map(|_| scope.spawn(|| embed_both(&mut ClipModel::open(shared(model_dir.clone(), &cache)).unwrap())))
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert!(results.iter().all(|r| *r == reference));
    for tower in ["text", "image"] {
        let dir = prepared_files(&cache, tower);
        assert!(dir.join("prepared.json").is_file());
    }
    let leftovers: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "no temporary directory is left: {leftovers:?}");
    std::fs::remove_dir_all(cache).unwrap();
}

#[test]
fn a_loaded_tower_is_not_removed_from_the_cache_until_its_model_is_dropped() {
    let cache = empty_cache("in_use");
    let model_dir = repo().join("tests/fixtures/tiny-model");
    let mut model = ClipModel::open(shared(model_dir.clone(), &cache)).unwrap();
    let expected = model.embed_texts(&["a cat"]).unwrap();
    let entries = clip_core::prepared::cache_entries(&cache).unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(entries[0].in_use && entries[0].is_current(runtime::load(&onnxruntime_library()).unwrap()));
    assert!(clip_core::prepared::remove_unused(&cache, |_| false).unwrap().towers.is_empty());
    assert_eq!(model.embed_texts(&["a cat"]).unwrap(), expected);
    drop(model);
    let removal = clip_core::prepared::remove_unused(&cache, |_| false).unwrap();
    assert_eq!(removal.towers.len(), 1, "{removal:?}");
    // The next model prepares the tower again.
    let mut model = ClipModel::open(shared(model_dir, &cache)).unwrap();
    assert_eq!(model.embed_texts(&["a cat"]).unwrap(), expected);
    prepared_files(&cache, "text");
    drop(model);
    std::fs::remove_dir_all(cache).unwrap();
}

//! Tests that run inside PostgreSQL (`cargo pgrx test`), against the tiny CLIP-shaped model in
//! tests/fixtures/tiny-model and the reference embeddings open_clip wrote for it (tools/export_model.py).
#[pgrx::pg_schema]
mod tests {
    use clip_core::cosine;
    use pgrx::prelude::*;
    use serde_json::Value;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

    fn fixture_json(name: &str) -> Value {
        let path = format!("{FIXTURES}/{name}");
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))).expect("json")
    }

    fn floats(v: &Value) -> Vec<f32> {
        v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number") as f32).collect()
    }

    fn embed_text(text: &str) -> Vec<f32> {
        Spi::get_one_with_args::<Vec<f32>>("SELECT clip_embed_text($1)::real[]", &[text.into()])
            .expect("query")
            .expect("not null")
    }

    #[pg_test]
    fn text_embeddings_match_open_clip() {
        let reference = fixture_json("tiny-model/reference.json");
        let cases = reference["texts"].as_array().expect("texts");
        assert!(cases.len() >= 50, "the fixture must cover at least 50 texts");
        for case in cases {
            let text = case["text"].as_str().expect("text");
            let similarity = cosine(&embed_text(text), &floats(&case["embedding"]));
            assert!(similarity >= 0.9999, "text {text:?}: cosine {similarity} with open_clip");
        }
    }

    #[pg_test]
    fn image_embeddings_match_open_clip() {
        let reference = fixture_json("tiny-model/reference.json");
        let cases = reference["images"].as_array().expect("images");
        assert!(cases.len() >= 10, "the fixture must cover at least 10 images");
        for case in cases {
            let file = case["file"].as_str().expect("file");
            let bytes = std::fs::read(format!("{FIXTURES}/images/{file}")).expect("image file");
            let got = Spi::get_one_with_args::<Vec<f32>>("SELECT clip_embed_image($1)::real[]", &[bytes.into()])
                .expect("query")
                .expect("not null");
            let similarity = cosine(&got, &floats(&case["embedding"]));
            assert!(similarity >= 0.9999, "image {file}: cosine {similarity} with open_clip");
        }
    }

    #[pg_test]
    fn embeddings_are_unit_vectors_of_the_model_dimension() {
        let dim = Spi::get_one::<i32>("SELECT (clip_info()->>'embed_dim')::int").unwrap().unwrap();
        let v = embed_text("a photo of a cat");
        assert_eq!(v.len(), dim as usize);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    }

    #[pg_test]
    fn null_in_gives_null_out() {
        for query in [
            "SELECT clip_embed_text(NULL) IS NULL",
            "SELECT clip_embed_image(NULL) IS NULL",
            "SELECT clip_similarity(NULL::text, NULL::bytea) IS NULL",
            "SELECT clip_similarity(NULL::vector, clip_embed_text('x')) IS NULL",
        ] {
            assert_eq!(Spi::get_one::<bool>(query).unwrap(), Some(true), "{query}");
        }
    }

    #[pg_test]
    fn hnsw_index_serves_text_search() {
        let dim = Spi::get_one::<i32>("SELECT (clip_info()->>'embed_dim')::int").unwrap().unwrap();
        Spi::run(&format!(
            "CREATE TABLE captions (id int PRIMARY KEY, caption text, embedding vector({dim}));
             INSERT INTO captions SELECT i, 'caption number ' || i, clip_embed_text('caption number ' || i)
               FROM generate_series(1, 300) i;
             CREATE INDEX captions_hnsw ON captions USING hnsw (embedding vector_cosine_ops);
             ANALYZE captions;
             SET LOCAL enable_seqscan = off; -- 300 rows are cheaper to scan than to search"
        ))
        .unwrap();
        let query = "SELECT id FROM captions ORDER BY embedding <=> clip_embed_text('caption number 42') LIMIT 3";
        let plan = Spi::explain(query).unwrap().0.to_string();
        assert!(plan.contains("captions_hnsw"), "the HNSW index must serve the query: {plan}");
        let best = Spi::get_one::<i32>(query).unwrap();
        assert_eq!(best, Some(42), "the exact caption must rank first");
    }

    #[pg_test]
    fn similarity_of_a_text_and_an_image_is_the_cosine_of_their_embeddings() {
        let bytes = std::fs::read(format!("{FIXTURES}/images/{}", first_image())).unwrap();
        let (direct, via_vectors) = Spi::get_two_with_args::<f64, f64>(
            "SELECT clip_similarity('a photo', $1), clip_similarity(clip_embed_text('a photo'), clip_embed_image($1))",
            &[bytes.into()],
        )
        .unwrap();
        let (direct, via_vectors) = (direct.unwrap(), via_vectors.unwrap());
        assert!((direct - via_vectors).abs() < 1e-6, "{direct} vs {via_vectors}");
    }

    #[pg_test]
    fn a_registered_model_whose_files_changed_is_refused() {
        let dir = std::env::temp_dir().join(format!("clip-registered-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(format!("{FIXTURES}/tiny-model")).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
        let dir_text = dir.to_str().unwrap();
        Spi::run_with_args("SELECT clip_register_model('copied', $1)", &[dir_text.into()]).unwrap();
        assert!(Spi::get_one::<bool>("SELECT clip_embed_text('x', model => 'copied') = clip_embed_text('x')")
            .unwrap()
            .unwrap());
        // Same model, other manifest bytes: another sha256 than the registered one.
        let manifest = dir.join("manifest.json");
        let text = std::fs::read_to_string(&manifest).unwrap();
        std::fs::write(&manifest, format!("{text}\n")).unwrap();
        // Another thread count makes the backend open the model again, and find the new manifest.
        let refused = Spi::run(
            "SET LOCAL clip.intra_op_threads = 2;
             DO $$ BEGIN
                 PERFORM clip_embed_text('x', model => 'copied');
                 RAISE EXCEPTION 'the changed files were used';
             EXCEPTION WHEN data_corrupted THEN NULL;
             END $$",
        );
        std::fs::remove_dir_all(&dir).unwrap();
        refused.unwrap();
    }

    /// The backend's pending test, which the core asks while ONNX Runtime runs and while a JPEG is decoded, says
    /// no to the interrupts known to stop nothing: client_connection_check_interval's probe recurs, and would
    /// terminate every inference longer than it. It says yes to any other, and to a stopping one whatever else is
    /// pending.
    #[pg_test]
    fn interrupts_known_to_stop_nothing_are_not_pending() {
        // Raises `flags`, asks the test, and puts every flag back: nothing in between processes interrupts.
        let pending_with = |flags: &[*mut pg_sys::sig_atomic_t]| {
            // SAFETY: the backend's own flags, written on its thread as its signal handlers write them.
            unsafe {
                let saved: Vec<_> = flags.iter().map(|flag| flag.read_volatile()).collect();
                flags.iter().for_each(|flag| flag.write_volatile(1));
                let pending = crate::interrupt_pending();
                flags.iter().zip(saved).for_each(|(flag, value)| flag.write_volatile(value));
                pending
            }
        };
        let interrupt = &raw mut pg_sys::InterruptPending;
        let barrier = &raw mut pg_sys::ProcSignalBarrierPending;
        assert!(!pending_with(&[]), "nothing pending");
        assert!(!pending_with(&[&raw mut pg_sys::QueryCancelPending]), "a cancel not yet raised as an interrupt");
        assert!(pending_with(&[interrupt]), "an interrupt whose reason cannot be read");
        assert!(!pending_with(&[interrupt, barrier]), "a barrier");
        #[cfg(not(feature = "pg13"))]
        {
            let probe = &raw mut pg_sys::CheckClientConnectionPending;
            assert!(!pending_with(&[interrupt, probe]), "the client connection probe");
            assert!(!pending_with(&[interrupt, &raw mut pg_sys::LogMemoryContextPending]), "a log request");
            assert!(pending_with(&[interrupt, probe, &raw mut pg_sys::QueryCancelPending]), "a cancel and the probe");
        }
        assert!(pending_with(&[interrupt, barrier, &raw mut pg_sys::QueryCancelPending]), "a cancel");
        assert!(pending_with(&[interrupt, barrier, &raw mut pg_sys::ProcDiePending]), "a termination");
        assert!(pending_with(&[interrupt, barrier, &raw mut pg_sys::ClientConnectionLost]), "a lost client");
        #[cfg(any(feature = "pg17", feature = "pg18"))]
        assert!(
            pending_with(&[interrupt, barrier, &raw mut pg_sys::TransactionTimeoutPending]),
            "transaction_timeout"
        );
    }

    fn first_image() -> String {
        fixture_json("tiny-model/reference.json")["images"][0]["file"].as_str().unwrap().to_string()
    }
}

//! A CLIP model loaded from a model directory: tokenizer, text tower and image tower, each loaded on first use
//! so that a backend that only searches by text never loads the image tower.
use std::path::{Path, PathBuf};

use ort::session::Session;
use ort::session::SessionOutputs;
use ort::value::{Outlet, Tensor, TensorElementType, Value, ValueType, ValueTypeMarker};

use crate::error::{check_language, ClipError, Result};
use crate::hf_tokenizer::HfTokenizer;
use crate::graph::{self, GraphInput, TowerKind};
use crate::interrupt;
use crate::manifest::{read_verified, read_verified_shared, Manifest, TokenizerKind, TowerFiles};
use crate::preprocess::{decode, decode_reduced, preprocess_into, DecodeLimits, DecodedImage, ImageError, PreprocessConfig};
use crate::prepared::{prepared_graph, InUse, TowerRequest};
use crate::runtime::{self, Created, GraphBytes, Provider, SessionSource};
use crate::tokenizer::ClipTokenizer;

/// Everything that decides which model is loaded and how. A change of any field means a new `ClipModel`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSettings {
    pub model_dir: PathBuf,
    pub onnxruntime_library: PathBuf,
    pub intra_threads: usize,
    pub weights: Weights,
    /// What runs the inferences. A session on CUDA reads the model's own files, whatever `weights` says: the
    /// prepared towers hold weights laid out for this CPU.
    pub provider: Provider,
}

/// Where a backend's copy of the weights lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Weights {
    /// Mapped read-only from towers prepared once in this cache directory (see [`crate::prepared`]): one copy in
    /// the page cache for every process on the host.
    Shared { cache: PathBuf },
    /// Read, verified and prepacked into this process's own memory.
    Heap,
}

pub struct ClipModel {
    settings: ModelSettings,
    manifest: Manifest,
    tokenizer: Option<TextTokenizer>,
    text: Option<Tower>,
    image: Option<Tower>,
}

impl ClipModel {
    /// Reads the manifest. Model files are read, verified and loaded when first needed.
    pub fn open(settings: ModelSettings) -> Result<ClipModel> {
        if settings.model_dir.as_os_str().is_empty() {
            return Err(ClipError::ModelNotConfigured);
        }
        let manifest = Manifest::load(&settings.model_dir)?;
        Ok(ClipModel { settings, manifest, tokenizer: None, text: None, image: None })
    }

    pub fn settings(&self) -> &ModelSettings {
        &self.settings
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn preprocess_config(&self) -> PreprocessConfig {
        let spec = &self.manifest.image;
        PreprocessConfig {
            image_size: spec.size,
            resize_mode: spec.resize_mode,
            interpolation: spec.interpolation,
            mean: spec.mean,
            std: spec.std,
        }
    }

    /// Why a tower loaded since the last call runs on the CPU although CUDA was asked for; once per tower.
    pub fn take_cuda_unavailable(&mut self) -> Option<String> {
        [&mut self.text, &mut self.image].into_iter().flatten().find_map(|tower| tower.cuda_unavailable.take())
    }

    /// Which towers this model has loaded so far: (text, image).
    pub fn loaded_towers(&self) -> (bool, bool) {
        (self.text.is_some(), self.image.is_some())
    }

    pub fn tokenizer(&mut self) -> Result<&TextTokenizer> {
        if self.tokenizer.is_none() {
            self.tokenizer = Some(read_tokenizer(&self.settings.model_dir, &self.manifest)?);
        }
        Ok(self.tokenizer.as_ref().expect("set above"))
    }

    /// On a first text call, when neither the tokenizer nor the text tower is loaded, loads both at once: the
    /// tokenizer is read on a second thread while this one loads ONNX Runtime and creates the session, so the call
    /// takes the longer of the two rather than their sum (BENCHMARKS.md, "Where the first call goes"). Otherwise
    /// [`Self::tokenizer`] and [`Self::tower`] load what is missing when it is needed.
    fn load_text_together(&mut self) -> Result<()> {
        if self.tokenizer.is_none() && self.text.is_none() {
            let (settings, manifest) = (&self.settings, &self.manifest);
            let (tokenizer, session) = std::thread::scope(|scope| {
                let read = || read_tokenizer(&settings.model_dir, manifest);
                // Started with every signal blocked, so that PostgreSQL's handlers only run on the backend's own
                // thread. Where no thread can be started, the tokenizer is read afterwards, on this one.
                let reader = runtime::with_signals_blocked(|| std::thread::Builder::new().spawn_scoped(scope, read));
                let session = Tower::open(settings, manifest, TowerKind::Text);
                let tokenizer = match reader {
                    Ok(reader) => reader
                        .join()
                        .unwrap_or_else(|_| Err(invalid(&settings.model_dir, "tokenizer: reading it panicked".into()))),
                    Err(_) => read(),
                };
                (tokenizer, session)
            });
            // Whatever loaded is kept; the tokenizer's error first, as when the two are loaded one after the other.
            let session = session.map(|tower| self.text = Some(tower));
            self.tokenizer = Some(tokenizer?);
            session?;
        }
        Ok(())
    }

    /// Embeds texts in one batch. Each row is L2-normalised.
    pub fn embed_texts(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        self.embed_texts_in(texts, None)
    }

    /// Embeds texts of one language in one batch: `language` is a code of the manifest's languages (NLLB), or
    /// `None` for the model's default; a model without languages refuses one. The [interrupt
    /// check](crate::interrupt) runs between the texts and while each is tokenized, and a watched inference is
    /// stopped for it.
    pub fn embed_texts_in(&mut self, texts: &[&str], language: Option<&str>) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        // A language the model does not take is refused before anything is loaded for it.
        check_language(self.manifest.text.languages.as_ref().map(|l| l.codes.as_slice()), language)?;
        self.load_text_together()?;
        let tokenizer = self.tokenizer()?;
        let ids = texts
            .iter()
            .map(|t| {
                interrupt::check();
                tokenizer.encode(t, language)
            })
            .collect::<Result<Vec<Vec<i64>>>>()?;
        let spec = &self.manifest.text;
        // The tokenizers truncate to the context; a row that is empty (a tokenizer that adds no special token, on
        // an empty text) would give the tower nothing to pool.
        if ids.iter().any(|row| row.is_empty() || row.len() > spec.context_length) {
            return Err(ClipError::Inference("the tokenizer gave no tokens, or more than the context, for a text".into()));
        }
        let (pad_id, context, pad_to_context) = (spec.pad_id, spec.context_length, spec.pad_to_context);
        let dim = self.manifest.embed_dim;
        let tower = self.tower(TowerKind::Text)?;
        // Towers without a causal mask see every position: pad to the full context with the model's pad id, as
        // open_clip does. Under a causal mask, pooled at the end token, padding after it changes nothing: pad to
        // the longest text of the batch only, unless the graph's shape fixes the width (it then equals the
        // context: see `Tower::open`).
        let width = match tower.input.width {
            Some(width) => width,
            None if pad_to_context => context,
            None => ids.iter().map(Vec::len).max().expect("texts is not empty"),
        };
        let mut embeddings = Vec::with_capacity(ids.len());
        for rows in ids.chunks(tower.input.batch.unwrap_or(ids.len())) {
            interrupt::check();
            let mut flat = vec![pad_id; rows.len() * width];
            for (row, seq) in flat.chunks_mut(width).zip(rows) {
                row[..seq.len()].copy_from_slice(seq);
            }
            let shape = [rows.len(), width];
            let read = |outputs: &SessionOutputs| rows_normalised(&outputs[0], rows.len(), dim);
            embeddings.extend(if tower.input.int32_ids {
                // Ids are below the vocabulary size, which the manifest bounds far below 2^31.
                let input = Tensor::from_array((shape, flat.iter().map(|&id| id as i32).collect::<Vec<i32>>()))?;
                tower.run(&input, read)?
            } else {
                tower.run(&Tensor::from_array((shape, flat))?, read)?
            });
        }
        Ok(embeddings)
    }

    /// An empty batch of images for this model's input size, with room for `capacity` images.
    pub fn image_batch(&self, capacity: usize) -> ImageBatch {
        let cfg = self.preprocess_config();
        ImageBatch { cfg, pixels: Vec::with_capacity(capacity * cfg.tensor_len()), len: 0 }
    }

    /// Embeds decoded images in one batch. Each row is L2-normalised.
    pub fn embed_images(&mut self, images: &[DecodedImage]) -> Result<Vec<Vec<f32>>> {
        let mut batch = self.image_batch(images.len());
        for image in images {
            interrupt::check();
            batch.push(image);
        }
        self.embed_image_batch(batch)
    }

    /// Embeds the images of a batch in one inference, or one per image where the graph takes one at a time. Each
    /// row is L2-normalised.
    pub fn embed_image_batch(&mut self, batch: ImageBatch) -> Result<Vec<Vec<f32>>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        if batch.cfg != self.preprocess_config() {
            return Err(ClipError::Inference("the image batch was made for another model".into()));
        }
        let (size, tensor_len, rows) = (batch.cfg.image_size as usize, batch.cfg.tensor_len(), batch.len);
        let dim = self.manifest.embed_dim;
        let tower = self.tower(TowerKind::Image)?;
        let per_run = tower.input.batch;
        let mut run = |pixels: Vec<f32>| {
            let n = pixels.len() / tensor_len;
            let input = Tensor::from_array(([n, 3, size, size], pixels))?;
            tower.run(&input, |outputs| rows_normalised(&outputs[0], n, dim))
        };
        let embeddings = match per_run {
            Some(per_run) if per_run < rows => {
                batch.pixels.chunks(per_run * tensor_len).try_fold(Vec::with_capacity(rows), |mut all, pixels| {
                    interrupt::check();
                    all.extend(run(pixels.to_vec())?);
                    Ok(all)
                })
            }
            _ => run(batch.pixels),
        };
        // A batch's activations are tens of MB (about 75 MB for 16 images): give them back rather than keep them
        // for the backend's lifetime (see runtime::release_free_heap). Not after one image: its few MB are reused
        // by the next call, and faulting them in again each time cost 3-6% of a single image's time.
        if rows > 1 {
            runtime::release_free_heap();
        }
        embeddings
    }

    fn tower(&mut self, kind: TowerKind) -> Result<&mut Tower> {
        let slot = match kind {
            TowerKind::Text => &mut self.text,
            TowerKind::Image => &mut self.image,
        };
        if slot.is_none() {
            *slot = Some(Tower::open(&self.settings, &self.manifest, kind)?);
        }
        Ok(slot.as_mut().expect("set above"))
    }
}

/// Reads, verifies and loads the tokenizer the manifest names.
fn read_tokenizer(dir: &Path, manifest: &Manifest) -> Result<TextTokenizer> {
    let spec = &manifest.text;
    let bytes = read_verified(dir, &manifest.files.tokenizer)?;
    let tokenizer = match spec.tokenizer {
        TokenizerKind::OpenaiBpe => {
            ClipTokenizer::from_json_bytes(&bytes, spec.context_length).map(TextTokenizer::OpenAiBpe)
        }
        TokenizerKind::Huggingface => {
            HfTokenizer::from_json_bytes(&bytes, spec.clean, spec.context_length, spec.languages.as_ref())
                .map(TextTokenizer::HuggingFace)
        }
    }
    .map_err(|e| invalid(dir, format!("tokenizer: {e}")))?;
    if let TextTokenizer::OpenAiBpe(t) = &tokenizer {
        if Some(t.sot_id()) != spec.sot_token_id || Some(t.eot_id()) != spec.eot_token_id {
            return Err(invalid(dir, "tokenizer special tokens differ from the manifest".into()));
        }
    }
    Ok(tokenizer)
}

/// Creates a tower's session as the settings say: from the model's files into this process's heap, or from the
/// tower prepared in the weights cache (prepared first when it is not there yet), with the mark that keeps the
/// tower's files in the cache while the session maps them.
fn open_session(s: &ModelSettings, files: &TowerFiles, tower: TowerKind) -> Result<(Created, Option<InUse>)> {
    let dir = &s.model_dir;
    let named = |e: ClipError| match e {
        ClipError::Inference(reason) => invalid(dir, format!("{}: {reason}", files.graph.path)),
        other => other,
    };
    let read = || -> Result<GraphBytes> {
        let graph = read_verified(dir, &files.graph)?;
        let data = match (&files.data, files.data_name()) {
            (Some(entry), Some(name)) => Some((name.to_owned(), read_verified_shared(dir, entry)?)),
            _ => None,
        };
        Ok(GraphBytes { graph, data })
    };
    let open_from_memory = || {
        let source = SessionSource::Memory(read()?);
        runtime::create_session(&s.onnxruntime_library, source, s.intra_threads, s.provider).map(|created| (created, None))
    };
    match &s.weights {
        Weights::Shared { cache } if s.provider == Provider::Cpu => {
            let request = TowerRequest {
                cache,
                tower: tower.name(),
                source_sha256: &files.source_sha256(),
                source_bytes: [Some(&files.graph), files.data.as_ref()]
                    .into_iter()
                    .flatten()
                    // A file that cannot be read is reported when it is read.
                    .filter_map(|entry| std::fs::metadata(dir.join(&entry.path)).ok())
                    .map(|meta| meta.len())
                    .sum(),
                onnxruntime_version: runtime::load(&s.onnxruntime_library)?,
            };
            let prepared = prepared_graph(&request, |graph, data_file| {
                runtime::prepare_session_files(&s.onnxruntime_library, read()?, graph, data_file)?;
                runtime::check_prepacked_alignment(graph)
            })
            .map_err(named)?;
            let source = SessionSource::Prepared(&prepared.graph);
            runtime::create_session(&s.onnxruntime_library, source, s.intra_threads, s.provider)
                .map(|created| (created, Some(prepared.in_use)))
        }
        Weights::Heap | Weights::Shared { .. } => open_from_memory(),
    }
    .map_err(named)
}

/// The tokenizer a model's manifest names.
pub enum TextTokenizer {
    OpenAiBpe(ClipTokenizer),
    HuggingFace(HfTokenizer),
}

impl TextTokenizer {
    /// The model's token ids of `text` (in `language`, for models that take one), truncated to the context with
    /// the end token kept, not padded.
    pub fn encode(&self, text: &str, language: Option<&str>) -> Result<Vec<i64>> {
        match (self, language) {
            (TextTokenizer::OpenAiBpe(t), language) => check_language(None, language).map(|()| t.encode(text)),
            (TextTokenizer::HuggingFace(t), language) => t.encode(text, language),
        }
    }
}

/// Images preprocessed into one input tensor, ready for [`ClipModel::embed_image_batch`]. Each image is
/// preprocessed when it is added, so its decoded pixels can be freed at once: a batch holds its tensor (0.6 MB per
/// 224-pixel image), never its decoded images, however large they were.
pub struct ImageBatch {
    cfg: PreprocessConfig,
    pixels: Vec<f32>,
    len: usize,
}

impl ImageBatch {
    /// Preprocesses `image` into the batch's tensor.
    pub fn push(&mut self, image: &DecodedImage) {
        let start = self.pixels.len();
        self.pixels.resize(start + self.cfg.tensor_len(), 0.0);
        preprocess_into(image, &self.cfg, &mut self.pixels[start..]);
        self.len += 1;
    }

    /// Decodes encoded images and preprocesses them into the batch's tensor, freeing each one's decoded pixels at
    /// once. They are decoded on up to `threads` threads ([`interrupt::on_threads`]), so memory holds up to
    /// `threads` decoded images. With `jpeg_draft`, a large JPEG is decoded at a reduced scale that still covers the
    /// model's input size ([`decode_reduced`]). An error names the (0-based) position of the first image that
    /// failed, and leaves the batch as it was.
    pub fn push_encoded(
        &mut self,
        images: &[&[u8]],
        limits: &DecodeLimits,
        jpeg_draft: bool,
        threads: usize,
    ) -> Result<(), (usize, ImageError)> {
        let (start, tensor_len, cfg) = (self.pixels.len(), self.cfg.tensor_len(), self.cfg);
        self.pixels.resize(start + images.len() * tensor_len, 0.0);
        let outs = self.pixels[start..].chunks_mut(tensor_len);
        let jobs: Vec<(&[u8], &mut [f32])> = images.iter().copied().zip(outs).collect();
        let decoded = interrupt::on_threads(jobs, threads, |(bytes, out)| {
            let image =
                if jpeg_draft { decode_reduced(bytes, limits, cfg.image_size)? } else { decode(bytes, limits)? };
            preprocess_into(&image, &cfg, out);
            Ok(())
        });
        match decoded {
            Ok(()) => self.len += images.len(),
            Err(_) => self.pixels.truncate(start),
        }
        decoded
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A tower's session and the shape of its input.
struct Tower {
    session: Session,
    input: GraphInput,
    /// Why the session runs on the CPU although CUDA was asked for, until [`ClipModel::take_cuda_unavailable`].
    cuda_unavailable: Option<String>,
    /// Set for a session on CUDA until its first run, which creates CUDA's per-thread handles (see [`Tower::run`]).
    first_run_on_cuda: bool,
    /// Held while the session maps the prepared tower's files; declared after the session, so dropped after it.
    _in_use: Option<InUse>,
}

impl Tower {
    fn open(settings: &ModelSettings, manifest: &Manifest, kind: TowerKind) -> Result<Tower> {
        let files = match kind {
            TowerKind::Text => &manifest.files.text,
            TowerKind::Image => &manifest.files.image,
        };
        let (Created { session, cuda_unavailable }, in_use) = open_session(settings, files, kind)?;
        let on_cuda = settings.provider != Provider::Cpu && cuda_unavailable.is_none();
        let inputs: Vec<graph::Tensor> = session.inputs().iter().map(graph_tensor).collect();
        let input = graph::check_input(&inputs, manifest, kind)
            .map_err(|reason| invalid(&settings.model_dir, format!("{}: {reason}", files.graph.path)))?;
        Ok(Tower { session, input, cuda_unavailable, first_run_on_cuda: on_cuda, _in_use: in_use })
    }

    /// Runs the session ([`runtime::run`]). A CUDA session's first run creates the cuBLAS and cuDNN handles of the
    /// calling thread, and whatever threads those libraries start inherit its signal mask: it runs with every signal
    /// blocked, as the session's creation did, so that PostgreSQL's handlers run on the backend's thread only. A
    /// cancel waits for the end of that one run.
    fn run<V, T>(&mut self, input: &Value<V>, read: impl FnOnce(&SessionOutputs) -> Result<T>) -> Result<T>
    where
        V: ValueTypeMarker + ?Sized,
    {
        if self.first_run_on_cuda {
            let result = runtime::with_signals_blocked(|| runtime::run(&mut self.session, input, read));
            // A run that failed may not have made the handles: the next one is then the first.
            self.first_run_on_cuda = result.is_err();
            return result;
        }
        runtime::run(&mut self.session, input, read)
    }
}

/// A session's input as [`graph::check_input`] reads it. ONNX Runtime gives a free dimension as -1.
fn graph_tensor(input: &Outlet) -> graph::Tensor {
    let (elem_type, dims) = match input.dtype() {
        ValueType::Tensor { ty, shape, .. } => {
            let code = match ty {
                TensorElementType::Float32 => graph::FLOAT,
                TensorElementType::Int32 => graph::INT32,
                TensorElementType::Int64 => graph::INT64,
                _ => 0,
            };
            (code, shape.iter().map(|&d| usize::try_from(d).ok().filter(|&d| d > 0)).collect())
        }
        _ => (0, Vec::new()),
    };
    graph::Tensor { name: input.name().to_owned(), elem_type, dims }
}

fn invalid(dir: &Path, reason: String) -> ClipError {
    ClipError::ModelInvalid { dir: dir.to_path_buf(), reason }
}

/// Splits a [rows, dim] output into L2-normalised rows, checking its shape against the manifest.
fn rows_normalised(output: &ort::value::DynValue, rows: usize, dim: usize) -> Result<Vec<Vec<f32>>> {
    let (shape, data) = output.try_extract_tensor::<f32>()?;
    if shape.len() != 2 || shape[0] as usize != rows || shape[1] as usize != dim {
        return Err(ClipError::Inference(format!("output shape {shape:?}, expected [{rows}, {dim}]")));
    }
    Ok(data.chunks(dim).map(normalised).collect())
}

pub fn normalised(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let scale = if norm > 0.0 { (1.0 / norm) as f32 } else { 0.0 };
    v.iter().map(|x| x * scale).collect()
}

/// The probability of each label for an image, as open_clip's logits `logit_scale * cosine (+ logit_bias)` give
/// it: each label's own sigmoid for sigmoid models (SigLIP: the labels are independent, and need not sum to 1),
/// a softmax over the labels otherwise.
pub fn label_probabilities(manifest: &Manifest, image: &[f32], labels: &[Vec<f32>]) -> Vec<f32> {
    let logits = labels.iter().map(|label| manifest.logit_scale * cosine(image, label));
    match manifest.logit_bias {
        Some(bias) => logits.map(|l| (1.0 / (1.0 + (-f64::from(l + bias)).exp())) as f32).collect(),
        None => {
            let logits: Vec<f32> = logits.collect();
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exps: Vec<f64> = logits.iter().map(|l| f64::from(l - max).exp()).collect();
            let sum: f64 = exps.iter().sum();
            exps.iter().map(|e| (e / sum) as f32).collect()
        }
    }
}

/// Cosine similarity; 0 when either vector is zero.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        dot += (*x as f64) * (*y as f64);
        na += (*x as f64).powi(2);
        nb += (*y as f64).powi(2);
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        (dot / (na.sqrt() * nb.sqrt())) as f32
    }
}

//! Models in the layout of Immich's ONNX exports (the `immich-app/<model>__<pretrained>` repositories of the
//! Hugging Face hub), made loadable by writing the `manifest.json` the extension reads beside their files:
//!
//! ```text
//! config.json                   open_clip's model config (embed_dim, text_cfg, vision_cfg)
//! visual/model.onnx             encode_image(normalize=True): float32 image [1, 3, S, S] (or a free batch)
//! visual/preprocess_cfg.json    open_clip's preprocessing: size, mean, std, interpolation, resize_mode
//! textual/model.onnx            encode_text(normalize=True): int32 text [1, context] (or int64, or a free batch)
//! textual/tokenizer.json        the tokenizer transformers saved (OpenAI's BPE for CLIP, or the model's own)
//! textual/tokenizer_config.json its pad token, and NLLB's language codes
//! ```
//!
//! The text and image inputs are made by the extension's own open_clip-exact tokenizers and preprocessing, as the
//! config asks: the graphs then give open_clip's embeddings. A tower over 2 GB keeps its weights in one external
//! data file beside its graph. M-CLIP's text towers (inputs `input_ids` and `attention_mask`, a tokenizer that is
//! not open_clip's) are refused, as is anything else the checks do not know.
use std::fs::File;
use std::io::Read;
use std::path::Path;

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::graph::{self, TowerKind};
use crate::manifest::{hex, Manifest, FORMAT_VERSION, MANIFEST_FILE};

pub const CONFIG_FILE: &str = "config.json";
pub const IMAGE_GRAPH: &str = "visual/model.onnx";
pub const PREPROCESS_FILE: &str = "visual/preprocess_cfg.json";
pub const TEXT_GRAPH: &str = "textual/model.onnx";
pub const TOKENIZER_FILE: &str = "textual/tokenizer.json";
pub const TOKENIZER_CONFIG_FILE: &str = "textual/tokenizer_config.json";

/// open_clip's `logit_scale` is not in the export. Trained CLIP models end at its ceiling, 100; `clip_classify`
/// ranks labels the same at any scale, only its probabilities depend on it.
const LOGIT_SCALE: f32 = 100.0;

/// Where a model came from, for the manifest (and so `clip_info()`).
pub struct Origin<'a> {
    /// The model's name (`ViT-B-32__openai`).
    pub name: &'a str,
    /// Where its files were taken from (a hub address and revision, or a directory).
    pub source: &'a str,
}

/// Checks a directory in Immich's layout and writes its `manifest.json`; returns the manifest as the extension
/// loads it. Every graph is read to check its inputs and hashed, so this takes a few seconds for a large model.
pub fn write_manifest(dir: &Path, origin: &Origin) -> Result<Manifest, String> {
    let config = read_json(dir, CONFIG_FILE)?;
    let preprocess = read_json(dir, PREPROCESS_FILE)?;
    let tokenizer_config = read_json(dir, TOKENIZER_CONFIG_FILE)?;
    let tokenizer_bytes = read(dir, TOKENIZER_FILE)?;
    let text_cfg = config.get("text_cfg").and_then(Value::as_object).ok_or("config.json has no text_cfg")?;
    let embed_dim = config.get("embed_dim").and_then(Value::as_u64).ok_or("config.json has no embed_dim")?;

    let text = text_spec(text_cfg, &tokenizer_config, &tokenizer_bytes)?;
    let image = image_spec(&preprocess)?;
    let pretrained = origin.name.split_once("__").map_or("unknown", |(_, pretrained)| pretrained);
    let manifest = json!({
        "format_version": FORMAT_VERSION,
        "name": origin.name,
        "weights": format!("pretrained {pretrained} (Immich's ONNX export)"),
        "source": origin.source,
        "embed_dim": embed_dim,
        "text": text,
        "image": image,
        "logit_scale": LOGIT_SCALE,
        "logit_bias": null,
        "files": {
            "text": tower_files(dir, TEXT_GRAPH)?,
            "image": tower_files(dir, IMAGE_GRAPH)?,
            "tokenizer": {"path": TOKENIZER_FILE, "sha256": hex(&Sha256::digest(&tokenizer_bytes))},
        },
    });
    // The manifest the extension will read is checked by the extension's own reader, then the graphs against it.
    let path = dir.join(MANIFEST_FILE);
    let bytes = serde_json::to_vec_pretty(&manifest).expect("plain JSON serialises");
    std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let loaded = Manifest::load(dir).map_err(|e| e.to_string())?;
    for (graph_path, kind) in [(TEXT_GRAPH, TowerKind::Text), (IMAGE_GRAPH, TowerKind::Image)] {
        let signature = graph::read_signature(&read(dir, graph_path)?).map_err(|e| format!("{graph_path}: {e}"))?;
        graph::check_input(&signature.inputs, &loaded, kind).map_err(|e| format!("{graph_path}: {e}"))?;
        if signature.outputs.len() != 1 {
            return Err(format!("{graph_path}: the graph gives {} outputs, not one embedding", signature.outputs.len()));
        }
    }
    Ok(loaded)
}

/// How the text becomes the text tower's input: open_clip's tokenizer for the config, padded to the context
/// (open_clip pads every text to it; the exported graphs fix that width).
fn text_spec(text_cfg: &Map<String, Value>, tokenizer_config: &Value, tokenizer: &[u8]) -> Result<Value, String> {
    let context = text_cfg.get("context_length").map_or(Some(77), Value::as_u64).ok_or("text_cfg: context_length")?;
    let kwargs = text_cfg.get("tokenizer_kwargs").and_then(Value::as_object).cloned().unwrap_or_default();
    for (key, value) in &kwargs {
        if key != "clean" && !matches!(value, Value::Null | Value::Bool(false)) {
            return Err(format!("text_cfg.tokenizer_kwargs.{key} = {value} is not supported"));
        }
    }
    let clean = kwargs.get("clean").and_then(Value::as_str);
    let hf = tokenizers::Tokenizer::from_bytes(tokenizer).map_err(|e| format!("{TOKENIZER_FILE}: {e}"))?;
    let Some(hf_name) = text_cfg.get("hf_tokenizer_name").and_then(Value::as_str) else {
        // open_clip's SimpleTokenizer (OpenAI's BPE), which the extension re-implements; the tokenizer.json is
        // Hugging Face's CLIP tokenizer, of the same vocabulary, merges and special tokens.
        let vocab = text_cfg.get("vocab_size").map_or(Some(49408), Value::as_u64).ok_or("text_cfg: vocab_size")?;
        let id = |names: [&str; 2]| names.iter().find_map(|n| hf.token_to_id(n)).ok_or(format!("{TOKENIZER_FILE} has no {}", names[1]));
        return Ok(json!({
            "context_length": context, "vocab_size": vocab, "tokenizer": "openai_bpe", "clean": clean.unwrap_or("lower"),
            "pad_id": 0, "pad_to_context": true,
            "sot_token_id": id(["<start_of_text>", "<|startoftext|>"])?, "eot_token_id": id(["<end_of_text>", "<|endoftext|>"])?,
        }));
    };
    if hf_name.contains("M-CLIP") {
        return Err("M-CLIP's text towers are not supported".into());
    }
    let token = |key: &str| match tokenizer_config.get(key) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Object(o)) => o.get("content").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    };
    let pad = token("pad_token").ok_or(format!("{TOKENIZER_CONFIG_FILE} names no pad_token"))?;
    let pad_id = hf.token_to_id(&pad).ok_or(format!("the pad token {pad:?} is not in {TOKENIZER_FILE}"))?;
    let mut spec = json!({
        "context_length": context, "vocab_size": hf.get_vocab_size(true), "tokenizer": "huggingface",
        "clean": clean.unwrap_or("whitespace"), "pad_id": pad_id, "pad_to_context": true,
    });
    if let Some(default) = token("src_lang") {
        spec["languages"] = languages(tokenizer_config, tokenizer, default)?;
    }
    Ok(spec)
}

/// NLLB's tokenizer marks a text's language with a code token that its post-processor's template places
/// (`<code> $A </s>`, saved with the default code `src_lang`); the codes are its extra special tokens.
fn languages(tokenizer_config: &Value, tokenizer: &[u8], default: String) -> Result<Value, String> {
    let parsed: Value = serde_json::from_slice(tokenizer).map_err(|e| format!("{TOKENIZER_FILE}: {e}"))?;
    let post = &parsed["post_processor"];
    if post["type"] != "TemplateProcessing" {
        return Err(format!("a language tokenizer with the post-processor {} is not supported", post["type"]));
    }
    let single = post["single"].as_array().ok_or("the post-processor has no template")?;
    let template = single
        .iter()
        .map(|item| match (item.get("Sequence"), item["SpecialToken"]["id"].as_str()) {
            (Some(_), _) => Ok("$A".to_owned()),
            (None, Some(token)) if token == default => Ok("{language}".to_owned()),
            (None, Some(token)) => Ok(token.to_owned()),
            _ => Err(format!("the template item {item} is not understood")),
        })
        .collect::<Result<Vec<String>, String>>()?;
    let codes: Vec<String> = ["extra_special_tokens", "additional_special_tokens"]
        .iter()
        .find_map(|key| tokenizer_config.get(*key).and_then(Value::as_array))
        .map(|tokens| tokens.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    let once = |item: &str| template.iter().filter(|t| *t == item).count() == 1;
    if !once("{language}") || !once("$A") || !codes.contains(&default) {
        return Err(format!("the language template {template:?} or the codes ({} of them) are not understood", codes.len()));
    }
    Ok(json!({"default": default, "codes": codes, "template": template}))
}

fn image_spec(preprocess: &Value) -> Result<Value, String> {
    let size = match &preprocess["size"] {
        Value::Array(sides) if sides.len() == 2 && sides[0] == sides[1] => sides[0].as_u64(),
        size => size.as_u64(),
    }
    .ok_or(format!("{PREPROCESS_FILE}: size {} is not one square size", preprocess["size"]))?;
    if preprocess.get("mode").is_some_and(|mode| mode != "RGB") {
        return Err(format!("{PREPROCESS_FILE}: mode {} is not RGB", preprocess["mode"]));
    }
    let field = |key: &str| preprocess.get(key).cloned().ok_or(format!("{PREPROCESS_FILE} has no {key}"));
    Ok(json!({
        "size": size, "mean": field("mean")?, "std": field("std")?, "interpolation": field("interpolation")?,
        "resize_mode": preprocess.get("resize_mode").cloned().unwrap_or(json!("shortest")),
    }))
}

/// A tower's graph and, where its initializers keep their data outside it, the one data file beside it.
fn tower_files(dir: &Path, graph_path: &str) -> Result<Value, String> {
    let bytes = read(dir, graph_path)?;
    let signature = graph::read_signature(&bytes).map_err(|e| format!("{graph_path}: {e}"))?;
    let mut files = json!({"path": graph_path, "sha256": hex(&Sha256::digest(&bytes))});
    let folder = graph_path.rsplit_once('/').map_or("", |(folder, _)| folder);
    match signature.external_data.iter().collect::<Vec<_>>().as_slice() {
        [] => {}
        [name] if !name.contains('/') => {
            let path = format!("{folder}/{name}");
            files["data"] = json!({"path": path, "sha256": sha256_of_file(&dir.join(&path))?});
        }
        names => return Err(format!("{graph_path}: its weights are in {} files ({names:?}); one is supported", names.len())),
    }
    Ok(files)
}

fn read(dir: &Path, path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(dir.join(path)).map_err(|e| format!("{path}: {e}"))
}

fn read_json(dir: &Path, path: &str) -> Result<Value, String> {
    serde_json::from_slice(&read(dir, path)?).map_err(|e| format!("{path}: {e}"))
}

/// The sha256 of a file read in pieces: data files are gigabytes.
pub fn sha256_of_file(path: &Path) -> Result<String, String> {
    let mut file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(|e| format!("{}: {e}", path.display()))?;
        if n == 0 {
            return Ok(hex(&hasher.finalize()));
        }
        hasher.update(&buffer[..n]);
    }
}

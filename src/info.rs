//! clip_info(): what produced this backend's vectors.
use clip_core::memory::MemoryUsage;
use clip_core::runtime::Provider;
use clip_core::{ClipError, Weights};
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::json;

use crate::guc;
use crate::model_cache::{choose, with_model};
use crate::registry::ModelName;

/// The model (name, weights, dimensions, preprocessing, file checksums), the ONNX Runtime version and library, the
/// settings in force, how the weights are held (shared or in this backend's heap) and this backend's memory by kind,
/// so users can see what produced their vectors and what a backend costs.
#[pg_extern(stable, parallel_safe)]
fn clip_info() -> JsonB {
    info(None)
}

/// clip_info() of the registered model `model`.
#[pg_extern(stable, parallel_safe, name = "clip_info")]
fn clip_info_by(model: ModelName) -> JsonB {
    info(Some(&model))
}

fn info(model: Option<&ModelName>) -> JsonB {
    let registered_as = model.map(|m| m.0.clone()).or_else(guc::default_model);
    JsonB(with_model("clip_info", &choose("clip_info", model), |m| {
        let version = clip_core::runtime::load(&m.settings().onnxruntime_library)?;
        let man = m.manifest();
        let (text_loaded, image_loaded) = m.loaded_towers();
        let s = m.settings();
        Ok::<_, ClipError>(json!({
            "model": man.name,
            "registered_as": registered_as,
            "manifest_sha256": man.sha256,
            "weights": man.weights,
            "source": man.source,
            "model_dir": s.model_dir,
            "embed_dim": man.embed_dim,
            "context_length": man.text.context_length,
            "tokenizer": man.text.tokenizer,
            "text_clean": man.text.clean,
            "text_padding": if man.text.pad_to_context { "context" } else { "longest" },
            "languages": man.text.languages.as_ref().map(|l| json!({"default": l.default, "codes": l.codes})),
            "image_size": man.image.size,
            "image_resize_mode": man.image.resize_mode,
            "image_interpolation": man.image.interpolation,
            "image_mean": man.image.mean,
            "image_std": man.image.std,
            "logit_scale": man.logit_scale,
            "logit_bias": man.logit_bias,
            "scoring": if man.logit_bias.is_some() { "sigmoid" } else { "softmax" },
            "files": man.files,
            "loaded": {"text": text_loaded, "image": image_loaded},
            "onnxruntime_version": version,
            "onnxruntime_library": s.onnxruntime_library,
            "intra_op_threads": s.intra_threads,
            "batch_size": guc::batch_size(),
            "max_image_pixels": guc::max_image_pixels(),
            "jpeg_draft": guc::jpeg_draft(),
            // What the workers' and clip_backfill's batches ask for; where CUDA cannot be used they warn and
            // run on the CPU.
            "bulk_execution_provider": match guc::bulk_provider() {
                Provider::Cpu => json!("cpu"),
                Provider::Cuda { device } => json!(format!("cuda:{device}")),
            },
            "weight_sharing": match &s.weights {
                Weights::Shared { cache } => json!({"mode": "shared", "cache": cache}),
                Weights::Heap => json!({"mode": "heap"}),
            },
            "memory": MemoryUsage::of_this_process().map(|u| json!({
                "rss_bytes": u.rss, "pss_bytes": u.pss, "private_bytes": u.private, "shared_bytes": u.shared,
                "anonymous_bytes": u.anonymous,
            })),
            "extension_version": env!("CARGO_PKG_VERSION"),
        }))
    }))
}

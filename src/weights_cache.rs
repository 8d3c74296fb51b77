//! The per-host cache of prepared weights (clip.weights_cache, crates/clip_core/src/prepared.rs), kept in check:
//! clip_clean_weights_cache() removes what this database's models do not use, and clip_unregister_model removes the
//! towers of the model it unregisters. A tower that a process maps is never removed (it holds a lock on it).
use std::collections::BTreeSet;
use std::path::PathBuf;

use clip_core::manifest::Manifest;
use clip_core::prepared::{cache_entries, remove_unused, CacheEntry};
use clip_core::runtime::Provider;
use clip_core::Weights;
use pgrx::prelude::*;

use crate::errors::{error, raise, OrRaise};
use crate::guc;
use crate::registry::require_superuser;

/// A tower of the cache: its directory, which tower, its size in 10^6 bytes, and what was done with it.
type CacheRow = (String, String, f64, String);

/// Removes from the cache of prepared weights every tower that no model registered in this database (nor the one
/// in clip.model_dir) uses, or that another ONNX Runtime, CPU or recipe made, unless a process maps it. Returns
/// every tower with what was done with it. Superuser only.
#[pg_extern(volatile, parallel_unsafe)]
fn clip_clean_weights_cache() -> TableIterator<
    'static,
    (name!(directory, String), name!(tower, String), name!(megabytes, f64), name!(action, String)),
> {
    const F: &str = "clip_clean_weights_cache";
    require_superuser(F);
    let Some((cache, onnxruntime)) = cache_in_use(F) else {
        return TableIterator::new(Vec::new());
    };
    let kept = towers_in_use();
    let before = cache_entries(&cache).or_raise(F);
    let keep = |e: &CacheEntry| e.is_current(onnxruntime) && kept.contains(&e.source_sha256);
    let removal = remove_unused(&cache, keep).or_raise(F);
    TableIterator::new(report(before, &removal.towers, |e| {
        if keep(e) { "kept: a model of this database uses it" } else { "kept: a process maps it" }
    }))
}

/// clip_search_internal.remove_model_weights(towers), declared in sql/models.sql and called by
/// clip_unregister_model once the model is marked unregistered: removes the prepared towers of these source
/// sha256s that no model of this database (nor clip.model_dir's) uses and that no process maps. Superuser only.
#[pg_extern(sql = false)]
fn remove_model_weights(towers: Vec<Option<String>>) -> i64 {
    const F: &str = "clip_unregister_model";
    require_superuser(F);
    let Some((cache, _)) = cache_in_use(F) else {
        return 0;
    };
    let gone: BTreeSet<String> = towers.into_iter().flatten().collect();
    let kept = towers_in_use();
    let removal =
        remove_unused(&cache, |e| !gone.contains(&e.source_sha256) || kept.contains(&e.source_sha256)).or_raise(F);
    removal.towers.len() as i64
}

/// The cache directory and this backend's ONNX Runtime version, when the weights are shared; None otherwise.
fn cache_in_use(function: &'static str) -> Option<(PathBuf, &'static str)> {
    let settings = guc::model_settings(None, Provider::Cpu);
    let Weights::Shared { cache } = settings.weights else {
        return None;
    };
    let onnxruntime = clip_core::runtime::load(&settings.onnxruntime_library).unwrap_or_else(|e| raise(function, e));
    Some((cache, onnxruntime))
}

/// The source sha256 of every tower this database uses: those of its registered models, as recorded when they were
/// registered, and those of clip.model_dir's model (left out, with a warning, when its manifest cannot be read).
fn towers_in_use() -> BTreeSet<String> {
    let mut towers: BTreeSet<String> = Spi::connect(|client| {
        client
            .select(
                "SELECT t FROM clip_search_internal.models m, pg_catalog.unnest(m.tower_sha256) t \
                 WHERE m.unregistered_at IS NULL",
                None,
                &[],
            )?
            .map(|row| row.get::<String>(1))
            .collect::<Result<Vec<Option<String>>, _>>()
    })
    .unwrap_or_else(|e| error(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, format!("reading the models: {e}")))
    .into_iter()
    .flatten()
    .collect();
    let configured = guc::model_settings(None, Provider::Cpu).model_dir;
    if !configured.as_os_str().is_empty() {
        match Manifest::load(&configured) {
            Ok(m) => towers.extend(m.files.tower_sha256s()),
            Err(e) => warning!("clip_search: the towers of clip.model_dir's model are not kept: {e}"),
        }
    }
    towers
}

/// One row per tower that was in the cache: removed, or kept and why.
fn report(before: Vec<CacheEntry>, removed: &[CacheEntry], why_kept: impl Fn(&CacheEntry) -> &'static str) -> Vec<CacheRow> {
    before
        .into_iter()
        .map(|e| {
            let action = if removed.iter().any(|r| r.path == e.path) { "removed" } else { why_kept(&e) };
            (e.path.display().to_string(), e.tower.clone(), e.bytes as f64 / 1e6, action.to_string())
        })
        .collect()
}

//! The models registered in this database (sql/models.sql): their names as the functions' `model` argument, and
//! how a name is looked up. A name stands for one exact set of files (its manifest's sha256), so that the embedding
//! functions stay IMMUTABLE whichever model they are given.
use std::ffi::CStr;
use std::path::PathBuf;

use clip_core::manifest::Manifest;
use pgrx::callconv::{Arg, ArgAbi};
use pgrx::datum::UnboxDatum;
use pgrx::prelude::*;
use pgrx::{pg_sys, FromDatum, JsonB};
use serde_json::json;

use crate::errors::{error, error_with_hint, OrRaise};

// The registry, after the watches (sql/watch.sql), whose columns it counts among the users of their models.
pgrx::extension_sql_file!("../sql/models.sql", name = "models", requires = ["watch"]);

/// The `model` argument of the functions: SQL's `name`, so that `model => 'x'` picks the model overloads, while a
/// second argument of type text stays the language of `clip_embed_text(text, text)`.
#[derive(Debug, Clone)]
pub struct ModelName(pub String);

pgrx::impl_sql_translatable!(ModelName, "name");

impl FromDatum for ModelName {
    unsafe fn from_polymorphic_datum(datum: pg_sys::Datum, is_null: bool, _typoid: pg_sys::Oid) -> Option<Self> {
        // SAFETY: a non-null `name` datum points to a NUL-terminated NameData of at most NAMEDATALEN bytes.
        (!is_null).then(|| unsafe {
            ModelName(CStr::from_ptr(datum.cast_mut_ptr::<std::ffi::c_char>()).to_string_lossy().into_owned())
        })
    }
}

// SAFETY: the datum is a non-null `name`; `from_datum` copies it out, so `As` borrows nothing.
unsafe impl UnboxDatum for ModelName {
    type As<'src> = ModelName;
    unsafe fn unbox<'src>(datum: pgrx::datum::Datum<'src>) -> Self::As<'src>
    where
        Self: 'src,
    {
        unsafe { ModelName::from_datum(datum.sans_lifetime(), false).expect("non-null name") }
    }
}

unsafe impl<'fcx> ArgAbi<'fcx> for ModelName {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        unsafe { arg.unbox_arg_using_from_datum().unwrap_or_else(|| panic!("argument {index} must not be NULL")) }
    }
}

/// A registered model: where its files are, and the sha256 of the manifest they were registered with.
pub struct Registered {
    pub name: String,
    pub directory: PathBuf,
    pub manifest_sha256: String,
}

/// The model registered as `name` in this database, or an error of `function` that says it is not.
pub fn lookup(function: &'static str, name: &str) -> Registered {
    // A read-only query, which parallel workers may run; the operator is named with its schema, as in every
    // statement of the extension.
    let found = Spi::connect(|client| {
        let rows = client.select(
            "SELECT directory, manifest_sha256 FROM clip_search_internal.models \
             WHERE name OPERATOR(pg_catalog.=) $1 AND unregistered_at IS NULL",
            Some(1),
            &[name.into()],
        )?;
        rows.into_iter()
            .next()
            .map(|row| Ok::<_, pgrx::spi::Error>((row.get::<String>(1)?, row.get::<String>(2)?)))
            .transpose()
    })
    .unwrap_or_else(|e| error(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, format!("{function}: reading the models: {e}")));
    match found {
        Some((Some(directory), Some(manifest_sha256))) => {
            Registered { name: name.to_owned(), directory: PathBuf::from(directory), manifest_sha256 }
        }
        _ => error_with_hint(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("{function}: model \"{name}\" is not registered in this database"),
            "clip_models lists the registered models; a superuser registers one with \
             clip_register_model(name, directory).",
        ),
    }
}

/// clip_search_internal.read_manifest(directory), declared in sql/models.sql: what clip_register_model records of
/// the model in `directory`, after checking every file against the manifest. Superuser only: it reads files.
#[pg_extern(sql = false)]
fn read_manifest(directory: &str) -> JsonB {
    const F: &str = "clip_register_model";
    require_superuser(F);
    let dir = PathBuf::from(directory);
    let manifest = Manifest::load(&dir).or_raise(F);
    manifest.verify_files(&dir).or_raise(F);
    JsonB(json!({
        "sha256": manifest.sha256,
        "architecture": manifest.name,
        "weights": manifest.weights,
        "embed_dim": manifest.embed_dim,
        "tower_sha256": manifest.files.tower_sha256s(),
    }))
}

/// An error of `function` unless the current role is a superuser: for the functions that read or remove files of
/// the server.
pub fn require_superuser(function: &str) {
    // SAFETY: reads the current user's rights from the catalog cache.
    if !unsafe { pg_sys::superuser() } {
        error(PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE, format!("{function}: must be superuser"));
    }
}
